"""Samplers: GRASS draws gamma distinct layers from positive probabilities summing to 1, probes
first, refreshes only the active layers' MGN by EMA; LISA, BAdam and Static GRASS as specified."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st

from effcore.errors import ConfigError
from grass.sampler import BlockCycleSampler, GrassSampler, GrassSettings, UniformSampler


def _nan_except(values: torch.Tensor, active: tuple[int, ...]) -> torch.Tensor:
    out = torch.full_like(values, float("nan"))
    out[list(active)] = values[list(active)]
    return out


@given(
    num_layers=st.integers(1, 40),
    data=st.data(),
    seed=st.integers(0, 2**31 - 1),
    tau=st.floats(0.05, 10.0),
    normalize=st.booleans(),
)
def test_grass_samples_gamma_distinct_layers_from_a_distribution(num_layers, data, seed, tau, normalize):
    gamma = data.draw(st.integers(1, num_layers), label="gamma")
    gen = torch.Generator().manual_seed(seed)
    settings = GrassSettings(
        gamma=gamma, probe_steps=2, sample_period=3, update_period=2, tau=tau, normalize=normalize
    )
    sampler = GrassSampler(num_layers, settings, seed=seed)
    for step in range(12):
        active = sampler.active(step)
        rms = torch.rand(num_layers, generator=gen, dtype=torch.float64) * 10 ** torch.randint(
            -6, 1, (1,), generator=gen
        )
        if step < 2:
            assert active is None, "probing: every layer computes, nothing is updated"
            sampler.observe(step, rms)
            continue
        note(f"step {step}: active {active}")
        assert len(active) == gamma and len(set(active)) == gamma
        assert all(0 <= i < num_layers for i in active) and list(active) == sorted(active)
        p = sampler.probabilities()
        assert bool((p > 0).all()), "every layer keeps a chance to be sampled"
        assert math.isclose(float(p.sum()), 1.0, rel_tol=1e-9)
        sampler.observe(step, _nan_except(rms, active))


def test_mgn_after_probing_is_the_mean_rms_and_ema_touches_only_active_layers():
    s = GrassSettings(gamma=1, probe_steps=2, sample_period=10, update_period=2, alpha=0.25)
    sampler = GrassSampler(3, s, seed=0)
    sampler.observe(0, torch.tensor([1.0, 2.0, 3.0]))
    sampler.observe(1, torch.tensor([3.0, 4.0, 5.0]))
    assert sampler.mgn.tolist() == [2.0, 3.0, 4.0]
    (layer,) = sampler.active(2)
    frozen = [i for i in range(3) if i != layer]
    before = sampler.mgn.clone()
    for step, value in ((2, 10.0), (3, 20.0)):
        rms = torch.full((3,), float("nan"))
        rms[layer] = value
        sampler.observe(step, rms)
    assert sampler.mgn[layer] == pytest.approx(0.25 * 15.0 + 0.75 * before[layer])
    assert torch.equal(sampler.mgn[frozen], before[frozen]), "frozen layers keep their last MGN"


def test_static_grass_freezes_probabilities_after_probing():
    s = GrassSettings(gamma=1, probe_steps=1, sample_period=1, update_period=1, adaptive=False)
    sampler = GrassSampler(4, s, seed=0)
    sampler.observe(0, torch.tensor([1.0, 2.0, 3.0, 4.0]))
    p = sampler.probabilities().clone()
    for step in range(1, 6):
        active = sampler.active(step)
        sampler.observe(step, _nan_except(torch.full((4,), 100.0), active))
    assert torch.equal(sampler.probabilities(), p)


def test_larger_gradients_are_sampled_more_often():
    s = GrassSettings(gamma=1, probe_steps=1, sample_period=1, update_period=10**6, tau=0.25)
    sampler = GrassSampler(4, s, seed=0)
    sampler.observe(0, torch.tensor([0.1, 0.1, 0.1, 1.0]))
    counts = [0] * 4
    for step in range(1, 400):
        counts[sampler.active(step)[0]] += 1
    assert counts[3] > 300


def test_lisa_is_uniform_and_badam_cycles_blocks_from_the_top():
    lisa = UniformSampler(6, 2, 5, seed=1)
    assert lisa.active(0) == lisa.active(4) and len(lisa.active(0)) == 2
    counts = [0] * 6
    for step in range(0, 3000, 5):
        for i in lisa.active(step):
            counts[i] += 1
    assert min(counts) > 150
    badam = BlockCycleSampler(5, 2, 3)
    assert [badam.active(s) for s in (0, 3, 6, 9)] == [(4,), (2, 3), (0, 1), (4,)]


@pytest.mark.parametrize("gamma", [0, -1, 5])
def test_gamma_outside_one_to_the_layer_count_is_refused(gamma):
    with pytest.raises(ConfigError, match="choose --gamma between 1 and 4"):
        GrassSampler(4, GrassSettings(gamma=gamma))


def test_sampler_state_round_trip_continues_the_same_draws():
    s = GrassSettings(gamma=2, probe_steps=1, sample_period=1, update_period=1)
    a = GrassSampler(8, s, seed=3)
    a.observe(0, torch.arange(1.0, 9.0))
    for step in range(1, 4):
        a.observe(step, _nan_except(torch.arange(1.0, 9.0), a.active(step)))
    b = GrassSampler(8, s, seed=99)
    b.load_state_dict(a.state_dict())
    assert [a.active(t) for t in range(4, 10)] == [b.active(t) for t in range(4, 10)]
