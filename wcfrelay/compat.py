"""Make ``import spyne`` (2.14.0, the latest release) work on Python 3.12 and 3.13.

Two independent breakages, each fixed upstream but unreleased:

* 3.12+: spyne vendors six 1.14, whose ``spyne.util.six.moves`` importer only implements the
  PEP 302 ``find_module``/``load_module`` protocol that Python 3.12 stopped calling
  (arskom/spyne#700, #708). We put a small PEP 451 finder in front of ``sys.meta_path`` that
  answers for exactly the names that vendored importer knows and delegates the loading to it.
  Aliasing to the real ``six`` is not enough: the vendored copy defines moves (``collections_abc``)
  that the real one lacks.
* 3.13+: the stdlib ``cgi`` module is gone (PEP 594, arskom/spyne#712). Spyne only needs
  ``cgi.parse_header``; the ``legacy-cgi`` distribution (a declared dependency for 3.13) provides
  the module. We check for it and fail with a clear message instead of a bare ImportError deep
  inside spyne.

On 3.11 nothing is installed: :func:`ensure_spyne_importable` is a no-op there.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from hybrid.errors import RelayError

__all__ = [
    "SpyneUnavailable",
    "VendoredSixMovesFinder",
    "ensure_spyne_importable",
    "import_spyne",
    "needs_cgi_module",
    "needs_six_fix",
]

#: the vendored six inside spyne; its moves live under ``<name>.moves``
SIX_MODULE = "spyne.util.six"
_MOVES_PREFIX = SIX_MODULE + ".moves"


class SpyneUnavailable(RelayError, ImportError):
    """Spyne cannot be imported on this interpreter."""

    code = "SpyneUnavailable"


def needs_six_fix(version: tuple[int, ...] | None = None) -> bool:
    """True when the interpreter no longer calls ``find_module`` on meta path finders (3.12+)."""
    return (version or sys.version_info)[:2] >= (3, 12)


def needs_cgi_module(version: tuple[int, ...] | None = None) -> bool:
    """True when the stdlib no longer ships ``cgi`` (3.13+)."""
    return (version or sys.version_info)[:2] >= (3, 13)


class _SixMovesLoader(importlib.abc.Loader):
    """Adapts one vendored-six ``load_module`` call to the ``create_module``/``exec_module`` protocol."""

    def __init__(self, importer: Any) -> None:
        self._importer = importer
        self._original_spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = self._importer.load_module(spec.name)
        # A move such as ``moves.collections_abc`` resolves to the real ``collections.abc``;
        # the import system is about to overwrite its __spec__ with ours, so remember the original.
        self._original_spec = getattr(module, "__spec__", None)
        return module

    def exec_module(self, module: ModuleType) -> None:
        # load_module already produced a finished module; only undo the __spec__ hijack.
        if self._original_spec is not None:
            module.__spec__ = self._original_spec


class VendoredSixMovesFinder(importlib.abc.MetaPathFinder):
    """Finds ``spyne.util.six.moves*`` by asking the vendored six importer what it knows."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _MOVES_PREFIX and not fullname.startswith(_MOVES_PREFIX + "."):
            return None
        # The parent package is always imported before its submodules, so six is loaded by now.
        importer = getattr(sys.modules.get(SIX_MODULE), "_importer", None)
        if importer is None or fullname not in getattr(importer, "known_modules", {}):
            return None
        if callable(getattr(importer, "find_spec", None)):
            return None  # a fixed spyne release answers on its own
        return importlib.util.spec_from_loader(
            fullname, _SixMovesLoader(importer), is_package=importer.is_package(fullname)
        )


def _installed_finder() -> VendoredSixMovesFinder | None:
    for finder in sys.meta_path:
        if isinstance(finder, VendoredSixMovesFinder):
            return finder
    return None


def ensure_spyne_importable() -> None:
    """Install what this interpreter needs before spyne is imported; idempotent, no-op on 3.11.

    Raises :class:`SpyneUnavailable` on 3.13+ when no ``cgi`` module can be found.
    """
    if needs_six_fix() and _installed_finder() is None:
        # In front: the vendored importer appends itself and would never be asked anyway.
        sys.meta_path.insert(0, VendoredSixMovesFinder())
    # find_spec also reports None for a module blocked with sys.modules["cgi"] = None.
    if needs_cgi_module() and sys.modules.get("cgi") is None and importlib.util.find_spec("cgi") is None:
        raise SpyneUnavailable(
            f"Python {sys.version_info[0]}.{sys.version_info[1]} has no 'cgi' module, which spyne 2.14 imports; "
            "install the 'legacy-cgi' package (pip install legacy-cgi)"
        )


def import_spyne() -> ModuleType:
    """Apply :func:`ensure_spyne_importable` and return the imported ``spyne`` package."""
    ensure_spyne_importable()
    try:
        return importlib.import_module("spyne")
    except ImportError as exc:
        raise SpyneUnavailable(f"spyne failed to import on Python {sys.version.split()[0]}: {exc}") from exc


# Importing this module is the measure: any code that imports it before spyne gets a working spyne.
ensure_spyne_importable()
