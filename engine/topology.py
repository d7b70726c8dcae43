"""Which core runs what: detect the machine, propose a layout, load and check a topology file.

A topology file pins the coordinator, the Ring 1 connector processes and each
Ring 0 worker to CPUs (logical CPU ids as the kernel numbers them)::

    [topology]
    coordinator = 0          # the coordinator process
    connectors = [0]         # Ring 1 processes (sources, sinks) share these CPUs
    workers = [1, 2, 3]      # one Ring 0 worker per entry, pinned to that CPU

    [rings]
    capacity = 8388608       # bytes per ring, a power of two

Proposal rules (``propose``): workers go on distinct *physical* cores (one SMT
sibling each, so two workers never share a core's execution units), ordered by
NUMA node; the first physical core (all its siblings) is kept for the
coordinator and the connectors when the machine has at least 2 physical cores,
and a second one from 16 physical cores on. On one core everything shares, and
the proposal says so.

``check`` validates a topology against the CPUs this process may use
(``os.sched_getaffinity``): a CPU that is not available is refused with a
message naming the key, unless oversubscription is allowed, in which case
requested CPUs are mapped onto the available ones round-robin, with a warning.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import msgspec

from engine import tomlfile
from engine.errors import ConfigError
from engine.shm.segment import check_capacity

DEFAULT_RING_CAPACITY = 8 << 20


@dataclass(frozen=True)
class Cpu:
    id: int
    core: int  # physical core id, unique within its package
    package: int
    node: int  # NUMA node

    @property
    def physical(self) -> tuple[int, int]:
        return (self.package, self.core)


@dataclass(frozen=True)
class Machine:
    cpus: tuple[Cpu, ...]  # the CPUs this process may run on, by id

    @property
    def physical_cores(self) -> list[list[Cpu]]:
        """Physical cores (each a list of its SMT siblings), ordered by NUMA node then id."""
        cores: dict[tuple[int, int], list[Cpu]] = {}
        for cpu in self.cpus:
            cores.setdefault(cpu.physical, []).append(cpu)
        return sorted(cores.values(), key=lambda sib: (sib[0].node, sib[0].id))

    @property
    def smt(self) -> int:
        return max((len(c) for c in self.physical_cores), default=1)

    @property
    def nodes(self) -> list[int]:
        return sorted({c.node for c in self.cpus})

    def summary(self) -> str:
        return (
            f"{len(self.cpus)} logical CPUs, {len(self.physical_cores)} physical cores, "
            f"SMT {self.smt}, {len(self.nodes)} NUMA node(s)"
        )


class Topology(msgspec.Struct, forbid_unknown_fields=True):
    coordinator: int
    connectors: list[int]
    workers: list[int]
    ring_capacity: int = DEFAULT_RING_CAPACITY


def _read_int(path: Path, default: int) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return default


def _parse_cpulist(text: str) -> set[int]:
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def detect(sys_root: str | Path = "/sys", available: set[int] | None = None) -> Machine:
    """Read CPU and NUMA topology from ``sys_root`` for the ``available`` CPUs."""
    if available is None:
        available = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set()
        available = available or set(range(os.cpu_count() or 1))
    root = Path(sys_root) / "devices" / "system"
    node_of: dict[int, int] = {}
    for node_dir in sorted((root / "node").glob("node[0-9]*")):
        try:
            for cpu in _parse_cpulist((node_dir / "cpulist").read_text()):
                node_of[cpu] = int(node_dir.name[4:])
        except (OSError, ValueError):
            continue
    cpus = []
    for cpu_id in sorted(available):
        topo = root / "cpu" / f"cpu{cpu_id}" / "topology"
        cpus.append(
            Cpu(
                id=cpu_id,
                core=_read_int(topo / "core_id", cpu_id),  # unknown: every CPU its own core
                package=_read_int(topo / "physical_package_id", 0),
                node=node_of.get(cpu_id, 0),
            )
        )
    return Machine(tuple(cpus))


def propose(machine: Machine, workers: int | None = None) -> tuple[Topology, list[str]]:
    """A layout for ``machine`` (default: as many workers as free physical cores) and notes."""
    cores = machine.physical_cores
    notes: list[str] = []
    reserved = 0 if len(cores) < 2 else (1 if len(cores) < 16 else 2)
    ring1 = [c.id for core in cores[:reserved] for c in core] or [cores[0][0].id]
    worker_cores = [core[0].id for core in cores[reserved:]] or [cores[0][0].id]
    if reserved == 0:
        notes.append(
            f"only {len(cores)} physical core(s): the coordinator and connectors share "
            "CPUs with the workers"
        )
    if workers is not None:
        if workers < 1:
            raise ConfigError(f"workers={workers} must be >= 1")
        if workers > len(worker_cores):
            notes.append(
                f"{workers} workers on {len(worker_cores)} free physical core(s): workers "
                "share CPUs (free cores, then their SMT siblings, then the connectors' CPUs)"
            )
            spare = [c.id for core in cores[reserved:] for c in core[1:]]
            pool = worker_cores + spare + [c for c in ring1 if c not in worker_cores]
            worker_cores = [pool[i % len(pool)] for i in range(workers)]
        else:
            worker_cores = worker_cores[:workers]
    topology = Topology(coordinator=ring1[0], connectors=ring1, workers=worker_cores)
    return topology, notes


def to_toml(topology: Topology, machine: Machine, notes: list[str]) -> str:
    lines = [f"# ringstream topology proposed for: {machine.summary()}"]
    lines += [f"# note: {n}" for n in notes]
    lines += [
        "",
        "[topology]",
        f"coordinator = {topology.coordinator}",
        f"connectors = {list(topology.connectors)}",
        f"workers = {list(topology.workers)}",
        "",
        "[rings]",
        f"capacity = {topology.ring_capacity}",
        "",
    ]
    return "\n".join(lines)


def load(path: str | Path) -> Topology:
    """Parse and validate a topology file; errors name the file, the key and the reason."""
    path = Path(path)
    raw = tomlfile.read(path, "topology file")
    unknown = sorted(set(raw) - {"topology", "rings"})
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {unknown}; expected [topology] and [rings]")
    section, rings = raw.get("topology"), raw.get("rings", {})
    if section is None:
        raise ConfigError(f"{path}: missing table [topology]")
    if not isinstance(section, dict) or not isinstance(rings, dict):
        raise ConfigError(f"{path}: [topology] and [rings] must be tables")
    if set(rings) - {"capacity"}:
        raise ConfigError(f"{path}: rings: unknown key(s) {sorted(set(rings) - {'capacity'})}")
    data = {**section, **({"ring_capacity": rings["capacity"]} if "capacity" in rings else {})}
    try:
        t = msgspec.convert(data, Topology)
    except msgspec.ValidationError as exc:
        reason = tomlfile.key_reason(exc, {"ring_capacity": "rings.capacity"}, Topology, data)
        raise ConfigError(
            f"{path}: {reason if reason.startswith('rings.') else 'topology.' + reason}"
        ) from None
    if not t.workers:
        raise ConfigError(f"{path}: topology.workers: needs at least one CPU")
    for key, cpus in (
        ("coordinator", [t.coordinator]),
        ("connectors", t.connectors),
        ("workers", t.workers),
    ):
        bad = [c for c in cpus if c < 0]
        if bad:
            raise ConfigError(f"{path}: topology.{key}: CPU ids must be >= 0, got {bad}")
    try:
        check_capacity(t.ring_capacity)
    except ConfigError as exc:
        raise ConfigError(f"{path}: rings.capacity: {exc}") from None
    return t


def check(
    topology: Topology, available: set[int], oversubscribe: bool
) -> tuple[Topology, list[str]]:
    """Refuse CPUs outside ``available``, or (``oversubscribe``) remap them with a warning."""
    pool = sorted(available)
    missing = {
        key: [c for c in cpus if c not in available]
        for key, cpus in (
            ("coordinator", [topology.coordinator]),
            ("connectors", topology.connectors),
            ("workers", topology.workers),
        )
    }
    missing = {k: v for k, v in missing.items() if v}
    if not missing:
        return topology, []
    where = "; ".join(f"topology.{k} asks for CPU(s) {v}" for k, v in missing.items())
    if not oversubscribe:
        raise ConfigError(
            f"{where}, but this process may only use CPUs {pool}. Fix the topology file "
            "(python -m engine topology proposes one) or pass --oversubscribe to share CPUs"
        )
    remap = {
        c: pool[i % len(pool)]
        for i, c in enumerate(
            sorted({topology.coordinator, *topology.connectors, *topology.workers} - available)
        )
    }
    fixed = Topology(
        coordinator=remap.get(topology.coordinator, topology.coordinator),
        connectors=[remap.get(c, c) for c in topology.connectors],
        workers=[remap.get(c, c) for c in topology.workers],
        ring_capacity=topology.ring_capacity,
    )
    return fixed, [f"oversubscribing: {where}; mapped {remap} onto available CPUs {pool}"]
