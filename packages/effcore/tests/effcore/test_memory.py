"""Tests for effcore.memory: process/allocator stats and the unique-storage tensor tracker."""

from __future__ import annotations

import gc

import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st
from torch import nn

from effcore.device import infer_device
from effcore.errors import EffmlError
from effcore.memory import (
    MemoryStats,
    TensorTracker,
    memory_stats,
    reset_peak,
    track_activations,
    track_training_state,
)

_MIB = 2**20


def _nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def test_memory_stats_on_cpu_reports_positive_rss_and_peak_at_least_allocated() -> None:
    stats = memory_stats("cpu")
    assert stats.source == "process-rss"
    assert stats.allocated > 0 and stats.reserved >= stats.allocated
    assert stats.peak_allocated >= stats.allocated


def test_memory_stats_on_cpu_sees_a_touched_allocation_and_reset_peak_lowers_the_peak() -> None:
    before = memory_stats("cpu")
    big = torch.ones(64 * _MIB // 4)  # written, hence resident
    during = memory_stats("cpu")
    assert during.allocated >= before.allocated + 48 * _MIB, (before, during)
    del big
    try:
        reset_peak("cpu")
    except EffmlError as err:
        pytest.skip(f"peak RSS cannot be reset here: {err}")
    after = memory_stats("cpu")
    assert after.peak_allocated < during.peak_allocated
    assert after.peak_allocated >= after.allocated


def test_tracker_counts_a_view_and_its_base_once() -> None:
    tracker = TensorTracker()
    base = torch.randn(10, 10)
    tracker.track("activations", [base, base[2:5], base.t(), base.view(-1)])
    assert tracker.bytes_by_category() == {"activations": 400}
    only_view = TensorTracker()
    view = base[:1]
    only_view.track("activations", view)  # a view pins its whole storage
    assert only_view.total() == 400


def test_tracker_storage_shared_between_categories_counts_for_the_first() -> None:
    tracker = TensorTracker()
    a, b = torch.zeros(8), torch.zeros(4, dtype=torch.float64)
    tracker.track("parameters", a)
    tracker.track("activations", [a[1:], b])
    tracker.track("activations", b)  # tracking twice is a no-op
    tracker.track("gradients", b)  # b was claimed by "activations" first
    assert tracker.bytes_by_category() == {"parameters": 32, "activations": 32, "gradients": 0}
    assert tracker.total() == 64


def test_tracker_freed_tensors_drop_out() -> None:
    tracker = TensorTracker()
    keep, temp = torch.zeros(16), torch.zeros(1000)
    tracker.track("x", [keep, temp])
    assert tracker.total() == 64 + 4000
    del temp
    gc.collect()
    assert tracker.bytes_by_category() == {"x": 64}
    stats = tracker.stats()
    assert stats.source == "tracker" and stats.allocated == 64 and stats.peak_allocated == 4064


def test_tracker_training_state_of_mlp_with_adam_after_one_step_matches_analytic_bytes() -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(5, 8)).square().mean().backward()
    opt.step()
    tracker = track_training_state(model, opt)
    params = list(model.parameters())
    param_bytes = _nbytes(*params)
    assert param_bytes == 4 * (8 * 16 + 16 + 16 * 4 + 4)
    # Adam: exp_avg and exp_avg_sq like each parameter, plus one scalar fp32 `step` per parameter.
    step_bytes = len(params) * 4
    assert tracker.bytes_by_category() == {
        "parameters": param_bytes,
        "gradients": param_bytes,
        "buffers": 0,
        "optimizer_state": 2 * param_bytes + step_bytes,
    }
    opt.zero_grad(set_to_none=True)
    gc.collect()
    assert tracker.bytes_by_category()["gradients"] == 0, "freed gradients still counted"


def test_track_activations_of_linear_relu_linear_equals_analytic_saved_bytes() -> None:
    batch, d_in, hidden, d_out = 6, 8, 32, 3
    model = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))
    x = torch.randn(batch, d_in)
    tracker = TensorTracker()
    with track_activations(tracker):
        y = model(x)
    # Saved for backward: x (first Linear, for its weight grad), the ReLU output (ReLU's mask and
    # the second Linear's input: one storage). Weights are saved as `weight.t()` views: excluded.
    assert tracker.bytes_by_category() == {"activations": 4 * batch * (d_in + hidden)}
    y.sum().backward()
    del y
    gc.collect()
    assert tracker.bytes_by_category() == {"activations": _nbytes(x)}, "freed activations still counted"


def test_track_activations_does_not_change_gradients() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(3, 4)
    ref = torch.autograd.grad(model(x).sum(), list(model.parameters()))
    with track_activations(TensorTracker(), category="acts") as tracker:
        out = model(x).sum()
    got = torch.autograd.grad(out, list(model.parameters()))
    assert all(torch.equal(r, g) for r, g in zip(ref, got, strict=True))
    assert "acts" in tracker.bytes_by_category()


