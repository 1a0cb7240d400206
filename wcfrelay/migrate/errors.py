"""Errors of the migration tool: every problem names the file, the line and the element.

Problems are collected, not raised one at a time, so a user fixes a broken ``app.config`` in one pass. Attribute
values that may be secrets (keys, connection strings) never appear in a message.
"""

from __future__ import annotations

from dataclasses import dataclass

from hybrid.errors import ConfigError

__all__ = ["MigrationError", "Problem", "Problems", "describe"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input: where (file, line, element) and what."""

    source: str
    line: int | None
    element: str
    message: str

    def __str__(self) -> str:
        where = self.source
        if self.line:
            where += f": line {self.line}"
        if self.element:
            where += f": {self.element}"
        return f"{where}: {self.message}"


class MigrationError(ConfigError):
    """A WCF configuration cannot be migrated. ``problems`` holds each problem; ``str()`` is one line each."""

    code = "MigrationError"

    def __init__(self, problems: list[Problem] | Problem | str) -> None:
        if isinstance(problems, str):
            problems = [Problem("", None, "", problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @property
    def lines(self) -> list[int]:
        """The line numbers named, in order (for tests and tools)."""
        return [p.line for p in self.problems if p.line]


class Problems:
    """Collects problems; :meth:`raise_if_any` raises them together as one :class:`MigrationError`."""

    def __init__(self) -> None:
        self.items: list[Problem] = []

    def add(self, source: str, line: int | None, element: str, message: str) -> None:
        self.items.append(Problem(source, line, element, message))

    def at(self, el: object, message: str) -> None:
        """A problem located at an lxml element (its file, ``sourceline`` and a short description)."""
        self.items.append(Problem(source_of(el), getattr(el, "sourceline", None), describe(el), message))

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise MigrationError(self.items)


#: attributes that identify an element in a message; values of any other attribute are never shown
_IDENTIFYING = ("name", "keyName", "issuerName", "key", "binding", "contract", "kind")


def local_name(el: object) -> str:
    tag = getattr(el, "tag", "")
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1]


def source_of(el: object) -> str:
    try:
        url = el.getroottree().docinfo.URL  # type: ignore[attr-defined]
    except AttributeError:
        return ""
    return url or ""


def describe(el: object) -> str:
    """``<endpoint name="calc">``: the tag and one identifying attribute, never a secret."""
    name = local_name(el)
    if not name:
        return ""
    attrib = getattr(el, "attrib", {})
    for attr in _IDENTIFYING:
        if attr == "key" and name != "add":  # a SAS key elsewhere; on <add> it is the setting's name
            continue
        value = attrib.get(attr)
        if value:
            shown = value if len(value) <= 80 else value[:77] + "..."
            shown = "".join(c if c.isprintable() else "?" for c in shown)
            return f'<{name} {attr}="{shown}">'
    return f"<{name}>"
