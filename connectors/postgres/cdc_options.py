"""Options of the change-capture source, and the names it derives from them."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from msgspec import Meta

from connectors.base import ConnectorConfig
from connectors.options import Options
from engine.errors import ConfigError

_NAME = re.compile(r"^[a-z0-9_]{1,63}$")


class PostgresCdcOptions(Options, frozen=True):
    dsn: Annotated[str, Meta(min_length=1)]
    tables: Annotated[list[str], Meta(min_length=1)]
    slot: str | None = None  # default: ringstream_<source name>
    publication: str | None = None  # default: the slot's name
    snapshot: bool = True
    snapshot_only: bool = False  # a backfill: the snapshot, then the source is finished
    chunk_rows: Annotated[int, Meta(ge=1)] = 100_000
    create: bool = True
    replica_identity_full: bool = True
    on_truncate: Literal["fail", "skip"] = "fail"
    lag_interval_ms: Annotated[int, Meta(ge=10)] = 1000


def slot_names(o: PostgresCdcOptions, config: ConnectorConfig) -> tuple[str, str]:
    """The slot's and the publication's names (defaults from the source's name), checked."""
    slot = o.slot or f"ringstream_{config.name.lower()}"
    publication = o.publication or slot
    for key, value in (("slot", slot), ("publication", publication)):
        if not _NAME.match(value):
            raise ConfigError(f"sources.{config.name}.{key} = {value!r}: a slot or publication "
                              "name is 1-63 characters of a-z, 0-9 and _")  # fmt: skip
    return slot, publication
