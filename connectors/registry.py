"""Connector types by name: built-ins, installed plugins, or a dotted class path.

A pipeline's ``type = "..."`` is resolved, in this order:

1. a built-in name (``SOURCES`` for sources, ``SINKS`` for sinks);
2. a name registered by an installed package in the entry-point group
   ``"ringstream.connectors"`` (``importlib.metadata.entry_points``), e.g. in
   its ``pyproject.toml``::

       [project.entry-points."ringstream.connectors"]
       my_source = "my_package.source:MySource"

3. a dotted path ``"package.module:Class"`` or ``"package.module.Class"``.

Resolution is lazy: a module is imported only when its name is resolved, so a
connector whose module (or driver) is missing fails only when a pipeline
uses it. A built-in name shadows an entry point of the same name.

Errors: an unknown name raises ``ConnectorNotFoundError`` listing the known
names; a name whose module cannot be imported raises it too (the import error
is chained); a class that is not a ``Source`` (``resolve_source``) or
``Sink`` (``resolve_sink``) raises ``ConfigError``.
"""

from __future__ import annotations

import importlib.metadata
from typing import Literal, TypeVar

from connectors.base import Sink, Source
from connectors.options import check_no_runtime_keys
from engine.errors import ConfigError, ConnectorNotFoundError
from engine.importing import load_object
from engine.pipeline import SINK_RUNTIME_KEYS, SOURCE_RUNTIME_KEYS

GROUP = "ringstream.connectors"

SOURCES: dict[str, str] = {
    "generator": "connectors.generator:GeneratorSource",
    "nexmark": "connectors.nexmark:NexmarkSource",
    "files": "connectors.files.source:FilesSource",
    "scripted": "connectors.testing.scripted:ScriptedSource",
    "push": "connectors.push:PushSource",
    "postgres_cdc": "connectors.postgres.cdc:PostgresCdcSource",
    "kafka": "connectors.kafka.source:KafkaSource",
}
SINKS: dict[str, str] = {
    "console": "connectors.console:ConsoleSink",
    "files": "connectors.files.sink:FilesSink",
    "files_sink": "connectors.files.sink:FilesSink",
    "collect": "connectors.testing.collect:CollectingSink",
    "subscribe": "connectors.subscribe:SubscribeSink",
    "postgres": "connectors.postgres.sink:PostgresSink",
    "kafka": "connectors.kafka.sink:KafkaSink",
}
# One flat map of unique names (``files`` is the source; the sink is also ``files_sink``).
BUILTIN: dict[str, str] = {**SOURCES, **{k: v for k, v in SINKS.items() if k not in SOURCES}}

Kind = Literal["source", "sink"]
C = TypeVar("C", Source, Sink)


def entry_points() -> dict[str, str]:
    """Names registered in the ``ringstream.connectors`` group: name -> ``module:attr``.

    Read on every call (a package installed while the process runs is seen).
    Of two distributions registering one name, the first found wins.
    """
    found: dict[str, str] = {}
    for ep in importlib.metadata.entry_points(group=GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def available(kind: Kind | None = None) -> dict[str, str]:
    """Every resolvable name -> ``"module:attr"`` (built-ins first), for help and docs.

    ``kind`` narrows the built-ins to sources or sinks; plugins are listed for
    both (their kind is known only once imported).
    """
    builtin = {"source": SOURCES, "sink": SINKS, None: BUILTIN}[kind]
    plugins = {n: v for n, v in sorted(entry_points().items()) if n not in builtin}
    return {**builtin, **plugins}


def resolve_source(type_name: str) -> type[Source]:
    """The ``Source`` subclass that ``type_name`` names (see the module docstring)."""
    return _resolve(type_name, "source", Source)


def resolve_sink(type_name: str) -> type[Sink]:
    """The ``Sink`` subclass that ``type_name`` names (see the module docstring)."""
    return _resolve(type_name, "sink", Sink)


def _resolve(type_name: str, kind: Kind, base: type[C]) -> type[C]:
    builtin = SOURCES if kind == "source" else SINKS
    if not isinstance(type_name, str) or not type_name:
        raise ConfigError(f"{kind} type {type_name!r} must be a non-empty string")
    if type_name in builtin:
        target = builtin[type_name]
    elif type_name in (plugins := entry_points()):
        target = plugins[type_name]
    elif ":" in type_name or "." in type_name:
        target = type_name
    elif type_name in BUILTIN:
        other = "sink" if kind == "source" else "source"
        raise ConfigError(f"{kind} type {type_name!r} is a {other}, not a {kind}")
    else:
        known = ", ".join(available(kind))
        raise ConnectorNotFoundError(
            f"unknown {kind} type {type_name!r}; known: {known} "
            f"(or a dotted path 'package.module:Class')"
        )
    obj = load_object(
        target,
        f"{kind} type {type_name!r} ({target})",
        dotted=True,
        error=ConnectorNotFoundError,
    )
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise ConfigError(
            f"{kind} type {type_name!r} -> {target} is not a subclass of "
            f"connectors.base.{base.__name__}"
        )
    if obj.options_type is not None:
        runtime = SOURCE_RUNTIME_KEYS if kind == "source" else SINK_RUNTIME_KEYS
        check_no_runtime_keys(obj.options_type, runtime, f"{kind} type {type_name!r}")
    return obj
