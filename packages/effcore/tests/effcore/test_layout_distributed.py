"""effcore.layout against real DTensor redistributions on gloo process groups (one launch per world size)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
import torch

from effcore.layout import (
    CommRecorder,
    comm_bytes,
    from_dtensor,
    layout_of,
    redistribute_plan,
    shard,
    to_dtensor,
)
from effcore.testing.distributed import LaunchError, LaunchTimeoutError, launch
from effcore.testing.strategies import sample_layout_pairs, seeded_tensor

pytestmark = pytest.mark.distributed

DTYPES = (torch.float32, torch.bfloat16, torch.float64)
REDUCE_OPS = ("sum", "avg", "max")


@dataclass(frozen=True, kw_only=True)
class MeshCase:
    """A mesh to build in every rank and how many seeded (src, dst) pairs to redistribute on it."""

    shape: tuple[int, ...]
    pairs: int
    seed: int
    flatten: bool = False  # flatten all mesh dims first, so DTensor may merge collectives


CASES = {
    2: [MeshCase(shape=(2,), pairs=40, seed=200)],
    4: [
        MeshCase(shape=(4,), pairs=30, seed=400),
        MeshCase(shape=(2, 2), pairs=70, seed=401),
        MeshCase(shape=(1, 4), pairs=15, seed=402),
        MeshCase(shape=(2, 2), pairs=40, seed=403, flatten=True),
    ],
}


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What one rank saw for one (src, dst) pair; plain values so it pickles back to the test."""

    label: str
    distributed_matches_shard: bool
    layout_of_matches_src: bool
    full_tensor_matches: bool
    local_matches_shard: bool | None  # None when DTensor's Shard -> Partial zero-fill makes it differ
    layout_of_matches_dst: bool
    planned: list[tuple[str, int, int]]
    recorded: list[tuple[str, int, int]]
    predicted_bytes: int
    recorded_bytes: int


def _redistribute_cases(rank: int, world_size: int, cases: list[MeshCase]) -> list[Outcome]:
    from torch.distributed.tensor import Partial, init_device_mesh

    outcomes = []
    for case in cases:
        pairs = sample_layout_pairs(
            seed=case.seed, count=case.pairs, mesh_shape=case.shape, dtypes=DTYPES, reduce_ops=REDUCE_OPS
        )
        names = pairs[0][0].mesh_dim_names
        mesh = init_device_mesh("cpu", case.shape, mesh_dim_names=names)
        flattened = [names] if case.flatten else []
        if case.flatten:
            mesh[names]._flatten()
        coord = tuple(mesh.get_coordinate())
        for index, (src, dst) in enumerate(pairs):
            x = seeded_tensor(src.shape, dtype=src.dtype, seed=case.seed * 1000 + index)
            dt = to_dtensor(x, mesh, src)
            with CommRecorder() as recorder:
                out = dt.redistribute(mesh, dst.placements)
            plan = redistribute_plan(src, dst, device_type="cpu", flattened=flattened)
            new_partial = any(
                isinstance(d, Partial) and s != d for s, d in zip(src.placements, dst.placements, strict=True)
            )
            out_layout, out_local = from_dtensor(out, dims=dst.dims)
            outcomes.append(
                Outcome(
                    label=f"mesh {case.shape}{' flattened' if case.flatten else ''} #{index}: {src} -> {dst}",
                    distributed_matches_shard=torch.equal(dt.to_local(), shard(x, src)[coord]),
                    layout_of_matches_src=layout_of(dt, dims=src.dims) == src,
                    full_tensor_matches=torch.equal(out.full_tensor(), x),
                    local_matches_shard=None if new_partial else torch.equal(out_local, shard(x, dst)[coord]),
                    layout_of_matches_dst=out_layout == dst,
                    planned=[
                        (s.collective, s.group_size, s.input_bytes) for s in plan if s.collective != "local"
                    ],
                    recorded=[(c.collective, c.group_size, c.input_bytes) for c in recorder.calls],
                    predicted_bytes=comm_bytes(src, dst, device_type="cpu", flattened=flattened),
                    recorded_bytes=recorder.total_bytes,
                )
            )
    return outcomes


@pytest.fixture(scope="module", params=sorted(CASES), ids=lambda w: f"world{w}")
def outcomes(request: pytest.FixtureRequest) -> list[list[Outcome]]:
    """Every rank's outcomes for every pair: one gloo launch per world size."""
    world_size = request.param
    return launch(_redistribute_cases, world_size, CASES[world_size], timeout_s=120)


def _failures(outcomes: list[list[Outcome]], check: str) -> list[str]:
    return [
        f"rank {rank}: {o.label}"
        for rank, per_rank in enumerate(outcomes)
        for o in per_rank
        if not getattr(o, check)
    ]


def test_to_dtensor_local_shards_equal_shard_simulation(outcomes: list[list[Outcome]]) -> None:
    bad = _failures(outcomes, "distributed_matches_shard") + _failures(outcomes, "layout_of_matches_src")
    assert not bad, "to_dtensor local != shard() or layout_of != src:\n" + "\n".join(bad[:10])


def test_dtensor_redistribute_reproduces_the_tensor(outcomes: list[list[Outcome]]) -> None:
    bad = _failures(outcomes, "full_tensor_matches") + _failures(outcomes, "layout_of_matches_dst")
    assert not bad, "full_tensor after redistribute != original:\n" + "\n".join(bad[:10])


