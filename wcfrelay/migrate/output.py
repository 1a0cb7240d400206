"""Write the three migration outputs into a folder, safely.

* Nothing is overwritten unless ``force``: every target is checked before the first file is written, and each file
  is put in place with ``link()``, which refuses to replace a file that appeared meanwhile.
* Each file is written to a temporary file in the same folder first (``mkstemp``: mode 0600), so a crash never leaves
  half a file. gateway.toml keeps mode 0600 (it holds the keys); the others get 0644.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import MigrationError, Problem
from .plan import MigrationPlan
from .render import render_gateway_toml, render_host_toml, render_report

__all__ = ["GATEWAY_FILE", "HOST_FILE", "REPORT_FILE", "Outputs", "write_outputs"]

GATEWAY_FILE = "gateway.toml"
HOST_FILE = "host.toml"
REPORT_FILE = "MIGRATION.md"


@dataclass(frozen=True)
class Outputs:
    gateway: Path
    host: Path
    report: Path


def _write(path: Path, text: str, mode: int, force: bool) -> None:
    folder = path.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise MigrationError(Problem(str(path), None, "", "already exists (it appeared while writing); "
                                                                  "use --force to overwrite")) from None
            except OSError:
                if path.exists():
                    raise MigrationError(Problem(str(path), None, "", "already exists; use --force to overwrite")) \
                        from None
                os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_outputs(plan: MigrationPlan, out_dir: str | os.PathLike[str], *, force: bool = False) -> Outputs:
    """Write gateway.toml (mode 0600), host.toml and MIGRATION.md into ``out_dir`` (created if needed)."""
    folder = Path(out_dir)
    outputs = Outputs(folder / GATEWAY_FILE, folder / HOST_FILE, folder / REPORT_FILE)
    if folder.exists() and not folder.is_dir():
        raise MigrationError(Problem(str(folder), None, "", "is not a folder"))
    if not force:
        existing = [p for p in (outputs.gateway, outputs.host, outputs.report) if p.exists() or p.is_symlink()]
        if existing:
            raise MigrationError([Problem(str(p), None, "", "already exists; use --force to overwrite")
                                  for p in existing])
    try:
        folder.mkdir(parents=True, exist_ok=True)
        texts = (render_gateway_toml(plan), render_host_toml(plan),
                 render_report(plan, gateway_file=GATEWAY_FILE, host_file=HOST_FILE))
        _write(outputs.gateway, texts[0], 0o600, force)
        _write(outputs.host, texts[1], 0o644, force)
        _write(outputs.report, texts[2], 0o644, force)
    except OSError as exc:
        raise MigrationError(Problem(str(folder), None, "", f"cannot write the outputs: {exc.strerror or exc}")) \
            from None
    return outputs
