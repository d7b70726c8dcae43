"""The epoch protocol's bookkeeping: who must report, what a report returns, complete epochs."""

from __future__ import annotations

from engine import control
from engine.epochs import Ack, EpochTracker
from engine.pipeline import Pipeline

SOURCES = [("source", "bids", 0), ("source", "bids", 1)]
OTHERS = [("worker", "", 0), ("sink", "out", 0)]


def pipeline() -> Pipeline:
    import msgspec

    return msgspec.convert({
        "sources": [{"name": "bids", "type": "generator", "parallelism": 2}],
        "sinks": [{"name": "out", "type": "console"}],
    }, Pipeline)  # fmt: skip


def report(who: tuple[str, str, int], epoch: int, **kw: object) -> control.Checkpointed:
    return control.Checkpointed(epoch, who[0], who[2], **kw)  # type: ignore[arg-type]


def test_reports_are_accepted_once_and_strangers_are_unknown() -> None:
    t = EpochTracker([*SOURCES, *OTHERS], sinks=1, first_epoch=1)
    n = t.open()
    assert t.acknowledge(SOURCES[0], report(SOURCES[0], n, position={"b": 1})) is Ack.ACCEPTED
    assert t.acknowledge(SOURCES[0], report(SOURCES[0], n, position={"b": 9})) is Ack.DUPLICATE
    assert t.acknowledge(("worker", "", 7), report(("worker", "", 7), n)) is Ack.UNKNOWN
    assert t.complete() == []  # still waiting
    for who in (SOURCES[1], *OTHERS):
        t.acknowledge(who, report(who, n, position={"b": 2}, committable={}))
    (done,) = t.complete()
    assert done.sources[("bids", 0)].position == {"b": 1}  # the first report, not overwritten


def test_a_source_that_finished_first_keeps_its_final_position_in_later_manifests() -> None:
    """Seen: instance 1 of a source ended first; instance 0's final report then opened the
    last epoch without it, and building that epoch's manifest raised KeyError."""
    t = EpochTracker([*SOURCES, *OTHERS], sinks=1, first_epoch=1)
    n = t.open()
    for who in (*SOURCES, *OTHERS):
        t.acknowledge(who, report(who, n, position={"b": 1}, committable={}))
    assert [e.epoch for e in t.complete()] == [1]
    # epoch 2 opens; instance 1 ends right then (its final report is epoch 2), instance 0
    # reports epoch 2 normally and ends later: its final report opens epoch 3
    assert t.open() == 2
    t.acknowledge(SOURCES[1], report(SOURCES[1], 2, position={"b": 5}, finished=True))
    t.ended(SOURCES[1])
    t.acknowledge(SOURCES[0], report(SOURCES[0], 2, position={"b": 6}))
    for who in OTHERS:
        t.acknowledge(who, report(who, 2, committable={}))
    assert [e.epoch for e in t.complete()] == [2]
    t.acknowledge(SOURCES[0], report(SOURCES[0], 3, position={"b": 8}, finished=True))
    for who in OTHERS:
        t.acknowledge(who, report(who, 3, committable={}))
    done = t.complete()
    assert [e.epoch for e in done] == [3]
    manifest = done[-1].manifest(pipeline())
    assert [o["position"] for o in manifest.source_offsets["bids"]] == [{"b": 8}, {"b": 5}]
    assert [o["finished"] for o in manifest.source_offsets["bids"]] == [True, True]