def test_redistributed_local_shards_equal_shard_simulation(outcomes: list[list[Outcome]]) -> None:
    bad = [
        f"rank {rank}: {o.label}"
        for rank, per_rank in enumerate(outcomes)
        for o in per_rank
        if o.local_matches_shard is False
    ]
    assert not bad, "local shard after redistribute != shard(x, dst):\n" + "\n".join(bad[:10])


def test_plan_lists_the_collectives_dtensor_issues(outcomes: list[list[Outcome]]) -> None:
    bad = [
        f"rank {rank}: {o.label}\n  planned  {o.planned}\n  recorded {o.recorded}"
        for rank, per_rank in enumerate(outcomes)
        for o in per_rank
        if o.planned != o.recorded
    ]
    assert not bad, "planned collectives != recorded:\n" + "\n".join(bad[:10])


def test_predicted_comm_bytes_equal_recorded_bytes(outcomes: list[list[Outcome]]) -> None:
    bad = [
        f"rank {rank}: {o.label}: predicted {o.predicted_bytes} B, recorded {o.recorded_bytes} B"
        for rank, per_rank in enumerate(outcomes)
        for o in per_rank
        if o.predicted_bytes != o.recorded_bytes
    ]
    assert not bad, "comm_bytes != recorded bytes:\n" + "\n".join(bad[:10])
    moved = sum(o.recorded_bytes > 0 for o in outcomes[0])
    assert moved > len(outcomes[0]) // 3, (
        f"only {moved} of {len(outcomes[0])} pairs communicated: weak sample"
    )


def _raise_on_rank_one(rank: int, world_size: int) -> int:
    if rank == 1:
        raise ValueError("rank one is broken")
    torch.distributed.barrier()  # rank 0 blocks here until the launcher kills it
    return rank


def _sleep(rank: int, world_size: int, seconds: float) -> None:
    time.sleep(seconds)


def _rank_and_world(rank: int, world_size: int, offset: int) -> tuple[int, int, int]:
    return rank + offset, world_size, torch.distributed.get_world_size()


def test_launch_returns_each_rank_result_in_rank_order() -> None:
    assert launch(_rank_and_world, 3, 10) == [(10, 3, 3), (11, 3, 3), (12, 3, 3)]


def test_concurrent_launches_keep_their_groups_apart() -> None:
    # Each launch rendezvouses through its own file store; with a TCP port picked as "free a moment
    # ago", launches started together could meet in one store ("Gloo connectFullMesh failed").
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda k: launch(_rank_and_world, 2, 100 * k, num_threads=1), range(3)))
    assert results == [[(100 * k, 2, 2), (100 * k + 1, 2, 2)] for k in range(3)]


def test_launch_reraises_rank_exception_with_rank_and_traceback() -> None:
    with pytest.raises(LaunchError, match="rank 1 of 2") as info:
        launch(_raise_on_rank_one, 2, timeout_s=60)
    assert info.value.rank == 1
    assert "ValueError: rank one is broken" in info.value.remote_traceback
    assert "_raise_on_rank_one" in str(info.value)


def test_launch_timeout_kills_ranks_and_names_the_timeout() -> None:
    start = time.monotonic()
    with pytest.raises(LaunchTimeoutError, match=r"timed out after 1\.5 s"):
        launch(_sleep, 2, 60.0, timeout_s=1.5)
    assert time.monotonic() - start < 15, "launch must not wait for the sleeping ranks"


def test_fork_stays_safe_with_tqdms_monitor_thread_but_not_with_others():
    import threading

    from effcore.testing.distributed import start_method

    if start_method() != "fork":
        pytest.skip("an earlier test made fork unsafe for autograd in this process (see the next test)")
    for name, expected in (("tqdm_monitor", "fork"), ("worker", "forkserver")):
        stop = threading.Event()
        t = threading.Thread(target=stop.wait, name=name, daemon=True)
        t.start()
        try:
            assert start_method() == expected
        finally:
            stop.set()
            t.join()


def _backward_sum(rank: int, world: int) -> float:
    x = torch.full((3,), float(rank + 1), requires_grad=True)
    (x * x).sum().backward()
    return float(x.grad.sum())


def test_a_process_whose_autograd_does_not_survive_fork_uses_a_fork_server():
    # torch.export (fake tensors) before the process's first backward makes autograd start a device
    # thread pool; a forked child's backward then fails. A fresh process shows it deterministically.
    import subprocess
    import sys

    code = (
        "import torch\n"
        "class Double(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        return x * 2\n"
        "torch.export.export(Double(), (torch.ones(2),))\n"
        "y = torch.ones(2, requires_grad=True)\n"
        "(y * 3).sum().backward()\n"
        "from effcore.testing.distributed import start_method\n"
        "print(start_method())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "forkserver"


def test_launch_through_the_fork_server_finds_functions_of_test_modules(monkeypatch):
    from effcore.testing import distributed

    monkeypatch.setattr(distributed, "_autograd_survives_fork", lambda: False)
    assert distributed.start_method() == "forkserver"
    assert launch(_backward_sum, 2, timeout_s=120) == [6.0, 12.0]
