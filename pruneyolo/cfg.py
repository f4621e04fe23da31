"""Darknet cfg text -> sections of typed options, each remembering the line it came from."""

from __future__ import annotations

import math
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CfgError

_REQUIRED = object()


@dataclass
class Entry:
    """One `key=value` line."""

    value: str
    line: int


@dataclass
class Section:
    """One `[name]` block: its name as written (lower-cased), its line, and its options in file order."""

    name: str
    line: int
    path: str
    entries: dict[str, Entry] = field(default_factory=dict)

    def options(self) -> Options:
        return Options(self)

    def set(self, key: str, value) -> None:
        """Set (or add) an option; used by tools that rewrite cfgs, such as pruning."""
        old = self.entries.get(key)
        self.entries[key] = Entry(_format_value(value), old.line if old else self.line)


def _format_value(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_format_value(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class Options:
    """Typed access to a section's values; remembers which keys were read so leftovers can be reported."""

    def __init__(self, section: Section):
        self.section = section
        self.used: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self.section.entries

    def error(self, message: str, key: str | None = None) -> CfgError:
        entry = self.section.entries.get(key) if key else None
        line = entry.line if entry else self.section.line
        return CfgError(self.section.path, line, f"[{self.section.name}] {message}")

    def _raw(self, key: str, default):
        self.used.add(key)
        entry = self.section.entries.get(key)
        if entry is None:
            if default is _REQUIRED:
                raise self.error(f"missing required option '{key}=': add it to the section")
            return None
        return entry.value

    def _convert(self, key: str, text: str, kind: type):
        try:
            value = kind(text)
        except ValueError:
            raise self.error(f"{key}={text!r} is not {'an integer' if kind is int else 'a number'}", key) from None
        if kind is float and not math.isfinite(value):
            raise self.error(f"{key}={text!r} is not a finite number", key)
        return value

    def str(self, key: str, default=_REQUIRED) -> str:
        raw = self._raw(key, default)
        return default if raw is None else raw

    def int(self, key: str, default=_REQUIRED) -> int:
        raw = self._raw(key, default)
        return default if raw is None else self._convert(key, raw, int)

    def float(self, key: str, default=_REQUIRED) -> float:
        raw = self._raw(key, default)
        return default if raw is None else self._convert(key, raw, float)

    def ints(self, key: str, default=_REQUIRED) -> list[int]:
        raw = self._raw(key, default)
        if raw is None:
            return default
        return [self._convert(key, part, int) for part in _split_list(raw)]

    def floats(self, key: str, default=_REQUIRED) -> list[float]:
        raw = self._raw(key, default)
        if raw is None:
            return default
        return [self._convert(key, part, float) for part in _split_list(raw)]

    def unused(self) -> list[str]:
        return [key for key in self.section.entries if key not in self.used]


def _split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_cfg_text(text: str, path: str = "<cfg>") -> list[Section]:
    """Split cfg text into sections; accepts CRLF, `key = value`, Python-list values and any case."""
    sections: list[Section] = []
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.split("#", 1)[0].strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise CfgError(path, number, f"malformed section header {line!r}: expected [name]")
            sections.append(Section(line[1:-1].strip().lower(), number, path))
            continue
        if "=" not in line:
            raise CfgError(path, number, f"{line!r} is not key=value: add '=' or comment it out with '#'")
        if not sections:
            raise CfgError(path, number, "option before the first [section]: the cfg must start with [net]")
        key, value = (part.strip() for part in line.split("=", 1))
        key = key.lower()
        if not key:
            raise CfgError(path, number, f"{line!r} has no key before '='")
        if value.startswith("[") and value.endswith("]"):
            value = value[1:-1].strip()
        sections[-1].entries[key] = Entry(value, number)
    return sections


def read_cfg(path: str | os.PathLike) -> list[Section]:
    """Read a cfg file; binary junk and undecodable bytes are a clean error."""
    path = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CfgError(path, 0, f"cannot read the cfg: {exc.strerror}") from None
    if b"\0" in data:
        raise CfgError(path, 1, "binary data, not a Darknet cfg text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CfgError(path, line, "bytes that are not UTF-8 text: is this really a .cfg?") from None
    return parse_cfg_text(text.lstrip("\ufeff"), path)


def format_cfg(sections: list[Section]) -> str:
    """Render sections back to cfg text (one blank line between sections)."""
    blocks = []
    for section in sections:
        lines = [f"[{section.name}]"] + [f"{key}={entry.value}" for key, entry in section.entries.items()]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _create_sibling(path: Path) -> tuple[int, Path]:
    """A new temporary file beside `path`, open for writing, mode 0666 less the umask (mkstemp would give 0600)."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write a file via a temporary sibling and rename, so a failure never leaves half a file.

    The file gets the mode open() would give it: an existing file's own, else 0666 less the umask.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    mode = stat.S_IMODE(path.stat().st_mode) if path.is_file() else None
    fd, tmp = _create_sibling(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            handle.write(payload)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
