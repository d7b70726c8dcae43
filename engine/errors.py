"""The one error hierarchy of ringstream.

Names say who is at fault, after trio: ``RingClosedError`` — you closed it;
``PeerDiedError`` — something outside broke it. Hot paths never raise for
expected conditions (a full ring is a return value); these are for the cold
paths, and every message names the offending value.

Three kinds of failure, told apart by two functions:

* ``is_transient``: I/O that may succeed a moment later (a timeout, a refused
  or reset connection, ``TransientError``). Only these are retried in place,
  by the Ring 1 runtime, around a connector call.
* ``is_permanent``: the same input fails the same way every time — bad data
  (``DataError``), a schema that does not match, bad configuration, state
  that does not fit the query, a frame that can never fit a ring, a bug in
  user code (``TypeError``, ``KeyError``, ...). Never retried, and a child
  that fails with one ends the run (exit 1) instead of restarting it from a
  checkpoint: the replay would fail again.
* anything else — a connector's own ``ConnectorError``, retries exhausted, a
  peer that died, a full disk: not retried in place (the call may have done
  half its work), but the run restarts from the last checkpoint, up to
  ``checkpoint.max_restarts`` times. ::

    RingstreamError
    ├── ConfigError (also ValueError) ── ExpressionError, DeliveryGuaranteeError,
    │                                    ConnectorNotFoundError
    ├── RingError ── RingFormatError, FrameTooLargeError, CorruptFrameError,
    │                ProtocolError, RingClosedError, RingRoleError,
    │                PeerGoneError ── PeerDiedError, PeerClosedError
    ├── SchemaMismatchError (also ValueError)
    ├── DataError ── BadRecordError (also SchemaMismatchError)
    ├── ChildFailedError
    ├── UsageError (also RuntimeError)
    ├── StateError (also ValueError)
    ├── CheckpointError ── CorruptCheckpointError, CheckpointLockedError (also ConfigError)
    └── ConnectorError ── TransientError, RetriesExhaustedError
"""

from __future__ import annotations

import errno


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


class ProtocolError(RingError):
    """Frames arrived in an order the stream protocol forbids (e.g. a barrier out of turn)."""


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


class DataError(RingstreamError):
    """Input data cannot be used as it is (a value that does not parse, a malformed record)."""


class BadRecordError(DataError, SchemaMismatchError):
    """One input record is malformed or does not fit the schema; the message names where
    (file, line, column, value).

    ``record`` is the ``connectors.base.BadRecord`` describing it, when there is one.
    """

    def __init__(self, message: str, record: object = None) -> None:
        super().__init__(message)
        self.record = record


class UsageError(RingstreamError, RuntimeError):
    """An API was called where it cannot work (e.g. a blocking helper inside an event loop)."""


class ChildFailedError(RingstreamError):
    """A child process of the engine failed or died (the message names it, its pid and code).

    ``permanent``: the child failed with a permanent error (``is_transient`` is
    false): restarting from a checkpoint would fail the same way.
    """

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class ExpressionError(ConfigError):
    """An expression is malformed, names an unknown column or mixes types (message: where)."""


class StateError(RingstreamError, ValueError):
    """Operator state cannot be restored (wrong shape or version for this operator)."""


class CheckpointError(RingstreamError):
    """Base class of errors about checkpoints: manifests and state files."""


class CorruptCheckpointError(CheckpointError):
    """A manifest or state file is truncated, has a bad magic/version or a wrong checksum."""


class CheckpointLockedError(CheckpointError, ConfigError):
    """Another live run holds the checkpoint directory (the message names its pid)."""


class DeliveryGuaranteeError(ConfigError):
    """The pipeline asks for a guarantee a connector or setting cannot give (names which)."""


class ConnectorError(RingstreamError):
    """A connector failed (the message names the connector; the cause is chained)."""


class TransientError(ConnectorError):
    """A connector failed in a way that may go away by itself: retrying is worth it."""


class ConnectorNotFoundError(ConfigError):
    """A pipeline names a connector type that is neither built in nor registered."""


class RetriesExhaustedError(ConnectorError):
    """A connector call kept failing with transient errors after the configured retries."""


# OS errors that may clear up by themselves (a busy or briefly unreachable peer).
_TRANSIENT_ERRNOS = frozenset(
    {
        errno.EAGAIN,
        errno.EBUSY,
        errno.EINTR,
        errno.EIO,
        errno.ETIMEDOUT,
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.ENETDOWN,
        errno.ENETUNREACH,
        errno.ENETRESET,
        errno.EHOSTDOWN,
        errno.EHOSTUNREACH,
    }
)


def is_transient(exc: BaseException) -> bool:
    """True if ``exc`` may go away by itself, so that calling again may succeed.

    Transient: ``TransientError``; ``TimeoutError`` and ``ConnectionError``;
    an ``OSError`` whose errno is one of a busy, interrupted, timed-out or
    unreachable peer. Everything else is permanent: our own errors (data,
    schema, configuration, checkpoints, rings), a missing file, a full disk,
    and any exception type this function does not know (a bug does not go
    away by retrying). A connector that knows better raises ``TransientError``
    from its library's error.
    """
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, RingstreamError):
        return False
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    if isinstance(exc, OSError):
        return exc.errno in _TRANSIENT_ERRNOS
    return False


_PERMANENT = (ConfigError, DataError, SchemaMismatchError, StateError, FrameTooLargeError)


def is_permanent(exc: BaseException) -> bool:
    """True if the same input would fail the same way again (see the module docstring).

    Permanent: configuration, data, schema and state errors, a frame too large
    for its ring, and exceptions that are not I/O and not ours (a bug in user
    code). Not permanent: transient errors, ``ConnectorError`` and its
    retries-exhausted kind, peers that died, other I/O errors (``OSError``).
    """
    if isinstance(exc, _PERMANENT):
        return True
    if isinstance(exc, RingstreamError | OSError) or is_transient(exc):
        return False
    return isinstance(exc, Exception)
