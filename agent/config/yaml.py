"""Config files as text: YAML -> plain data, with the position of every key and value kept.

This module owns reading one config file (agent.yaml, a devices.d file, a profile) safely:
bytes that are not UTF-8 text, NUL bytes, YAML syntax errors, tabs, Python tags, dates and
duplicate keys all become a `ConfigError` located as file:line:col, never a traceback. Only a
regular file (or a link to one) of at most `MAX_FILE_BYTES` is read, within `READ_DEADLINE`: a
FIFO, a device such as /dev/zero or a huge file is refused before it can hang or fill memory
(`check`, `run` and a reload alike). It turns
ruamel's round-trip tree into plain dicts/lists/scalars (`Converter`), remembering where each
key and value was, and substitutes `${VAR}` from the environment in text values (`$${` keeps a
literal `${`); the substituted values are remembered so error messages show `${VAR}`, never the
value (which may be a secret).
"""

from __future__ import annotations

import codecs
import datetime
import os
import re
import stat
import time
import warnings
from collections.abc import Mapping
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedOrderedMap, CommentedSet, TaggedScalar
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.reader import ReaderError
from ruamel.yaml.scalarbool import ScalarBoolean

from agent.core.errors import ConfigError, ConfigIssue

Loc = tuple[str | int, ...]
"""Where a value is in the data: keys and list indices, e.g. ("devices", 0, "unit")."""
Pos = tuple[int, int]
"""1-based (line, col); an `At` when it is in another file than the main config."""
Issue = tuple[Pos, str]

MAX_FILE_BYTES = 1_000_000
"""Largest config file read (each file): a device file is a few kB; parsing 1 MB of YAML takes
several seconds on a gateway, and a bigger one is a mistake (a log or a dump saved as .yaml)."""
READ_DEADLINE = 5.0
"""Seconds reading one file's bytes may take (a stalled network or USB mount)."""
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))

_CORE = "tag:yaml.org,2002:"
_ENV = re.compile(r"\$\$\{|\$\{([^}]*)\}?")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class At(tuple[int, int]):
    """A position in another file than the config itself (a devices.d file, a profile)."""

    file: str


def at(file: str | None, pos: Pos | None) -> Pos | None:
    """`pos` marked as being in `file` (None: the main config file)."""
    if file is None or pos is None:
        return pos
    marked = At(pos)
    marked.file = file
    return marked


def file_of(pos: Pos, main: str) -> str:
    return getattr(pos, "file", main)


def issue(pos: Pos, message: str, main: str) -> ConfigIssue:
    return ConfigIssue(file_of(pos, main), pos[0], pos[1], message)


def read_yaml(file: str) -> Any:
    """The file's YAML document as ruamel's round-trip tree (no Python objects are built);
    None for an empty file. Raises ConfigError located in `file`."""

    def fail(pos: Pos, message: str) -> ConfigError:
        return ConfigError([ConfigIssue(file, pos[0], pos[1], message)])

    try:
        blob = read_bounded(file).removeprefix(codecs.BOM_UTF8)
    except OSError as exc:
        why = {FileNotFoundError: "no such file", IsADirectoryError: "it is a directory",
               PermissionError: "permission denied"}.get(type(exc), exc.strerror or str(exc))
        raise fail((1, 1), f"cannot read the config: {why}") from None
    except ValueError as exc:  # a NUL byte in the path, not a regular file, too big, too slow
        raise fail((1, 1), f"cannot read the config: {exc}") from None
    if b"\x00" in blob:
        raise fail(_pos_at(blob, blob.index(b"\x00")),
                   "the file contains a NUL byte: it looks binary, not YAML text")
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(_pos_at(blob, exc.start), f"the file is not UTF-8 text (byte "
                   f"0x{blob[exc.start]:02x}); save it as UTF-8") from None
    try:
        with warnings.catch_warnings():  # e.g. a reused anchor: legal YAML, not worth a warning
            warnings.simplefilter("ignore")
            return YAML(typ="rt").load(text)
    except ReaderError as exc:
        where, ch = _pos_at(blob, len(text[: exc.position].encode())), exc.character
        code = ch if isinstance(ch, int) else ord(str(ch)[:1] or " ")
        raise fail(where, f"invalid YAML: character U+{code:04X} is not allowed") from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        raise fail(where, _yaml_message(exc, text, where[0])) from None
    except RecursionError:
        raise fail((1, 1), "invalid YAML: nested too deeply") from None
    except Exception as exc:  # YAMLError, or a parser bug on hostile input: still a ConfigError
        raise fail((1, 1), f"invalid YAML: {exc}") from None


