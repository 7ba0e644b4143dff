"""Time-model fits, profile files (tied to model and degree), calibration of the simulator."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from paradyse.config import MODELS, ModelConfig
from paradyse.costmodel import Profile, ProfileError, fit_time_model
from paradyse.data import LengthSampler
from paradyse.simulate import calibrate, gpu_hardware, layer_work, simulate


@given(c0=st.floats(1e-4, 1e-2), c1=st.floats(0, 1e-5), c2=st.floats(0, 1e-8))
def test_fit_recovers_a_nonnegative_quadratic(c0, c1, c2):
    s = np.array([128, 256, 512, 1024, 2048, 4096])
    m = fit_time_model("ring", s, c0 + c1 * s + c2 * s * s)
    assert all(c >= 0 for c in m.coef)
    np.testing.assert_allclose(m.predict(s), c0 + c1 * s + c2 * s * s, rtol=1e-6)
    assert m.cv_error < 1e-5


def test_fit_never_predicts_negative_times_when_extrapolating():
    s = np.array([256, 512, 1024, 2048])
    noisy = np.array([0.011, 0.010, 0.013, 0.019])  # noise that a free quadratic would bend down
    m = fit_time_model("megatron", s, noisy)
    assert np.all(m.predict(np.array([1, 10**6])) > 0)
    with pytest.raises(Exception, match="need >= 3 positive timings"):
        fit_time_model("megatron", [1, 2], [1.0, 2.0])


def _profile(cfg: ModelConfig, p: int = 2) -> Profile:
    pts = []
    for k, (a, b, c) in {"megatron": (1e-3, 1e-6, 1e-10), "ulysses": (3e-3, 8e-7, 1e-10),
                         "ring": (3e-3, 9e-7, 1.2e-10), "metp": (6e-3, 1e-6, 1.5e-10)}.items():  # fmt: skip
        for s in (256, 512, 1024, 2048):
            pts.append({"strategy": k, "seq_len": s, "layer_time_s": a + b * s + c * s * s, "iqr_s": 0.0,
                        "activation_bytes": 0, "activation_bytes_analytic": 0})  # fmt: skip
    return Profile(hardware="test-cpu | gloo", world_size=p, batch=1, model=cfg, points=pts)


def test_profile_round_trips_and_refuses_mismatches(tmp_path):
    cfg = MODELS["small"]
    path = _profile(cfg).save(tmp_path / "p.json")
    prof = Profile.load(path)
    assert prof.model == cfg and set(prof.time_models()) == {"megatron", "ulysses", "ring", "metp"}
    with pytest.raises(ProfileError, match="measured on 2 ranks, not 4"):
        prof.check(model=cfg, world_size=4)
    with pytest.raises(ProfileError, match="model differs in hidden"):
        prof.check(model=MODELS["bench"], world_size=2)
    with pytest.raises(ProfileError, match="not found"):
        Profile.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"format": "paradyse-profile/1", "points": []}))
    with pytest.raises(ProfileError, match="not a readable profile"):
        Profile.load(tmp_path / "bad.json")


def test_calibration_fits_its_own_work_model_exactly():
    # times generated from the work model with known constants are recovered with zero error
    cfg = MODELS["small"]
    prof = _profile(cfg)
    flops, bw, lat = 5e9, 2e9, 3e-4
    for pt in prof.points:
        w = layer_work(cfg, pt["strategy"], pt["seq_len"], 2)
        pt["layer_time_s"] = w.flops / flops + w.bytes / bw + w.collectives * lat
    hw, errors = calibrate(prof)
    assert hw.flops == pytest.approx(flops, rel=1e-6) and hw.latency == pytest.approx(lat, rel=1e-6)
    assert max(errors.values()) < 1e-6


def test_simulated_h100_shows_the_papers_qualitative_result():
    cfg = MODELS["paper-7b"]
    res = simulate(cfg, 32, gpu_hardware("H100"), [4096, 65536, 638976])
    short, _, longest = res["rows"]
    assert min(("megatron", "ulysses", "ring", "metp"), key=lambda k: short[f"{k}_s"]) == "megatron"
    assert all(longest[f"{k}_s"] is None for k in ("megatron", "ulysses", "ring"))
    assert longest["metp_s"] is not None and "metp" in longest["adaptive_plan"]
    assert longest["adaptive_s"] < longest["metp_s"]
    for k in ("megatron", "ulysses", "ring", "metp"):
        assert res["summary"][k]["speedup"] >= 1.0


def test_simulated_adaptive_plan_is_never_slower_in_strict_mode_and_the_report_counts_when_it_is():
    # the README's bimodal run: with the paper's 5 % hysteresis a kept plan can be up to 5 % slower
    cfg, hw = MODELS["paper-7b"], gpu_hardware("H100")
    lens = LengthSampler(distribution="bimodal", min_len=4096, max_len=638976, median=16384, multiple=32,
                         seed=0).sample(200)  # fmt: skip
    strict = simulate(cfg, 32, hw, lens)["summary"]["adaptive"]
    assert strict["slower_than_best_static"] == 0 and strict["worst_ratio_to_best_static"] <= 1 + 1e-12
    loose = simulate(cfg, 32, hw, lens, hysteresis=0.05)["summary"]["adaptive"]
    assert loose["slower_than_best_static"] > 0 and 1.0 < loose["worst_ratio_to_best_static"] < 1.05


def test_simulation_keeps_the_margin_free_for_every_method():
    cfg, hw = MODELS["paper-7b"], gpu_hardware("H100")
    s = 403744  # ulysses x32 needs 62 GiB here: it fits 80 GiB, not with 30 GiB kept free
    assert simulate(cfg, 32, hw, [s])["rows"][0]["ulysses_s"] is not None
    row = simulate(cfg, 32, hw, [s], margin=30 * 2**30)["rows"][0]
    assert row["ulysses_s"] is None and "metp" in row["adaptive_plan"] and "metp" in row["paradyse_plan"]


def test_profiling_refuses_zero_repeats_before_building_anything():
    from effcore.errors import ConfigError
    from paradyse.profile import run_profile

    with pytest.raises(ConfigError, match="need repeats >= 1"):
        run_profile(MODELS["tiny"], [8, 16, 24], repeats=0)
