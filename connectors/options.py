"""A connector's options, declared once as a typed struct: one parser, one kind of error.

A connector declares its options as a subclass of ``Options`` (a frozen msgspec struct
that forbids unknown keys) and names it in its class::

    class GeneratorOptions(Options):
        events: Annotated[int, Meta(ge=0)] = 20_000_000
        keys: Annotated[int, Meta(ge=1)] = 10_000

    class GeneratorSource(Source):
        options_type = GeneratorOptions

``Source.open`` / ``Sink.open`` (and ``Sink.check_config`` at validate time) then
set ``self.options`` from the ``[[sources]]``/``[[sinks]]`` table, and every
problem is a ``ConfigError`` of one shape, naming the key path and the value::

    sources.events.keys=0 must be an integer >= 1
    sources.events: unknown option 'evnts' (did you mean 'events'?); options: events, keys, ...
    sinks.out.format='csv' must be one of 'jsonl', 'parquet'

Checks a type cannot express (a path that must exist, a power of two) raise
``invalid(where, key, value, "must be ...")`` for the same shape.

Runtime keys (``parallelism``, ``event_time``, ``retry``, ...: the engine's own, read
from the same table) and option names are separate namespaces: an ``Options`` class
may not declare a field named like a runtime key (``check_no_runtime_keys``), so a key
in a pipeline file always means one thing.
"""

from __future__ import annotations

import difflib
import typing
from typing import Any, ClassVar, TypeVar

import msgspec
import msgspec.inspect as mi

from engine.errors import ConfigError

OptionsT = TypeVar("OptionsT", bound="Options")


class Options(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base class of every connector's options (see the module docstring).

    ``renamed``: old option name -> new name. A key written under its old name
    (in older pipeline files) is read as the new one; errors name it as written.
    """

    renamed: ClassVar[dict[str, str]] = {}


class NoOptions(Options, frozen=True):
    """For a connector without options: any key is unknown."""


def parse_options(cls: type[OptionsT], options: dict[str, Any], where: str) -> OptionsT:
    """``options`` as a ``cls``; ``where`` (``sources.<name>``) starts every error."""
    data = dict(options)
    written: dict[str, str] = {}  # new name -> the old name the file used
    for old, new in cls.renamed.items():
        if old in data:
            if new in data:
                raise ConfigError(f"{where}: give {new!r} or its old name {old!r}, not both")
            data[new] = data.pop(old)
            written[new] = old
    try:
        return msgspec.convert(data, cls)
    except msgspec.ValidationError as exc:
        raise ConfigError(explain(cls, data, exc, where, written)) from None


def explain(
    cls: type[Options],
    options: dict[str, Any],
    exc: Exception,
    where: str,
    written: dict[str, str] | None = None,
) -> str:
    """One sentence for a msgspec error about ``options`` converted to ``cls``."""
    text = str(exc)
    reason, _, path = text.rpartition(" - at `")
    if not reason:
        reason, path = text, "$"
    fields = {f.encode_name: f for f in mi.type_info(cls).fields}  # type: ignore[attr-defined]
    if reason.startswith("Object contains unknown field `"):
        key = reason.removeprefix("Object contains unknown field `").rstrip("`")
        return unknown(where, key, list(fields))
    if reason.startswith("Object missing required field `"):
        key = reason.removeprefix("Object missing required field `").rstrip("`")
        return f"{where}.{key}=None: option {key!r} is required ({_expected(fields[key].type)})"
    key = path.rstrip("`").removeprefix("$.").split(".")[0].split("[")[0]
    sub = path.rstrip("`").removeprefix("$.")[len(key) :]
    if key in fields:
        name = (written or {}).get(key, key)
        if sub:  # inside a table or list option: name the inner key, keep msgspec's reason
            if sub.startswith("[...]"):
                sub = _bad_table_key(cls, key, options.get(key)) + sub[len("[...]") :]
            return f"{where}.{name}{sub}: {reason}"
        return invalid(where, name, options.get(key), f"must be {_expected(fields[key].type)}")
    return f"{where}: {reason}"


def _bad_table_key(cls: type[Options], key: str, table: Any) -> str:
    """``.<k>`` for the first entry of a table option whose value has the wrong type."""
    field = next(f for f in msgspec.structs.fields(cls) if f.encode_name == key)
    for member in (field.type, *typing.get_args(field.type)):
        if typing.get_origin(member) is dict and isinstance(table, dict):
            value_type = typing.get_args(member)[1]
            for k, v in table.items():
                try:
                    msgspec.convert(v, value_type)
                except msgspec.ValidationError:
                    return f".{k}"
    return "[...]"


def unknown(where: str, key: str, known: list[str]) -> str:
    near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    listed = ", ".join(known) if known else "none"
    return f"{where}: unknown option {key!r}{hint}; options: {listed}"


def invalid(where: str, key: str, value: Any, must: str) -> str:
    """``<where>.<key>=<value> must ...``: the shape of every option error."""
    return f"{where}.{key}={value!r} {must}"


def _expected(t: mi.Type) -> str:
    """What a value of type ``t`` must be, in words."""
    if isinstance(t, mi.UnionType):
        words = [_expected(m) for m in t.types if not isinstance(m, mi.NoneType)]
        return " or ".join(dict.fromkeys(words))
    if isinstance(t, mi.IntType):
        bounds = []
        if t.ge is not None:
            bounds.append(f">= {t.ge}")
        if t.gt is not None:
            bounds.append(f"> {t.gt}")
        if t.le is not None:
            bounds.append(f"<= {t.le}")
        if t.lt is not None:
            bounds.append(f"< {t.lt}")
        return "an integer" + (" " + " and ".join(bounds) if bounds else "")
    if isinstance(t, mi.FloatType):
        return "a number"
    if isinstance(t, mi.BoolType):
        return "true or false"
    if isinstance(t, mi.StrType):
        if t.min_length:
            return "a non-empty string"
        return "a string"
    if isinstance(t, mi.LiteralType):
        return "one of " + ", ".join(repr(v) for v in sorted(t.values, key=str))
    if isinstance(t, mi.DictType):
        return "a table"
    if isinstance(t, mi.ListType):
        return "a list"
    if isinstance(t, mi.AnyType):
        return "a value"
    return type(t).__name__.removesuffix("Type").lower()


def check_no_runtime_keys(cls: type[Options], runtime: frozenset[str], what: str) -> None:
    """Refuse an ``Options`` class that declares a runtime key's name (it would be swallowed)."""
    clash = sorted({f.encode_name for f in mi.type_info(cls).fields} & runtime)  # type: ignore[attr-defined]
    if clash:
        raise ConfigError(
            f"{what}: option(s) {clash} have the name of a runtime key; rename the option "
            "(runtime keys and connector options are separate namespaces)"
        )
