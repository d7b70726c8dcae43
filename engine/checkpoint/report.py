"""``python -m engine checkpoints DIR``: list and verify the manifests of a store.

``format_listing(store)`` is a table, newest epoch first::

    epoch  created (UTC)             status     manifest     state  duration_ms
        7  2024-05-01T10:00:03.120Z  committed     612 B   1.3 MiB         41.0
        6  -                         CORRUPT       600 B       0 B            -
           CORRUPT: manifest …/epoch-…06.manifest: checksum mismatch: …
    verdict: OK: the newest manifest (epoch 7) is valid; a restart resumes after epoch 7

Every manifest is checked as a restore would check it (decode, then every
state file's size and checksum), so listing reads all state files.
``verify(store)`` is the exit code: 0 when the newest manifest is valid, 1
otherwise (also when there is none). ``main(directory)`` prints the listing
and returns that code.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from engine.checkpoint.store import CheckpointStore, ManifestInfo

_COLUMNS = ("epoch", "created (UTC)", "status", "manifest", "state", "duration_ms")
_RIGHT = {0, 3, 4, 5}  # right-aligned columns


def format_listing(store: CheckpointStore) -> str:
    """The table and verdict for every manifest in ``store`` (see the module docstring)."""
    return _render(store, store.list())


def verify(store: CheckpointStore) -> int:
    """0 when the newest manifest is restorable, else 1."""
    return _exit_code(store.list())


def main(directory: str | Path) -> int:
    """Print the listing of the store at ``directory``; return ``verify``'s exit code."""
    store = CheckpointStore(Path(directory))
    infos = store.list()
    print(_render(store, infos))
    return _exit_code(infos)


def _exit_code(infos: list[ManifestInfo]) -> int:
    return 0 if infos and infos[0].ok else 1


def _render(store: CheckpointStore, infos: list[ManifestInfo]) -> str:
    rows: list[tuple[tuple[str, ...], str | None]] = []
    for info in infos:
        m = info.manifest
        created = "-" if m is None else _iso(m.created_unix_s)
        status = "CORRUPT" if not info.ok else ("-" if m is None else m.sink_status)
        duration = "-"
        if m is not None and "duration_ms" in m.metrics:
            duration = f"{m.metrics['duration_ms']:.1f}"
        cells = (
            str(info.epoch),
            created,
            status,
            _size(info.manifest_bytes),
            _size(info.state_bytes),
            duration,
        )
        rows.append((cells, None if info.ok else info.status))
    widths = [len(c) for c in _COLUMNS]
    for cells, _ in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, cells, strict=True)]
    indent = " " * (widths[0] + 2)
    lines = [f"checkpoints in {store.root} (keeping the newest {store.keep})"]
    lines.append(_line(_COLUMNS, widths))
    for cells, reason in rows:
        lines.append(_line(cells, widths))
        if reason is not None:
            lines.append(f"{indent}CORRUPT: {reason}")
    lines.append(_verdict(infos))
    return "\n".join(lines)


def _verdict(infos: list[ManifestInfo]) -> str:
    if not infos:
        return "verdict: NOT OK: no manifests; a restart begins from nothing"
    newest = infos[0]
    if newest.ok:
        return (
            f"verdict: OK: the newest manifest (epoch {newest.epoch}) is valid; "
            f"a restart resumes after epoch {newest.epoch}"
        )
    fallback = next((i for i in infos if i.ok), None)
    then = (
        "no manifest is valid, a restart begins from nothing"
        if fallback is None
        else f"a restart falls back to epoch {fallback.epoch}"
    )
    return f"verdict: NOT OK: the newest manifest (epoch {newest.epoch}) is corrupt; {then}"


def _line(cells: tuple[str, ...], widths: list[int]) -> str:
    parts = [
        c.rjust(w) if i in _RIGHT else c.ljust(w)
        for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    ]
    return "  ".join(parts).rstrip()


def _iso(unix_s: float) -> str:
    t = dt.datetime.fromtimestamp(unix_s, tz=dt.UTC)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
