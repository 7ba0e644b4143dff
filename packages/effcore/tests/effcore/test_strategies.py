"""The general strategies draw what they promise, reproducibly."""

from __future__ import annotations

import torch
from hypothesis import find, given
from hypothesis import strategies as st

from effcore.testing.strategies import dtypes, seeded_tensor, shapes, tensors


@given(shape=shapes(min_ndim=2, max_ndim=4, max_size=20))
def test_shapes_respect_their_bounds(shape):
    assert 2 <= len(shape) <= 4 and all(1 <= n <= 20 for n in shape)


@given(data=st.data(), shape=shapes(min_ndim=2, max_ndim=3), dtype=dtypes())
def test_tensors_have_the_drawn_shape_and_dtype_and_are_finite(data, shape, dtype):
    t = data.draw(tensors(shape=st.just(shape), dtype=st.just(dtype)))
    assert t.shape == shape and t.dtype == dtype
    assert torch.isfinite(t.float()).all()


def test_tensors_include_non_contiguous_views():
    found = find(tensors(shape=shapes(min_ndim=2, max_ndim=2, min_size=2)), lambda t: not t.is_contiguous())
    assert found.dim() == 2


def test_seeded_tensor_is_the_same_for_the_same_seed():
    assert torch.equal(seeded_tensor((3, 5), seed=7), seeded_tensor((3, 5), seed=7))
    assert not torch.equal(seeded_tensor((3, 5), seed=7), seeded_tensor((3, 5), seed=8))