def read_bounded(file: str, limit: int = MAX_FILE_BYTES, deadline: float = READ_DEADLINE
                 ) -> bytes:
    """The bytes of `file` if it is a regular file (or a link to one) of at most `limit` bytes,
    read within `deadline` seconds; ValueError (saying which) otherwise, OSError as raised.

    Opened non-blocking, so a FIFO with no writer cannot hang the open; a file that grows
    while it is read is cut at `limit` + 1 bytes and refused."""
    fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = next((k for test, k in _KINDS if test(st.st_mode)), "not a regular file")
            raise ValueError(f"it is {kind}, not a regular file")
        if st.st_size > limit:
            raise ValueError(f"the file is {st.st_size:,} bytes; a config file may have at "
                             f"most {limit:,}")
        chunks: list[bytes] = []
        size, until = 0, time.monotonic() + deadline
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise ValueError(f"the file grew past {limit:,} bytes while it was read")
            if time.monotonic() > until:
                raise ValueError(f"reading it took longer than {deadline:g} s")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _yaml_message(exc: MarkedYAMLError, text: str, line: int) -> str:
    problem = str(exc.problem or "syntax error")
    if found := re.match(r'found duplicate key "(.*)" with value', problem):
        return f"duplicate key '{found.group(1)}'; a key may appear only once in a mapping"
    msg = f"invalid YAML: {problem}" + (f" ({exc.context})" if exc.context else "")
    lines = text.splitlines()
    here = lines[line - 1] if line <= len(lines) else ""
    if "\\t" in problem or "\t" in here[: len(here) - len(here.lstrip())]:
        msg += "; hint: tabs are not allowed for indentation; use spaces"
    elif "${" in here:
        msg += "; hint: inside { } or [ ], put a value with ${VAR} in quotes: \"${VAR}\""
    return msg


def _pos_at(blob: bytes, index: int) -> Pos:
    start = blob.rfind(b"\n", 0, index) + 1
    return blob.count(b"\n", 0, index) + 1, len(blob[start:index].decode("utf-8", "replace")) + 1


def _lc(node: Any, attr: str = "", arg: object = None) -> Pos | None:
    """1-based position from ruamel's line/col data: of the node, or of a key/value/item."""
    try:
        found = getattr(node.lc, attr)(arg) if attr else (node.lc.line, node.lc.col)
    except (AttributeError, KeyError, IndexError, TypeError):
        return None
    ok = isinstance(found, tuple) and all(isinstance(n, int) for n in found[:2])
    return (found[0] + 1, found[1] + 1) if ok else None


def node_pos(node: Any) -> Pos | None:
    return _lc(node)


def dotted(loc: Loc) -> str:
    """("devices", 0, "unit") -> "devices[0].unit"."""
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    return text or "top level"


