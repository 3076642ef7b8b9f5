"""How scan processes share a machine: shards of equal bytes, threads pinned before torch loads, read-ahead.

No model here (tests/test_scan.py runs whole scans): the split, the thread settings and the prefetch
thread are checked on their own.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fakeface.scan import workers
from fakeface.scan.sources import ITEM_COST_BYTES, ScanItem, ScanSource, iter_items, shard_by_bytes
from fakeface.scan.workers import prefetch, threads_per_process, threads_variable

REPO = Path(__file__).resolve().parent.parent


def _items(sizes: list[int]) -> list[ScanItem]:
    return [ScanItem(order=i, key=f"k{i}", data=b"x" * size) for i, size in enumerate(sizes)]


def _cost(items) -> int:
    return sum(ITEM_COST_BYTES + len(item.data) for item in items)


@pytest.mark.parametrize("world", [2, 3, 5])
def test_every_item_has_exactly_one_owner_and_the_shards_weigh_the_same(world):
    sizes = [(i * 7919) % 300_000 + (2_000_000 if i % 11 == 0 else 0) for i in range(200)]
    items = _items(sizes)
    shards = [list(shard_by_bytes(items, rank=rank, world=world)) for rank in range(world)]
    owned = sorted(item.order for shard in shards for item in shard)
    assert owned == list(range(len(items)))                                   # each exactly once
    assert all([i.order for i in shard] == sorted(i.order for i in shard) for shard in shards)   # in order
    heaviest = max(ITEM_COST_BYTES + size for size in sizes)
    assert max(map(_cost, shards)) - min(map(_cost, shards)) <= heaviest
    again = [list(shard_by_bytes(items, rank=rank, world=world)) for rank in range(world)]
    assert again == shards                                                     # the same split in every process


def test_big_and_small_files_in_turn_are_split_by_bytes_not_by_count():
    items = _items([4_000_000, 10_000] * 50)          # every other file is big: order % 2 gives one rank all of them
    by_count = [_cost(item for item in items if item.order % 2 == rank) for rank in (0, 1)]
    by_bytes = [_cost(shard_by_bytes(items, rank=rank, world=2)) for rank in (0, 1)]
    assert max(by_count) / min(by_count) > 5
    assert max(by_bytes) - min(by_bytes) <= ITEM_COST_BYTES + 4_000_000


def test_a_folder_is_split_by_its_files_sizes(tmp_path):
    for i, size in enumerate([300_000, 1, 1, 1, 300_000, 1, 1, 1]):
        (tmp_path / f"f{i}.bin").write_bytes(b"\0" * size)
    source = ScanSource(str(tmp_path), "folder")
    shards = [[item.key for item in iter_items(source, rank=rank, world=2)] for rank in (0, 1)]
    assert sorted(shards[0] + shards[1]) == sorted(f"f{i}.bin" for i in range(8))
    assert ("f0.bin" in shards[0]) != ("f4.bin" in shards[0])                 # the two big files on two processes


# --------------------------------------------------------------------------- threads

def test_threads_default_to_the_cores_shared_by_the_machines_scan_processes(monkeypatch):
    monkeypatch.setattr(workers, "available_cores", lambda: 8)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert threads_per_process() == 4 and threads_per_process(3) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert threads_per_process() == 1
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert threads_per_process() == 8
    with pytest.raises(ValueError, match="threads"):
        threads_per_process(0)


def test_threads_variable_is_restored(monkeypatch):
    monkeypatch.setenv(workers.FAKEFACE_THREADS, "7")
    with threads_variable(1):
        assert os.environ[workers.FAKEFACE_THREADS] == "1"
    assert os.environ[workers.FAKEFACE_THREADS] == "7"
    monkeypatch.delenv(workers.FAKEFACE_THREADS)
    with threads_variable(2):
        pass
    assert workers.FAKEFACE_THREADS not in os.environ


def _cli_process(*args: str, env: dict[str, str]) -> list[str]:
    """The scan command run to its first error (a missing source) in a fresh process; what torch then uses."""
    code = ("import sys, os\n"
            "import fakeface.scan.cli as cli\n"
            "loaded_early = 'torch' in sys.modules\n"
            f"code = cli.main(['{REPO / 'no-such-folder'}', '--model', 'm', '--output-dir', 'o', *{list(args)!r}])\n"
            "import torch\n"
            "print(loaded_early, code, os.environ['OMP_NUM_THREADS'], os.environ['FAKEFACE_THREADS'],"
            " torch.get_num_threads())\n")
    clean = {k: v for k, v in os.environ.items() if k not in (*workers.THREAD_VARIABLES, workers.FAKEFACE_THREADS)}
    done = subprocess.run([sys.executable, "-c", code], env={**clean, "PYTHONPATH": str(REPO), **env},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def test_the_command_pins_every_runtimes_threads_before_torch_loads():
    """torch alone would take every core (2 here); OpenMP caps a larger request at the cores, so ask for 1."""
    assert _cli_process("--threads", "1", env={}) == ["False", "2", "1", "1", "1"]
    shared = str(max(1, workers.available_cores() // 2))
    assert _cli_process(env={"LOCAL_WORLD_SIZE": "2"}) == ["False", "2", shared, shared, shared]


# --------------------------------------------------------------------------- reading ahead

def test_prefetch_gives_the_same_results_in_order_from_another_thread():
    seen_threads = set()

    def prepare(x):
        seen_threads.add(threading.get_ident())
        return x * x

    assert list(prefetch(range(50), prepare, depth=4)) == [x * x for x in range(50)]
    assert threading.get_ident() not in seen_threads
    seen_threads.clear()
    assert list(prefetch(range(5), prepare, depth=0)) == [0, 1, 4, 9, 16]
    assert seen_threads == {threading.get_ident()}


def test_prefetch_raises_where_the_failure_was_and_stops_its_thread():
    def items():
        yield from range(3)
        raise OSError("the listing failed")

    got = []
    with pytest.raises(OSError, match="listing failed"):
        for value in prefetch(items(), lambda x: x, depth=2):
            got.append(value)
    assert got == [0, 1, 2]
    with pytest.raises(ZeroDivisionError):
        list(prefetch(range(5), lambda x: 1 // (x - 3), depth=2))
    before = {t for t in threading.enumerate() if t.name == "scan-prefetch"}
    stream = prefetch(range(10_000), lambda x: x, depth=2)
    assert next(stream) == 0
    stream.close()                                          # the consumer stops early
    assert {t for t in threading.enumerate() if t.name == "scan-prefetch"} == before
