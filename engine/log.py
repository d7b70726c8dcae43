"""What the engine prints, through the standard ``logging`` module, as text or as JSON lines.

Every process of a run logs to the ``ringstream`` logger; ``setup(format, role)``
(the coordinator in ``python -m engine run``, every child in ``engine.child``)
makes its lines either

* ``human`` (the default): the message alone, on stderr, as a person reads it; or
* ``json`` (``--log-format json``): one JSON object per line with ``time`` (UTC,
  ISO 8601), ``level``, ``role`` (coordinator, source, worker, sink), ``pid``,
  ``msg``, and the structured fields of the event (``event``: start, pinned,
  progress, health, epoch, failure, restart, summary, ...; and its figures).

``say(event, msg, **fields)`` logs one event; ``fields`` travel as JSON keys and
are left out of the human line (the message already says them). ``result`` is
the same for a command's answer (``run``'s summary), which goes to stdout.

Events of ``run``: ``start``, ``topology``, ``warning``, ``metrics`` (the
endpoint's URL), ``pinned``, ``progress`` (every second), ``health`` (a
connector's state changed), ``epoch`` (committed: JSON format only; people see
it in the progress line), ``restart``, ``recovering``, ``stopping``,
``client`` (push/subscribe clients refused or cut off), ``failure``,
``summary``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
from typing import Any, Literal, TextIO

Format = Literal["human", "json"]
FORMATS: tuple[Format, ...] = ("human", "json")
LOGGER = logging.getLogger("ringstream")
RESULT = logging.getLogger("ringstream.result")  # what a command answers, on stdout


class _Json(logging.Formatter):
    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "role": getattr(record, "role", self.role),
            "pid": record.process,
            "msg": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class _Human(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class _Stream(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that goes quiet when its reader went away (``| head``)."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        if isinstance(sys.exc_info()[1], BrokenPipeError):
            self.stream = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
            return
        super().handleError(record)


def setup(
    format: Format = "human", role: str = "coordinator", stream: TextIO | None = None
) -> None:
    """Route the ``ringstream`` logger to ``stream`` (stderr) and results to stdout, in
    ``format``; idempotent."""
    for logger, out in ((LOGGER, stream or sys.stderr), (RESULT, sys.stdout)):
        handler = _Stream(out)
        handler.setFormatter(_Json(role) if format == "json" else _Human())
        logger.handlers = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False


def say(event: str, msg: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event: ``msg`` for people, ``event`` and ``fields`` for machines."""
    LOGGER.log(level, msg, extra={"fields": {"event": event, **fields}})


def result(event: str, msg: str, **fields: Any) -> None:
    """A command's answer (the ``done:`` summary of ``run``), on stdout, in the same format."""
    RESULT.info(msg, extra={"fields": {"event": event, **fields}})


def is_json() -> bool:
    return any(isinstance(h.formatter, _Json) for h in LOGGER.handlers)
