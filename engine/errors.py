"""The one error hierarchy of ringstream.

Names say who is at fault, after trio: ``RingClosedError`` — you closed it;
``PeerDiedError`` — something outside broke it. Hot paths never raise for
expected conditions (a full ring is a return value); these are for the cold
paths, and every message names the offending value.
"""

from __future__ import annotations


class RingstreamError(Exception):
    """Base class of every error ringstream raises on purpose."""


class ConfigError(RingstreamError, ValueError):
    """A configuration value is malformed or out of range (the message names it)."""


class RingError(RingstreamError):
    """Base class of errors about one shared-memory ring."""


class RingFormatError(RingError):
    """A segment is not a ring this build can use (magic, version, capacity, size)."""


class FrameTooLargeError(RingError, ValueError):
    """A frame can never fit into the ring (the message gives both sizes)."""


class CorruptFrameError(RingError):
    """A frame header in the ring is impossible (bad kind or length): memory was overwritten."""


class RingClosedError(RingError):
    """This side of the ring was already closed by the caller."""


class RingRoleError(RingError):
    """A second producer or consumer tried to attach to a ring that has a live one."""


class PeerGoneError(RingError):
    """The other side of the ring went away; the survivor cannot make progress."""


class PeerDiedError(PeerGoneError):
    """The other side's process exited or was killed without closing the ring."""


class PeerClosedError(PeerGoneError):
    """The other side closed the ring (without end-of-stream, for a consumer)."""


class SchemaMismatchError(RingstreamError, ValueError):
    """A batch does not match the schema of its stream."""


class ChildFailedError(RingstreamError):
    """A child process of the engine failed or died (the message names it, its pid and code)."""


class ExpressionError(ConfigError):
    """An expression is malformed, names an unknown column or mixes types (message: where)."""


class StateError(RingstreamError):
    """Operator state cannot be restored (wrong shape or version for this operator)."""


class CheckpointError(RingstreamError):
    """Base class of errors about checkpoints: manifests and state files."""


class CorruptCheckpointError(CheckpointError):
    """A manifest or state file is truncated, has a bad magic/version or a wrong checksum."""


class NoCheckpointError(CheckpointError):
    """A restore was asked for but no valid manifest exists."""


class DeliveryGuaranteeError(ConfigError):
    """The pipeline asks for a guarantee a connector or setting cannot give (names which)."""


class ConnectorError(RingstreamError):
    """A connector failed (the message names the connector; the cause is chained)."""


class ConnectorNotFoundError(ConfigError):
    """A pipeline names a connector type that is neither built in nor registered."""


class RetriesExhaustedError(ConnectorError):
    """A connector call kept failing after the configured number of retries."""
