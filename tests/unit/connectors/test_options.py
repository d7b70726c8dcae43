"""The connector kit's options: one parser, one shape of error, separate namespaces."""

from __future__ import annotations

from typing import Annotated, Literal

import pytest
from msgspec import Meta

from connectors import registry
from connectors.options import Options, check_no_runtime_keys, parse_options
from engine.errors import ConfigError
from engine.pipeline import SINK_RUNTIME_KEYS, SOURCE_RUNTIME_KEYS


class Demo(Options, frozen=True):
    path: str
    count: Annotated[int, Meta(ge=1)] = 1
    mode: Literal["fast", "safe"] = "safe"
    tags: dict[str, str] | None = None


def error(options: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_options(Demo, options, "sources.demo")
    return str(info.value)


def test_options_parse_defaults_and_values() -> None:
    got = parse_options(Demo, {"path": "x", "count": 3}, "sources.demo")
    assert (got.path, got.count, got.mode, got.tags) == ("x", 3, "safe", None)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"path": "x", "cont": 2}, "sources.demo: unknown option 'cont' (did you mean 'count'?)"),
        ({"path": "x", "count": 0}, "sources.demo.count=0 must be an integer >= 1"),
        ({"path": "x", "count": True}, "sources.demo.count=True must be an integer >= 1"),
        ({"path": "x", "count": "2"}, "sources.demo.count='2' must be an integer >= 1"),
        ({"path": "x", "mode": "quick"}, "sources.demo.mode='quick' must be one of 'fast', 'safe'"),
        ({"path": {}}, "sources.demo.path={} must be a string"),
        ({}, "sources.demo.path=None: option 'path' is required (a string)"),
        ({"path": "x", "tags": {"a": 1}}, "sources.demo.tags.a: Expected `str`, got `int`"),
    ],
)
def test_options_errors_have_one_shape_naming_key_and_value(options: dict, message: str) -> None:
    assert error(options).startswith(message)


def test_options_unknown_lists_the_known_ones() -> None:
    assert error({"path": "x", "zzz": 1}).endswith("options: path, count, mode, tags")


def test_options_renamed_key_is_read_under_its_new_name() -> None:
    class Renamed(Options, frozen=True):
        jitter_ms: Annotated[int, Meta(ge=0)] = 0
        renamed = {"old_ms": "jitter_ms"}

    assert parse_options(Renamed, {"old_ms": 5}, "s").jitter_ms == 5
    with pytest.raises(ConfigError, match="s.old_ms=-1 must be an integer >= 0"):
        parse_options(Renamed, {"old_ms": -1}, "s")
    with pytest.raises(ConfigError, match="not both"):
        parse_options(Renamed, {"old_ms": 1, "jitter_ms": 2}, "s")


def test_options_named_like_a_runtime_key_are_refused() -> None:
    class Clash(Options, frozen=True):
        event_time: str = "ts"

    with pytest.raises(ConfigError, match=r"option\(s\) \['event_time'\] have the name"):
        check_no_runtime_keys(Clash, SOURCE_RUNTIME_KEYS, "source type 'x'")


@pytest.mark.parametrize("name", sorted(registry.SOURCES))
def test_builtin_source_options_never_clash_with_runtime_keys(name: str) -> None:
    cls = registry.resolve_source(name)  # resolving checks the clash
    assert cls.options_type is not None, f"{name} declares its options"


@pytest.mark.parametrize("name", sorted(registry.SINKS))
def test_builtin_sink_options_never_clash_with_runtime_keys(name: str) -> None:
    cls = registry.resolve_sink(name)
    assert cls.options_type is not None, f"{name} declares its options"
    check_no_runtime_keys(cls.options_type, SINK_RUNTIME_KEYS, name)
