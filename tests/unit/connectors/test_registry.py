"""The registry resolves built-in names, entry points and dotted paths, lazily."""

from __future__ import annotations

import importlib.metadata
from typing import Any

import pyarrow as pa
import pytest

from connectors import registry
from connectors.base import Sink, Source, SourceBatch
from connectors.console import ConsoleSink
from connectors.files.source import FilesSource
from connectors.generator import GeneratorSource
from connectors.testing import CollectingSink, ScriptedSource
from engine.errors import ConfigError, ConnectorNotFoundError


class PluginSource(Source):
    def schema(self) -> pa.Schema:
        return pa.schema([("x", pa.int64())])

    def poll_batch(self, max_records: int) -> SourceBatch | None:
        return None


class PluginSink(Sink):
    pass


def not_a_class() -> None:
    pass


def fake_entry_points(monkeypatch: pytest.MonkeyPatch, names: dict[str, str]) -> None:
    real = importlib.metadata.entry_points

    def entry_points(**kwargs: Any) -> Any:
        if kwargs.get("group") == registry.GROUP:
            return [importlib.metadata.EntryPoint(n, v, registry.GROUP) for n, v in names.items()]
        return real(**kwargs)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


def test_registry_builtin_names_resolve_to_their_classes() -> None:
    assert registry.resolve_source("generator") is GeneratorSource
    assert registry.resolve_source("files") is FilesSource
    assert registry.resolve_source("scripted") is ScriptedSource
    assert registry.resolve_sink("console") is ConsoleSink
    assert registry.resolve_sink("collect") is CollectingSink


def test_registry_builtin_map_has_the_documented_names() -> None:
    assert registry.BUILTIN["generator"] == "connectors.generator:GeneratorSource"
    assert registry.BUILTIN["nexmark"] == "connectors.nexmark:NexmarkSource"
    assert registry.BUILTIN["files"] == "connectors.files.source:FilesSource"
    assert registry.BUILTIN["console"] == "connectors.console:ConsoleSink"
    assert registry.BUILTIN["files_sink"] == "connectors.files.sink:FilesSink"
    assert registry.SINKS["files"] == registry.SINKS["files_sink"]


@pytest.mark.parametrize(
    "path", ["connectors.generator:GeneratorSource", "connectors.generator.GeneratorSource"]
)
def test_registry_dotted_paths_resolve(path: str) -> None:
    assert registry.resolve_source(path) is GeneratorSource


def test_registry_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ConnectorNotFoundError, match="unknown source type 'kafak'.*generator"):
        registry.resolve_source("kafak")
    assert issubclass(ConnectorNotFoundError, ConfigError)


def test_registry_missing_module_fails_only_when_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.SOURCES, "ghost", "connectors.no_such_module:Ghost")
    assert "ghost" in registry.available("source")  # listing imports nothing
    with pytest.raises(ConnectorNotFoundError, match="'ghost'.*cannot import"):
        registry.resolve_source("ghost")


def test_registry_missing_attribute_rejected_naming_it() -> None:
    with pytest.raises(ConnectorNotFoundError, match="no attribute 'Nope'"):
        registry.resolve_source("connectors.generator:Nope")


def test_registry_wrong_kind_rejected_with_config_error() -> None:
    with pytest.raises(ConfigError, match="'console' is a sink, not a source"):
        registry.resolve_source("console")
    with pytest.raises(ConfigError, match="'generator' is a source, not a sink"):
        registry.resolve_sink("generator")
    with pytest.raises(ConfigError, match="not a subclass of connectors.base.Source"):
        registry.resolve_source("connectors.console:ConsoleSink")
    with pytest.raises(ConfigError, match="not a subclass of connectors.base.Sink"):
        registry.resolve_sink(f"{__name__}:not_a_class")


def test_registry_entry_point_names_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(
        monkeypatch, {"mine": f"{__name__}:PluginSource", "my_sink": f"{__name__}:PluginSink"}
    )
    assert registry.resolve_source("mine") is PluginSource
    assert registry.resolve_sink("my_sink") is PluginSink
    with pytest.raises(ConfigError, match="not a subclass of connectors.base.Sink"):
        registry.resolve_sink("mine")
    listed = registry.available()
    assert listed["mine"] == f"{__name__}:PluginSource" and "generator" in listed


def test_registry_builtin_name_shadows_an_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(monkeypatch, {"generator": f"{__name__}:PluginSource"})
    assert registry.resolve_source("generator") is GeneratorSource
    assert registry.available()["generator"] == "connectors.generator:GeneratorSource"


def test_registry_available_by_kind_separates_sources_and_sinks() -> None:
    sources, sinks = registry.available("source"), registry.available("sink")
    assert {"generator", "nexmark", "files", "scripted"} <= set(sources)
    assert {"console", "files", "files_sink", "collect"} <= set(sinks)
    assert "console" not in sources and "generator" not in sinks
    assert sinks["files"] == "connectors.files.sink:FilesSink"


@pytest.mark.parametrize("bad", ["", 3])
def test_registry_empty_or_non_string_type_rejected(bad: object) -> None:
    with pytest.raises(ConfigError, match="must be a non-empty string"):
        registry.resolve_source(bad)  # type: ignore[arg-type]
