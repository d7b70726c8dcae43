"""Topology detection on a fake /sys tree, proposals, the file format and its errors."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from engine import topology
from engine.errors import ConfigError


def fake_sys(root: Path, packages: int, cores: int, smt: int, nodes: int) -> set[int]:
    """A /sys tree numbered like Linux does: sibling k of core c is cpu c + k * total_cores."""
    total = packages * cores
    cpus = set()
    per_node: dict[int, list[int]] = {}
    for k in range(smt):
        for p in range(packages):
            for c in range(cores):
                cpu = k * total + p * cores + c
                cpus.add(cpu)
                d = root / "devices/system/cpu" / f"cpu{cpu}" / "topology"
                d.mkdir(parents=True)
                (d / "core_id").write_text(f"{c}\n")
                (d / "physical_package_id").write_text(f"{p}\n")
                per_node.setdefault(p * nodes // packages, []).append(cpu)
    for node, members in per_node.items():
        d = root / "devices/system/node" / f"node{node}"
        d.mkdir(parents=True)
        (d / "cpulist").write_text(",".join(map(str, sorted(members))) + "\n")
    return cpus


def test_topology_detect_counts_physical_cores_smt_and_nodes(tmp_path: Path) -> None:
    cpus = fake_sys(tmp_path, packages=2, cores=4, smt=2, nodes=2)
    machine = topology.detect(tmp_path, available=cpus)
    assert machine.summary() == "16 logical CPUs, 8 physical cores, SMT 2, 2 NUMA node(s)"


def test_topology_propose_puts_workers_on_distinct_physical_cores_away_from_connectors(
    tmp_path: Path,
) -> None:
    machine = topology.detect(tmp_path, available=fake_sys(tmp_path, 2, 4, 2, 2))
    proposed, notes = topology.propose(machine)
    physical = {c.id: c.physical for c in machine.cpus}
    assert proposed.connectors == [0, 8]  # the first physical core, both siblings
    assert proposed.coordinator == 0
    assert len(proposed.workers) == 7
    assert len({physical[w] for w in proposed.workers}) == 7  # no two share a core
    assert not set(proposed.workers) & set(proposed.connectors)
    assert notes == []


def test_topology_propose_more_workers_than_cores_shares_with_a_note(tmp_path: Path) -> None:
    machine = topology.detect(tmp_path, available=fake_sys(tmp_path, 1, 2, 1, 1))
    proposed, notes = topology.propose(machine, workers=4)
    assert proposed.workers == [1, 0, 1, 0]
    assert "share CPUs" in notes[0]


def test_topology_propose_one_core_shares_everything_with_a_note(tmp_path: Path) -> None:
    machine = topology.detect(tmp_path, available=fake_sys(tmp_path, 1, 1, 1, 1))
    proposed, notes = topology.propose(machine)
    assert (proposed.coordinator, proposed.connectors, proposed.workers) == (0, [0], [0])
    assert "only 1 physical core" in notes[0]


def test_topology_proposal_round_trips_through_the_file_format(tmp_path: Path) -> None:
    machine = topology.detect(tmp_path, available=fake_sys(tmp_path, 1, 4, 2, 1))
    proposed, notes = topology.propose(machine)
    path = tmp_path / "topology.toml"
    path.write_text(topology.to_toml(proposed, machine, notes))
    assert topology.load(path) == proposed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[topology\n", "not valid TOML"),
        ("[rings]\ncapacity = 1048576\n", "missing table [topology]"),
        ("[topology]\ncoordinator = 0\nconnectors = [0]\nworkers = []\n", "topology.workers"),
        (
            "[topology]\ncoordinator = 'a'\nconnectors = [0]\nworkers = [1]\n",
            "topology.coordinator: Expected `int`, got `str`",
        ),
        ("[topology]\ncoordinator = 0\nconnectors = [0]\nworkers = [1]\ncolour = 1\n", "colour"),
        ("[topology]\ncoordinator = 0\nconnectors = [0]\nworkers = [-1]\n", "must be >= 0"),
        (
            "[topology]\ncoordinator = 0\nconnectors = [0]\nworkers = [1]\n"
            "[rings]\ncapacity = 1000\n",
            "rings.capacity: ring capacity=1000 is not a power of 2",
        ),
        (
            "[topology]\ncoordinator = 0\nconnectors = [0]\nworkers = [1]\n[rings]\nsize = 1\n",
            "rings: unknown key(s) ['size']",
        ),
    ],
)
def test_topology_load_bad_file_names_file_key_and_reason(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        topology.load(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_topology_check_refuses_unavailable_cpus_naming_key() -> None:
    t = topology.Topology(coordinator=0, connectors=[0], workers=[1, 5, 6])
    with pytest.raises(
        ConfigError, match=r"topology.workers asks for CPU\(s\) \[5, 6\].*--oversubscribe"
    ):
        topology.check(t, {0, 1}, oversubscribe=False)


def test_topology_check_oversubscribe_remaps_onto_available_cpus_with_warning() -> None:
    t = topology.Topology(coordinator=0, connectors=[0], workers=[1, 5, 6])
    fixed, warnings = topology.check(t, {0, 1}, oversubscribe=True)
    assert set(fixed.workers) <= {0, 1} and len(fixed.workers) == 3
    assert "oversubscribing" in warnings[0]
    assert topology.check(fixed, {0, 1}, oversubscribe=False) == (fixed, [])


def test_cli_topology_prints_a_loadable_file_for_this_machine(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "engine", "topology"], capture_output=True, text=True, check=True
    )
    tomllib.loads(out.stdout)
    path = tmp_path / "t.toml"
    path.write_text(out.stdout)
    proposed = topology.load(path)
    available = {c.id for c in topology.detect().cpus}
    assert topology.check(proposed, available, oversubscribe=False) == (proposed, [])
