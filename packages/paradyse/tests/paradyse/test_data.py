"""The dynamic-length stream: seeded lengths within bounds and multiples, contiguous real-text windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from effcore.errors import ConfigError
from paradyse.data import DISTRIBUTIONS, LengthSampler, TextStream, load_corpus


@given(dist=st.sampled_from(DISTRIBUTIONS), lo=st.integers(1, 500), span=st.integers(0, 5000),
       mult=st.sampled_from([1, 2, 4, 8]), seed=st.integers(0, 100))  # fmt: skip
def test_lengths_are_multiples_within_bounds_and_seeded(dist, lo, span, mult, seed):
    hi = lo + span + mult
    sampler = LengthSampler(distribution=dist, min_len=lo, max_len=hi, multiple=mult, seed=seed)
    a = sampler.sample(64)
    assert np.array_equal(a, sampler.sample(64))
    assert np.all(a % mult == 0) and np.all(a >= lo) and np.all(a <= hi)


def test_longtail_is_long_tailed():
    a = LengthSampler(min_len=64, max_len=65536, median=1024, multiple=4).sample(4000)
    assert np.median(a) < np.mean(a) < np.percentile(a, 90)
    assert a.max() > 16 * np.median(a)


def test_stream_windows_are_contiguous_and_shifted():
    corpus = torch.arange(1000) % 256
    stream = TextStream(
        corpus.to(torch.uint8), LengthSampler(min_len=8, max_len=64, multiple=4), steps=5, batch=2
    )
    for x, y in stream:
        assert x.shape == y.shape and x.shape[0] == 2 and x.shape[1] % 4 == 0
        assert torch.equal(x[:, 1:], y[:, :-1])


def test_bad_stream_settings_are_refused():
    with pytest.raises(ConfigError, match="unknown length distribution"):
        LengthSampler(distribution="zipf", min_len=1, max_len=8)
    with pytest.raises(ConfigError, match="fewer than max_len"):
        TextStream(torch.zeros(10, dtype=torch.uint8), LengthSampler(min_len=8, max_len=64), steps=1)
    with pytest.raises(ConfigError, match="applies to the longtail and bimodal"):
        LengthSampler(distribution="uniform", min_len=8, max_len=64, median=16)
    with pytest.raises(ConfigError, match="must be >= 1, got 0"):
        LengthSampler(min_len=8, max_len=64).sample(0)


def test_an_empty_corpus_is_refused(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        load_corpus(str(tmp_path / "empty.txt"))