class Converter:
    """ruamel trees -> plain dict/list/scalars, remembering where each key and value was.

    One converter may read several files (set `file` before each; None = the main file): the
    positions it keeps then carry their file.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.value_pos: dict[Loc, Pos] = {}
        self.key_pos: dict[Loc, Pos] = {}
        self.issues: list[Issue] = []
        self.bad: list[Loc] = []  # refused values: pydantic's errors about them are noise
        self.substituted: dict[Loc, str] = {}  # values that came from ${VAR}: as written
        self.secrets: set[str] = set()  # those values, never to be shown
        self.budget = 200_000  # nodes, aliases expanded
        self.file: str | None = None
        self._env = env

    def _refuse(self, loc: Loc, pos: Pos, what: str) -> None:
        self.issues.append((pos, f"{dotted(loc)}: {what}"))
        self.bad.append(loc)

    def convert(self, node: Any, loc: Loc, pos: Pos, depth: int = 0) -> Any:
        self.value_pos[loc] = pos
        self.budget -= 1
        tag = getattr(getattr(node, "tag", None), "value", None)
        if self.budget < 0 or depth > 64:
            if self.budget == -1 or depth == 65:
                self._refuse(loc, pos, "too large or nested too deeply (aliases expanded)")
        elif isinstance(node, TaggedScalar) and tag == f"{_CORE}str":
            return self._text(str(node.value), loc, pos)
        elif isinstance(tag, str) and tag not in (f"{_CORE}map", f"{_CORE}seq"):
            self._refuse(loc, pos, f"YAML tag {tag.replace(_CORE, '!!')} is not allowed; "
                                   "write plain values")
        elif isinstance(node, CommentedOrderedMap | CommentedSet | bytes):
            self._refuse(loc, pos, f"YAML type {type(node).__name__} is not allowed here")
        elif isinstance(node, dict):
            return self._mapping(node, loc, pos, depth)
        elif isinstance(node, list):
            return [self.convert(v, (*loc, i), at(self.file, _lc(node, "item", i)) or pos,
                                 depth + 1)
                    for i, v in enumerate(node)]
        elif isinstance(node, datetime.date):
            self._refuse(loc, pos, f"YAML read {node} as a date/time; quote it if you mean text")
        elif node is None or isinstance(node, bool | ScalarBoolean):
            return None if node is None else bool(node)
        elif isinstance(node, str):
            return self._text(str(node), loc, pos)
        elif isinstance(node, int | float):  # ruamel's Scalar* subclasses -> plain types
            return int(node) if isinstance(node, int) else float(node)
        else:
            self._refuse(loc, pos, f"unsupported YAML value {node!r}")
        return None

    def _mapping(self, node: dict[Any, Any], loc: Loc, pos: Pos, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in node.items():
            kpos = at(self.file, _lc(node, "key", key)) or pos  # `<<` merged keys: no position
            if isinstance(key, int):  # value maps: {0: stopped, 1: running}; bool is int
                key = str(int(key))
            if not isinstance(key, str):
                self.issues.append((kpos, f"{dotted(loc)}: key {key!r} must be text"))
                continue
            self.key_pos[(*loc, key)] = kpos
            vpos = (None if value is None else at(self.file, _lc(node, "value", key))) or kpos
            out[key] = self.convert(value, (*loc, key), vpos, depth + 1)
        return out

    def _text(self, text: str, loc: Loc, pos: Pos) -> str | None:
        """`${VAR}` replaced from the environment; a missing variable is an issue."""
        if "$" not in text:
            return text
        env = os.environ if self._env is None else self._env
        missing: list[str] = []

        def value(m: re.Match[str]) -> str:
            if m.group(0) == "$${":
                return "${"
            name = m.group(1)
            if not m.group(0).endswith("}") or name is None or not _ENV_NAME.match(name):
                missing.append(f"'{m.group(0)}' is not a valid variable reference; write "
                               "${NAME} (letters, digits, '_'), or $${ for a literal ${")
                return ""
            if name not in env:
                missing.append(f"environment variable {name} is not set (used as ${{{name}}})")
                return ""
            return env[name]

        out = _ENV.sub(value, text)
        if missing:
            self._refuse(loc, pos, "; ".join(missing))
            return None
        if out != text.replace("$${", "${"):
            self.substituted[loc] = text
            self.secrets.add(out)
        return out
