"""wcfrelay.compat: spyne 2.14 importable on 3.11, 3.12 and 3.13; a no-op on 3.11.

The fresh-interpreter checks run in a subprocess of the interpreter running the tests, so running this
file under 3.12 and 3.13 (see .ci/py313-setup.sh) exercises the real fix there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hybrid.errors import RelayError
from wcfrelay import compat

ROOT = Path(__file__).resolve().parents[2]
PY312 = sys.version_info >= (3, 12)
PY313 = sys.version_info >= (3, 13)


def run_fresh(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new interpreter (nothing imported yet) with the project importable."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def test_version_predicates() -> None:
    assert not compat.needs_six_fix((3, 11, 7))
    assert compat.needs_six_fix((3, 12, 1)) and compat.needs_six_fix((3, 13, 0))
    assert not compat.needs_cgi_module((3, 12, 1))
    assert compat.needs_cgi_module((3, 13, 0))
    assert compat.needs_six_fix() is PY312
    assert compat.needs_cgi_module() is PY313


def test_spyne_unavailable_is_a_relay_error_and_an_import_error() -> None:
    assert issubclass(compat.SpyneUnavailable, RelayError)
    assert issubclass(compat.SpyneUnavailable, ImportError)


@pytest.mark.skipif(PY312, reason="the no-op only applies to 3.11")
def test_nothing_is_installed_on_311() -> None:
    compat.ensure_spyne_importable()
    assert not any(isinstance(f, compat.VendoredSixMovesFinder) for f in sys.meta_path)


@pytest.mark.skipif(not PY312, reason="the finder is only installed on 3.12+")
def test_finder_is_installed_once() -> None:
    compat.ensure_spyne_importable()
    compat.ensure_spyne_importable()
    assert sum(isinstance(f, compat.VendoredSixMovesFinder) for f in sys.meta_path) == 1


def test_finder_only_answers_for_the_vendored_moves() -> None:
    compat.import_spyne()
    finder = compat.VendoredSixMovesFinder()
    assert finder.find_spec("json", None) is None
    assert finder.find_spec("six.moves", None) is None
    assert finder.find_spec("spyne.util.six.moves.no_such_move", None) is None
    spec = finder.find_spec("spyne.util.six.moves.collections_abc", None)
    assert spec is not None and spec.name == "spyne.util.six.moves.collections_abc"


def test_import_spyne_returns_the_package() -> None:
    spyne = compat.import_spyne()
    assert spyne.__version__ == "2.14.0"


def test_fresh_interpreter_imports_spyne_and_its_six_moves() -> None:
    proc = run_fresh(
        """
        from wcfrelay.compat import import_spyne
        spyne = import_spyne()
        from spyne.util.six.moves.collections_abc import MutableSet, Iterable
        from spyne.util.six.moves.urllib.parse import quote, unquote
        from spyne.util.six.moves.http_cookies import SimpleCookie
        import collections.abc, http.cookies
        assert MutableSet is collections.abc.MutableSet and SimpleCookie is http.cookies.SimpleCookie
        # the real modules keep their own __spec__ (the import system would otherwise overwrite it)
        assert not collections.abc.__spec__.name.startswith("spyne"), collections.abc.__spec__
        assert http.cookies.__spec__.name == "http.cookies", http.cookies.__spec__
        import spyne.server.wsgi, spyne.protocol.soap, spyne.protocol.http, spyne.protocol.json
        print("ok", spyne.__version__)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ok", "2.14.0"]


def test_fresh_interpreter_imports_our_spyne_modules_first_thing() -> None:
    proc = run_fresh(
        """
        import wcfrelay.service.spyne_app
        import samples.calculator.service
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr


def test_bare_import_behaviour_matches_what_the_measure_is_for() -> None:
    proc = run_fresh("import spyne")
    if PY312:
        # spyne 2.14.0 unpatched: if this starts passing, a fixed spyne was released and the finder can go.
        assert proc.returncode != 0
        assert "spyne.util.six.moves" in proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(not PY313, reason="cgi is in the stdlib before 3.13")
def test_missing_cgi_is_reported_clearly_on_313() -> None:
    proc = run_fresh(
        """
        import sys
        sys.modules["cgi"] = None  # what an install without legacy-cgi looks like to the import system
        try:
            import wcfrelay.compat
        except ImportError as exc:
            print(type(exc).__name__, exc)
        """
    )
    assert proc.stdout.startswith("SpyneUnavailable"), proc.stdout + proc.stderr
    assert "legacy-cgi" in proc.stdout


@pytest.mark.skipif(not PY313, reason="cgi is in the stdlib before 3.13")
def test_legacy_cgi_provides_what_spyne_uses_on_313() -> None:
    import cgi

    assert cgi.parse_header("text/xml; charset=utf-8") == ("text/xml", {"charset": "utf-8"})
