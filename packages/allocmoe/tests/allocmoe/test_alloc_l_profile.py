"""Alloc-L sensitivity profiling: prefix cache == naive runs, resumable, tied to model and data."""

from __future__ import annotations

import math

import pytest
import torch

from allocmoe.alloc_l import SensitivityProfile, profile_sensitivity
from allocmoe.baselines import lexi_sensitivity
from allocmoe.evaluation import evaluate
from effcore.errors import ConfigError
from effcore.testing.tiny import tiny_model


def _blocks(seed=0, n=3, t=12):
    return torch.randint(3, 128, (n, t), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", ["qwen2_moe", "deepseek_v3"])
def test_prefix_cache_equals_naive_runs(family):
    m = tiny_model(family)
    cached = profile_sensitivity(m, _blocks(), batch_size=2)
    naive = profile_sensitivity(m, _blocks(), batch_size=2, prefix_cache=False)
    assert cached.complete and naive.complete
    for row_c, row_n in zip(cached.S, naive.S, strict=True):
        assert row_c == pytest.approx(row_n, rel=1e-5)
    assert all(math.isfinite(v) and v > 1 for row in cached.S for v in row)
    # the isolated protocol chains: layer i at top-1 (deeper at 1) is the same model as layer i-1 at
    # K_orig (deeper at 1), so S[i][1] == S[i-1][K_orig]; and the last layer at K_orig is the full model
    for i in range(1, len(cached.S)):
        assert cached.S[i][0] == pytest.approx(cached.S[i - 1][-1], rel=1e-5)
    full = evaluate(m, _blocks(), batch_size=2).perplexity
    assert cached.S[-1][-1] == pytest.approx(full, rel=1e-5)


def test_profile_resumes_after_an_interruption(tmp_path):
    m = tiny_model("mixtral")
    out = tmp_path / "p.json"
    calls = []

    def stop_after_two(done, total):
        calls.append(done)
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        profile_sensitivity(m, _blocks(), out=out, progress=stop_after_two)
    partial = SensitivityProfile.load(out)
    assert partial.done == 2 and not partial.complete
    resumed = profile_sensitivity(m, _blocks(), out=out, progress=lambda d, t: calls.append(d))
    fresh = profile_sensitivity(m, _blocks())
    assert resumed.complete
    for a, b in zip(resumed.S, fresh.S, strict=True):
        assert a == pytest.approx(b, rel=1e-6)
    assert calls[-1] == 4 and 2 in calls


def test_profile_refuses_another_model_or_calibration_set(tmp_path):
    out = tmp_path / "p.json"
    a, b = tiny_model("olmoe", seed=0), tiny_model("olmoe", seed=1)
    prof = profile_sensitivity(a, _blocks(), out=out)
    with pytest.raises(ConfigError, match="another model or calibration set"):
        profile_sensitivity(b, _blocks(), out=out)
    with pytest.raises(ConfigError, match="another model or calibration set"):
        profile_sensitivity(a, _blocks(seed=5), out=out)
    with pytest.raises(ConfigError, match="made for model"):
        prof.check_model(b)
    prof.check_model(a)
    budget = SensitivityProfile.load(out).allocate(3, k_base=1)
    assert budget.total <= 3 and budget.k_orig == 2


def test_incomplete_or_malformed_profiles_are_clear_errors(tmp_path):
    p = SensitivityProfile("m", "c", 2, 2, [[1.0, None], [2.0, 1.0]])
    with pytest.raises(ConfigError, match=r"incomplete \(3/4"):
        p.allocate(3)
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "nope"}')
    with pytest.raises(ConfigError, match="not an allocmoe sensitivity profile"):
        SensitivityProfile.load(bad)


def test_lexi_table_shape_and_zero_at_full_k():
    m = tiny_model("qwen3_moe")
    table = lexi_sensitivity(m, tokens=32)
    assert len(table) == 2 and all(len(r) == 2 for r in table)
    assert all(r[-1] == pytest.approx(0.0, abs=1e-6) and r[0] > 0 for r in table)
