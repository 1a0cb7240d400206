"""The sans-I/O modules stay sans-I/O: no event loop and no network library, checked on the source with ``ast``.

Nothing from the project is imported here, so the check cannot be fooled (or broken) by import side effects. The
check follows the project-internal imports of each module (and the package ``__init__`` files an import runs), so a
pure module cannot reach an event loop through a helper either. The one exception: ``hybrid/protocol/frames.py`` may
import ``websockets.speedups`` (the C unmasking helper, no I/O) and nothing else from websockets.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "hybrid"
FORBIDDEN = ("asyncio", "aiohttp", "websockets")
#: (importing module, imported names it may use)
ALLOWED = {"hybrid.protocol.frames": {"websockets.speedups", "websockets.speedups.apply_mask"}}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_path(name: str, root: Path) -> Path | None:
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports_of(path: Path, root: Path = ROOT) -> list[tuple[str, int]]:
    """Absolute names of every module ``path`` imports (``from x import y`` yields ``x`` and ``x.y``)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.append((base, node.lineno))
            found.extend((f"{base}.{alias.name}", node.lineno) for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute)):
            func = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
            if func in ("__import__", "import_module") and node.args and isinstance(node.args[0], ast.Constant):
                found.append((str(node.args[0].value), node.lineno))
    return found


def is_forbidden(imported: str) -> bool:
    return any(imported == f or imported.startswith(f + ".") for f in FORBIDDEN)


def pure_modules(root: Path = ROOT) -> list[Path]:
    paths = sorted((root / PACKAGE / "protocol").glob("*.py")) + [root / PACKAGE / "auth.py"]
    return [p for p in paths if p.is_file()]


def violations(start: Path, root: Path = ROOT) -> list[str]:
    """Forbidden imports reachable from ``start`` through project-internal imports."""
    problems: list[str] = []
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        this = module_name(path, root)
        parts = this.split(".")
        for i in range(1, len(parts)):  # importing a.b.c runs a/__init__ and a/b/__init__ as well
            init = module_path(".".join(parts[:i]), root)
            if init is not None:
                todo.append(init)
        for imported, line in imports_of(path, root):
            if is_forbidden(imported):
                if imported not in ALLOWED.get(this, ()):
                    problems.append(f"{path.relative_to(root)}:{line} imports {imported}")
            elif imported == PACKAGE or imported.startswith(PACKAGE + "."):
                target = module_path(imported, root)
                if target is not None:
                    todo.append(target)
    return problems


# ---- the rule, on the real sources ----------------------------------------------------------------------------------

def test_the_pure_modules_are_all_found():
    names = {module_name(p, ROOT) for p in pure_modules()}
    assert {"hybrid.auth", "hybrid.protocol.frames", "hybrid.protocol.handshake", "hybrid.protocol.messages",
            "hybrid.protocol.urls"} <= names


def test_no_pure_module_imports_asyncio_aiohttp_or_websockets():
    problems = [problem for path in pure_modules() for problem in violations(path)]
    assert problems == []


def test_frames_imports_websockets_speedups_and_nothing_else_from_websockets():
    frames = ROOT / PACKAGE / "protocol" / "frames.py"
    from_websockets = {name for name, _ in imports_of(frames) if name.split(".")[0] == "websockets"}
    assert from_websockets <= ALLOWED["hybrid.protocol.frames"]


def test_relative_imports_resolve_to_project_modules():
    names = {name for name, _ in imports_of(ROOT / PACKAGE / "protocol" / "urls.py")}
    assert {"hybrid.errors", "hybrid.errors.BadRequest"} <= names
    names = {name for name, _ in imports_of(ROOT / PACKAGE / "auth.py")}
    assert "hybrid.errors" in names


# ---- the checker itself can fail ------------------------------------------------------------------------------------

def make_tree(root: Path, files: dict[str, str]) -> None:
    for rel, source in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")


def test_checker_flags_direct_imports(tmp_path):
    for source, flagged in [
        ("import asyncio\n", "asyncio"),
        ("import aiohttp.web as w\n", "aiohttp.web"),
        ("from websockets.asyncio.server import serve\n", "websockets.asyncio.server"),
        ("from websockets import speedups\n", "websockets"),
        ("def f():\n    import asyncio\n", "asyncio"),
        ("x = __import__('aiohttp')\n", "aiohttp"),
        ("import importlib\nm = importlib.import_module('asyncio')\n", "asyncio"),
    ]:
        make_tree(tmp_path, {"hybrid/__init__.py": "", "hybrid/protocol/__init__.py": "",
                             "hybrid/protocol/mod.py": source, "hybrid/auth.py": ""})
        problems = violations(tmp_path / "hybrid/protocol/mod.py", tmp_path)
        assert any(p.endswith("imports " + flagged) for p in problems), (source, problems)


def test_checker_flags_transitive_and_package_init_imports(tmp_path):
    make_tree(tmp_path, {
        "hybrid/__init__.py": "",
        "hybrid/protocol/__init__.py": "",
        "hybrid/helper.py": "import asyncio\n",
        "hybrid/protocol/mod.py": "from ..helper import thing\n",
        "hybrid/auth.py": "import json\n",
    })
    assert violations(tmp_path / "hybrid/protocol/mod.py", tmp_path) == ["hybrid/helper.py:1 imports asyncio"]
    assert violations(tmp_path / "hybrid/auth.py", tmp_path) == []
    (tmp_path / "hybrid/__init__.py").write_text("import aiohttp\n", encoding="utf-8")
    assert violations(tmp_path / "hybrid/auth.py", tmp_path) == ["hybrid/__init__.py:1 imports aiohttp"]


def test_checker_allows_speedups_only_in_frames(tmp_path):
    source = "from websockets.speedups import apply_mask\n"
    make_tree(tmp_path, {"hybrid/__init__.py": "", "hybrid/protocol/__init__.py": "",
                         "hybrid/protocol/frames.py": source, "hybrid/protocol/urls.py": source})
    assert violations(tmp_path / "hybrid/protocol/frames.py", tmp_path) == []
    assert violations(tmp_path / "hybrid/protocol/urls.py", tmp_path) != []