def test_tracker_rejects_untrackable_objects() -> None:
    with pytest.raises(TypeError, match="cannot track object"):
        TensorTracker().track("x", object())


_VIEWS = ["self", "slice", "flat", "unsqueeze", "step", "last"]


@given(
    sizes=st.lists(st.integers(1, 64), min_size=1, max_size=4),
    dtypes=st.lists(
        st.sampled_from([torch.float32, torch.float16, torch.int64, torch.uint8]), min_size=4, max_size=4
    ),
    picks=st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from(_VIEWS), st.integers(0, 2)), min_size=1, max_size=12
    ),
    seed=st.integers(0, 2**31 - 1),
)
def test_tracker_total_equals_sum_of_unique_storages_for_random_view_graphs(
    sizes: list[int], dtypes: list[torch.dtype], picks: list[tuple[int, str, int]], seed: int
) -> None:
    note(f"sizes={sizes} dtypes={dtypes} picks={picks} seed={seed}")
    gen = torch.Generator().manual_seed(seed)
    bases = [torch.randn(n, generator=gen).to(dtypes[i]) for i, n in enumerate(sizes)]
    views = {
        "self": lambda t: t,
        "slice": lambda t: t[len(t) // 2 :],
        "flat": lambda t: t.view(1, -1).view(-1),
        "unsqueeze": lambda t: t.unsqueeze(0),
        "step": lambda t: t[::2],
        "last": lambda t: t[-1],
    }
    tracker = TensorTracker()
    tracked, first_category = [], {}
    for base_idx, view, category in picks:
        i = base_idx % len(bases)
        t = views[view](bases[i])
        tracked.append(t)
        tracker.track(f"c{category}", t)
        first_category.setdefault(i, f"c{category}")
    expected: dict[str, int] = {}
    for i, category in first_category.items():
        expected[category] = expected.get(category, 0) + _nbytes(bases[i])
    got = tracker.bytes_by_category()
    assert {k: v for k, v in got.items() if v} == expected
    assert tracker.total() == sum(_nbytes(bases[i]) for i in first_category)


@pytest.mark.gpu
def test_gpu_memory_stats_follow_the_caching_allocator() -> None:
    dev = infer_device("cuda")
    before = memory_stats(dev)
    assert isinstance(before, MemoryStats) and before.source == "cuda-allocator"
    big = torch.empty(64 * _MIB, dtype=torch.uint8, device=dev)
    during = memory_stats(dev)
    assert during.allocated >= before.allocated + 64 * _MIB
    assert during.reserved >= during.allocated and during.peak_allocated >= during.allocated
    del big
    reset_peak(dev)
    after = memory_stats(dev)
    assert after.peak_allocated == after.allocated < during.allocated


@pytest.mark.gpu
def test_gpu_tracker_counts_cuda_storages_like_cpu_ones() -> None:
    dev = infer_device("cuda")
    tracker = TensorTracker()
    base = torch.zeros(256, device=dev)
    tracker.track("parameters", [base, base[10:]])
    tracker.track("activations", torch.zeros(256))  # same size on the host: a different storage
    assert tracker.bytes_by_category() == {"parameters": 1024, "activations": 1024}


def test_residency_meter_counts_a_shared_storage_once_until_its_last_holder_releases() -> None:
    from effcore.memory import ResidencyMeter, storage_key

    x = torch.zeros(256)  # 1 KiB
    key, nbytes = storage_key(x)
    assert storage_key(x[10:20])[0] == key, "a view shares its base's storage key"
    meter = ResidencyMeter(base=100, record=True)
    meter.hold(key, nbytes, "kept")
    meter.hold(key, nbytes, "swapped")  # a second holder: no new bytes, the first category keeps them
    assert (meter.live, meter.by_category) == (100 + 1024, {"kept": 1024})
    meter.release(key, nbytes)
    assert meter.live == 100 + 1024 and meter.resident() == [key], "one holder left"
    meter.release(key, nbytes)
    assert (meter.live, meter.peak) == (100, 100 + 1024)
    assert [row for _, row in meter.trace] == [{"kept": 1024}, {"kept": 0}]


def test_saved_tensor_peak_is_exact_at_every_save_and_release() -> None:
    from effcore.memory import saved_tensor_peak

    w = nn.Parameter(torch.randn(64, 64))
    x = torch.randn(32, 64)
    with saved_tensor_peak() as meter:
        h = (x @ w).tanh()  # saves x (mm, w excepted) and tanh's output
        loss = (h @ w).sum()  # saves h again: same storage, counted once
    assert meter.peak == _nbytes(x, h)
    loss.backward()
    del h, loss
    gc.collect()
    assert meter.live == _nbytes(x), "a saved tensor counts until it is freed, not until backward used it"
    del x
    gc.collect()
    assert meter.live == 0 and meter.peak == 2 * 32 * 64 * 4
