"""Reading a TOML config file and turning msgspec's complaints into ConfigErrors.

Both the pipeline and the topology file go through here, so every config error
has one shape: ``<file>: <key.path>: <reason>``.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import msgspec

from engine.errors import ConfigError

_UNKNOWN = re.compile(r"Object contains unknown field `(.+)`")


def read(path: Path, what: str) -> dict[str, Any]:
    """The TOML document at ``path``; ``what`` names the file's role in errors."""
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def key_reason(exc: msgspec.ValidationError, rename: dict[str, str] | None = None) -> str:
    """msgspec says 'reason - at `$.a[0].b`'; we say 'a[0].b: reason' (keys renamed as asked)."""
    msg = str(exc)
    reason, sep, where = msg.rpartition(" - at `")
    if not sep:
        reason, where = msg, "$"
    key = where.rstrip("`").removeprefix("$").lstrip(".")
    unknown = _UNKNOWN.fullmatch(reason)
    if unknown:
        key, reason = ".".join(filter(None, [key, unknown.group(1)])), "unknown key"
    key = (rename or {}).get(key, key)
    return f"{key or '(top level)'}: {reason}"
