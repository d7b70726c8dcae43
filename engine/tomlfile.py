"""Reading a TOML config file and turning msgspec's complaints into ConfigErrors.

The pipeline file, the topology file and every connector's options go through
here, so every config error has one shape: ``<file>: <key.path>: <reason>``.
Reasons say what would be right: an unknown key suggests the nearest known one
("did you mean `event_time`?"), a bad enum value lists the valid ones, a value
of the wrong type says which type was expected.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi

from engine.errors import ConfigError

_UNKNOWN = re.compile(r"Object contains unknown field `(.+)`")
_ENUM = re.compile(r"Invalid (?:enum )?value ")
_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def read(path: Path, what: str) -> dict[str, Any]:
    """The TOML document at ``path``; ``what`` names the file's role in errors."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: line {line}: not UTF-8 (byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start}); a TOML file must be UTF-8"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def key_reason(
    exc: msgspec.ValidationError,
    rename: dict[str, str] | None = None,
    root: type | None = None,
    data: Any = None,
) -> str:
    """msgspec says 'reason - at `$.a[0].b`'; we say 'a[0].b: reason' (keys renamed as asked).

    With ``root`` (the struct type converted to) and ``data`` (what was converted),
    the reason also says what would be right: the nearest known key, the valid values.
    """
    key, reason, parts = _split(exc)
    unknown = _UNKNOWN.fullmatch(reason)
    if unknown:
        bad = unknown.group(1)
        key, reason = ".".join(filter(None, [key, bad])), "unknown key"
        if root is not None:
            known = _fields(_walk(mi.type_info(root), parts, data))
            near = difflib.get_close_matches(bad, known, n=1, cutoff=0.6)
            if near:
                reason += f" (did you mean `{near[0]}`?)"
    elif root is not None and _ENUM.match(reason):
        valid = _values(root, parts, data)
        if valid:
            reason += f" (valid: {', '.join(repr(v) for v in valid)})"
    key = (rename or {}).get(key, key)
    return f"{key or '(top level)'}: {reason}"


def _split(exc: msgspec.ValidationError) -> tuple[str, str, list[str | int]]:
    msg = str(exc)
    reason, sep, where = msg.rpartition(" - at `")
    if not sep:
        reason, where = msg, "$"
    key = where.rstrip("`").removeprefix("$").lstrip(".")
    parts: list[str | int] = [
        m.group(1) if m.group(1) is not None else int(m.group(2))
        for m in _PART.finditer(where.rstrip("`").removeprefix("$"))
    ]
    return key, reason, parts


def _walk(t: mi.Type, parts: list[str | int], data: Any) -> mi.Type | None:
    """The type info at the path ``parts`` (the struct a bad key is in, or the bad value's)."""
    for part in parts:
        t = _pick(t, data)
        if isinstance(part, int):
            t = getattr(t, "item_type", None)
            data = data[part] if isinstance(data, list) and part < len(data) else None
        elif isinstance(t, mi.StructType):
            field = next((f for f in t.fields if f.encode_name == part), None)
            if field is None:
                return None
            t = field.type
            data = data.get(part) if isinstance(data, dict) else None
        elif isinstance(t, mi.DictType):
            t = t.value_type
            data = data.get(part) if isinstance(data, dict) else None
        else:
            return None
        if t is None:
            return None
    return _pick(t, data)


def _pick(t: mi.Type | None, data: Any) -> mi.Type | None:
    """One member of a union: the tagged struct ``data`` names, else the only struct."""
    if isinstance(t, mi.UnionType):
        structs = [m for m in t.types if isinstance(m, mi.StructType)]
        for s in structs:
            if s.tag_field and isinstance(data, dict) and data.get(s.tag_field) == s.tag:
                return s
        if len(structs) == 1:
            return structs[0]
    return t


def _fields(t: mi.Type | None) -> list[str]:
    if isinstance(t, mi.StructType):
        return [f.encode_name for f in t.fields]
    return []


def _values(root: type, parts: list[str | int], data: Any) -> list[Any]:
    """The valid values of a Literal field, or the tags of a tagged union's members."""
    t = _walk(mi.type_info(root), parts, data)
    if isinstance(t, mi.LiteralType):
        return sorted(t.values, key=str)
    if parts and isinstance(parts[-1], str):  # a bad tag: the union is one level up
        up = _walk(mi.type_info(root), parts[:-1], data)
        if isinstance(up, mi.UnionType):
            return [
                m.tag
                for m in up.types
                if isinstance(m, mi.StructType) and m.tag_field == parts[-1]
            ]
    return []
