"""Read an XML configuration file safely: no DTD, no entities, no network, bounded size.

A WCF ``app.config`` / ``web.config`` never needs a document type declaration, so one is refused outright (this also
rules out entity-expansion bombs and external entities). lxml's parser is hardened on top of that
(``resolve_entities=False, no_network=True, load_dtd=False``), in case a declaration hides in an encoding a byte scan
does not see. Errors name the file and the line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from lxml import etree

from .errors import MigrationError, Problem

__all__ = ["MAX_CONFIG_SIZE", "hardened_parser", "read_xml", "resolve_include"]

#: A configuration file is a few kilobytes; anything this large is a mistake or hostile.
MAX_CONFIG_SIZE = 8 * 1024 * 1024

_DOCTYPE = re.compile(rb"<!\s*DOCTYPE", re.IGNORECASE)
_ENTITY = re.compile(rb"<!\s*ENTITY", re.IGNORECASE)
#: how far back a start tag's first line is looked for (a start tag spanning more lines is reported where it ends)
_MAX_TAG_LINES = 200


def hardened_parser() -> etree.XMLParser:
    """A parser that never loads a DTD, never expands entities and never touches the network."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_blank_text=False,
    )


def _line_at(data: bytes, index: int) -> int:
    return data.count(b"\n", 0, index) + 1


def read_xml(path: str | os.PathLike[str], display: str | None = None) -> etree._Element:
    """The root element of the XML file at ``path``. ``display`` is the name used in messages (and returned by
    ``el.getroottree().docinfo.URL``); it defaults to the path as given. Raises :class:`MigrationError`."""
    shown = display or os.fspath(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_CONFIG_SIZE + 1)
    except FileNotFoundError:
        raise MigrationError(Problem(shown, None, "", "file not found")) from None
    except IsADirectoryError:
        raise MigrationError(Problem(shown, None, "", "is a directory, expected an app.config or web.config file")) \
            from None
    except OSError as exc:
        raise MigrationError(Problem(shown, None, "", f"cannot read file: {exc.strerror or exc}")) from None
    if len(data) > MAX_CONFIG_SIZE:
        raise MigrationError(Problem(shown, None, "", f"larger than {MAX_CONFIG_SIZE // (1024 * 1024)} MiB; "
                                                      "not a configuration file"))
    if not data.strip():
        raise MigrationError(Problem(shown, None, "", "the file is empty"))

    # Refuse a document type declaration before the parser sees it (UTF-8/ASCII; other encodings are caught below).
    match = _DOCTYPE.search(data) or _ENTITY.search(data)
    if match:
        raise MigrationError(Problem(shown, _line_at(data, match.start()), "<!DOCTYPE>",
                                     "document type declarations (DTDs and entities) are not allowed in a "
                                     "configuration file; remove it"))
    try:
        root = etree.fromstring(data, hardened_parser(), base_url=shown)
    except etree.XMLSyntaxError as exc:
        line = exc.lineno or (exc.position[0] if exc.position else None)
        message = (exc.msg or str(exc)).strip()
        # libxml2 repeats the position at the end of the message; the line is already in front.
        message = re.sub(r",?\s*line \d+, column \d+\s*$", "", message)
        raise MigrationError(Problem(shown, line, "", f"malformed XML: {message}")) from None
    if root is None:
        raise MigrationError(Problem(shown, None, "", "no XML document"))
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise MigrationError(Problem(shown, 1, "<!DOCTYPE>", "document type declarations (DTDs and entities) are not "
                                                            "allowed in a configuration file; remove it"))
    for node in root.iter(etree.Entity):
        raise MigrationError(Problem(shown, getattr(node, "sourceline", None), f"&{node.name};",
                                     "entity references are not allowed in a configuration file"))
    _start_lines(root, data, tree.docinfo.encoding)
    return root


def _start_lines(root: etree._Element, data: bytes, encoding: str | None) -> None:
    """Make every element's ``sourceline`` the line its start tag *begins* on.

    libxml2 records the line where a start tag ends, so an ``<endpoint`` whose attributes span three lines would be
    reported on the last of them. Attribute values cannot hold a raw ``<``, so the nearest ``<name`` at or before
    that line is where the element starts.
    """
    try:
        lines = data.decode(encoding or "utf-8", errors="replace").split("\n")
    except LookupError:
        return
    for el in root.iter(tag=etree.Element):
        line = el.sourceline
        if not line or line > len(lines):
            continue
        qname = (f"{el.prefix}:" if el.prefix else "") + etree.QName(el).localname
        opening = re.compile("<" + re.escape(qname) + r"(?=[\s/>]|$)")
        for candidate in range(line, max(0, line - _MAX_TAG_LINES), -1):
            if opening.search(lines[candidate - 1]):
                if candidate != line:
                    el.sourceline = candidate
                break


def resolve_include(base_file: str, reference: str) -> Path:
    """The file a ``configSource=`` attribute names, relative to ``base_file``'s folder (ValueError if it would
    leave that folder, as .NET refuses too)."""
    folder = Path(base_file).resolve().parent
    target = (folder / reference).resolve()
    if Path(reference).is_absolute() or (folder != target and folder not in target.parents):
        raise ValueError("must be a relative path inside the configuration file's folder")
    return target
