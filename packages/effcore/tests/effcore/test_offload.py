"""Tests for effcore.offload: exact round trips, ordering, host budget, buffer reuse, CUDA overlap."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st

from effcore.device import cuda_available, infer_device
from effcore.errors import ConfigError
from effcore.offload import CopyEvent, CopyStream, HostOffloader, pinned_empty, pinned_empty_like

_DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.complex64,
    torch.int64,
    torch.int32,
    torch.int8,
    torch.uint8,
    torch.bool,
]


def _make(shape: tuple[int, ...], dtype: torch.dtype, seed: int, device: torch.device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point or dtype.is_complex:
        t = torch.randn(shape, generator=gen, dtype=dtype)
    elif dtype == torch.bool:
        t = torch.randint(0, 2, shape, generator=gen).bool()
    else:
        t = torch.randint(-100 if dtype.is_signed else 0, 100, shape, generator=gen, dtype=dtype)
    return t.to(device)


def test_offload_then_get_returns_equal_independent_tensor(device: torch.device) -> None:
    off = HostOffloader(device)
    src = _make((33, 17), torch.float32, 0, device)
    expected = src.clone()
    off.offload("w", src)
    src.mul_(3.0).add_(1.0)  # later in-place changes to the source must not reach the offloaded copy
    out = off.get("w")
    assert out.device == device
    assert torch.equal(out, expected), "round trip is not exact"
    assert out.data_ptr() != src.data_ptr(), "get() returned the source's memory"
    out.zero_()
    assert torch.equal(off.get("w"), expected), "get() returned the host buffer's memory"


def test_offload_of_non_contiguous_view_returns_contiguous_equal_tensor(device: torch.device) -> None:
    off = HostOffloader(device)
    src = _make((8, 12), torch.float16, 1, device).t()[::2]
    off.offload("v", src)
    out = off.get("v")
    assert out.is_contiguous() and out.shape == src.shape and out.dtype == src.dtype
    assert torch.equal(out, src)


@given(
    shape=st.lists(st.integers(0, 7), min_size=0, max_size=3),
    dtype=st.sampled_from(_DTYPES),
    seed=st.integers(0, 2**31 - 1),
    transpose=st.booleans(),
)
def test_offload_roundtrip_is_exact_for_random_shapes_and_dtypes(
    shape: list[int], dtype: torch.dtype, seed: int, transpose: bool
) -> None:
    note(f"shape={shape} dtype={dtype} seed={seed} transpose={transpose}")
    device = infer_device()
    src = _make(tuple(shape), dtype, seed, device)
    if transpose and src.dim() >= 2:
        src = src.transpose(0, -1)
    expected = src.clone()
    off = HostOffloader(device)
    off.offload("t", src)
    src.zero_()
    out = off.get("t")
    assert out.dtype == expected.dtype and out.shape == expected.shape
    assert torch.equal(out, expected), "offload round trip changed values"
    assert off.host_bytes == expected.numel() * expected.element_size()


def test_prefetch_then_get_returns_the_prefetched_copy(device: torch.device) -> None:
    off = HostOffloader(device)
    src = _make((64,), torch.float32, 2, device)
    off.offload("a", src)
    first = off.prefetch("a")
    assert off.prefetch("a") is first, "a pending prefetch should not start a second copy"
    out = off.get("a")
    first.synchronize()
    assert first.done()
    assert torch.equal(out, src)
    # get() handed the prefetched copy over: the next get starts a fresh, independent copy.
    again = off.get("a")
    assert again.data_ptr() != out.data_ptr() and torch.equal(again, src)


def test_get_without_prefetch_loads_on_demand(device: torch.device) -> None:
    off = HostOffloader(device)
    srcs = {f"layer{i}": _make((5, i + 1), torch.float32, i, device) for i in range(4)}
    for key, t in srcs.items():
        off.offload(key, t)
    # Layer-wise order: prefetch the next layer while "using" the current one.
    off.prefetch("layer0")
    for i in range(4):
        if i + 1 < 4:
            off.prefetch(f"layer{i + 1}")
        assert torch.equal(off.get(f"layer{i}"), srcs[f"layer{i}"])
    off.synchronize()


def test_reoffload_replaces_value_and_drop_forgets_key(device: torch.device) -> None:
    off = HostOffloader(device)
    off.offload("k", torch.zeros(4, device=device))
    off.prefetch("k")  # a pending prefetch of the old value must not leak into the new one
    off.offload("k", torch.ones(4, device=device))
    assert torch.equal(off.get("k"), torch.ones(4, device=device))
    off.drop("k")
    assert "k" not in off and len(off) == 0
    with pytest.raises(KeyError, match="'k' was not offloaded"):
        off.get("k")


def test_max_host_bytes_exceeded_raises_config_error_naming_the_budget() -> None:
    off = HostOffloader("cpu", max_host_bytes=1000)
    off.offload("a", torch.zeros(100, dtype=torch.float32))  # 400 B
    off.offload("b", torch.zeros(100, dtype=torch.float32))  # 800 B held
    with pytest.raises(ConfigError, match=r"max_host_bytes=1000") as info:
        off.offload("c", torch.zeros(100, dtype=torch.float32))
    assert "400 bytes" in str(info.value) and "800 bytes already held" in str(info.value)
    assert "c" not in off and off.host_bytes == 800


def test_pooled_buffers_are_freed_before_the_budget_is_declared_exceeded() -> None:
    off = HostOffloader("cpu", max_host_bytes=1000)
    off.offload("a", torch.zeros(100, dtype=torch.float32))
    off.drop("a")  # 400 B idle in the pool
    off.offload("b", torch.zeros(200, dtype=torch.float32))  # 800 B fits only after freeing the pool
    assert off.host_bytes == 800
    assert off.trim() == 0


def test_negative_max_host_bytes_is_rejected() -> None:
    with pytest.raises(ConfigError, match="max_host_bytes must be >= 0"):
        HostOffloader("cpu", max_host_bytes=-1)


def test_host_buffers_are_reused_for_same_shape_keys() -> None:
    off = HostOffloader("cpu")
    src = torch.randn(16, 8)
    off.offload("a", src)
    assert torch.equal(off.host("a"), src)
    ptr = off.host("a").data_ptr()
    off.offload("a", torch.randn(16, 8))  # same key again: same buffer
    assert off.host("a").data_ptr() == ptr
    off.drop("a")
    off.offload("b", torch.randn(16, 8))  # another key of the same shape takes the pooled buffer
    assert off.host("b").data_ptr() == ptr
    assert off.host_bytes == 16 * 8 * 4
    off.drop("b")
    assert off.trim() == 16 * 8 * 4 and off.host_bytes == 0


def test_offload_rejects_a_tensor_on_another_device() -> None:
    off = HostOffloader("cpu")
    with pytest.raises(ConfigError, match="tensor is on meta"):
        off.offload("m", torch.empty(3, device="meta"))


def test_copy_stream_and_copy_event_are_noops_on_cpu() -> None:
    stream = CopyStream("cpu")
    assert stream.stream is None
    with stream as s, s:  # re-entrant
        event = stream.record()
    assert isinstance(event, CopyEvent) and event.query()
    event.wait()
    event.synchronize()
    stream.wait_for(event)
    stream.wait_current()
    stream.synchronize()


def test_pinned_buffers_are_pinned_exactly_when_cuda_is_present() -> None:
    like = torch.randn(3, 5).t()
    buf = pinned_empty_like(like)
    assert buf.shape == like.shape and buf.dtype == like.dtype and buf.is_contiguous()
    assert buf.device.type == "cpu" and buf.is_pinned() == cuda_available()
    assert not pinned_empty((2, 2), torch.int8, pin=False).is_pinned()


@pytest.mark.gpu
def test_gpu_offload_on_side_stream_during_matmul_is_exact() -> None:
    dev = infer_device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    a = torch.randn(4096, 4096, device=dev, generator=gen)
    b = torch.randn(4096, 4096, device=dev, generator=gen)
    off = HostOffloader(dev)
    assert off.stream.stream is not None and off.stream.stream != torch.cuda.current_stream(dev)
    src = a @ b  # still running on the default stream when offload() queues the copy
    expected = src.clone()
    handle = off.offload("x", src)
    del src  # record_stream: the allocator must not give this block away before the copy ran
    scribble = torch.full((4096, 4096), float("nan"), device=dev)
    busy = a @ b  # default-stream compute overlapping the side-stream copy
    off.prefetch("x")
    out = off.get("x")
    handle.synchronize()
    assert torch.equal(out, expected), "side-stream copy read memory before/after the matmul finished"
    assert off.host("x").is_pinned()
    del scribble, busy


@pytest.mark.gpu
def test_gpu_prefetch_overlaps_compute_and_get_orders_the_consumer() -> None:
    dev = infer_device("cuda")
    gen = torch.Generator(device=dev).manual_seed(1)
    layers = [torch.randn(2048, 2048, device=dev, generator=gen) for _ in range(4)]
    x = torch.randn(2048, 2048, device=dev, generator=gen)
    ref = x
    for w in layers:
        ref = ref @ w
    off = HostOffloader(dev)
    for i, w in enumerate(layers):
        off.offload(f"w{i}", w)
    layers_cpu = [w.cpu() for w in layers]
    del layers, w
    off.prefetch("w0")
    y = x
    for i in range(4):
        if i + 1 < 4:
            off.prefetch(f"w{i + 1}")  # host->device copy while layer i computes
        w = off.get(f"w{i}")
        assert torch.equal(w.cpu(), layers_cpu[i])
        y = y @ w
    torch.cuda.synchronize(dev)
    assert torch.equal(y, ref), "offloaded weights changed the layer-wise result"


def test_prefetched_bytes_counts_device_copies_until_taken(device: torch.device) -> None:
    off = HostOffloader(device)
    off.offload("a", torch.ones(10, device=device))
    off.offload("b", torch.ones(3, dtype=torch.float64, device=device))
    assert off.prefetched_bytes() == 0
    off.prefetch("a")
    off.prefetch("b")
    assert off.prefetched_bytes() == 10 * 4 + 3 * 8
    off.get("a")
    assert off.prefetched_bytes() == 3 * 8
    off.drop("b")
    assert off.prefetched_bytes() == 0
