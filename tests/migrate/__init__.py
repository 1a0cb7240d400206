"""Tests of ``wcfrelay migrate``: WCF app.config/web.config → gateway.toml, host.toml, MIGRATION.md."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = Path(__file__).resolve().parent / "configs"
SAMPLE = ROOT / "samples" / "migration" / "app.config"
HOST_SCHEMA = json.loads((ROOT / "schemas" / "host-config.schema.json").read_text(encoding="utf-8"))


def config(name: str) -> Path:
    return CONFIGS / name


def line_of(path: Path, needle: str, occurrence: int = 1) -> int:
    """The 1-based line of the ``occurrence``-th line holding ``needle`` (so tests survive edits to the files)."""
    seen = 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if needle in line:
            seen += 1
            if seen == occurrence:
                return number
    raise AssertionError(f"{needle!r} not in {path}")


def keys_in(path: Path) -> list[str]:
    """Every SAS key / issuer secret / connection-string key written in an app.config."""
    text = path.read_text(encoding="utf-8")
    found = re.findall(r'<sharedAccessSignature[^>]*\skey="([^"]+)"', text) + re.findall(r'issuerSecret="([^"]+)"', text)
    found += re.findall(r"SharedAccessKey=([^;\"]+)", text)
    return found
