"""The Evoformer block: chunked, checkpointed and DELTA-managed forms equal the plain one; the toolkit wrappers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from delta.api import Delta
from delta.evoformer import EvoformerConfig, EvoformerStack, evoformer_loss
from delta.toolkit import CHECKPOINT_POLICIES, MixedPrecision, chunk_map
from effcore.errors import ConfigError

CFG = EvoformerConfig(c_m=16, c_z=8, heads=2, head_dim=4, c_opm=4, sequences=5, blocks=2)
N = 11  # residues: prime, so chunks of 4 leave a ragged last one


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return EvoformerStack(CFG).inputs(N, torch.Generator().manual_seed(seed))


def _run(model: nn.Module, m: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    loss = evoformer_loss(model, m, z)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def test_chunked_evoformer_equals_unchunked():
    m, z = _inputs()
    plain = EvoformerStack(CFG)
    ref_out = plain(m, z)
    ref_loss, ref_grads = _run(plain, m, z)
    for chunk in (1, 4, N):
        chunked = EvoformerStack(CFG, chunk_size=chunk)
        for got, want in zip(chunked(m, z), ref_out, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        loss, grads = _run(chunked, m, z)
        torch.testing.assert_close(loss, ref_loss)
        for g, r in zip(grads, ref_grads, strict=True):
            torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("policy", CHECKPOINT_POLICIES)
def test_checkpointed_evoformer_gives_the_plain_gradients(policy):
    m, z = _inputs(1)
    _, ref = _run(EvoformerStack(CFG), m, z)
    _, got = _run(EvoformerStack(CFG, checkpoint=policy), m, z)
    for g, r in zip(got, ref, strict=True):
        assert torch.equal(g, r)


@pytest.mark.parametrize("policy", ["delta", "dtr", "checkpoint"])
def test_delta_managed_evoformer_gives_the_plain_gradients_within_budget(policy):
    m, z = _inputs(2)
    model = EvoformerStack(CFG)
    _, ref = _run(model, m, z)

    def step(m, z):
        evoformer_loss(model, m, z).backward()

    plain = Delta(model, policy="none", bandwidth=5e9).plan_for(step, m, z).projected.peak
    model.zero_grad(set_to_none=True)
    budget = None if policy == "checkpoint" else (plain + Delta(model, policy=policy, budget=2**40, bandwidth=5e9)
                                                  .plan_for(step, m, z).minimum) // 2  # fmt: skip
    model.zero_grad(set_to_none=True)
    delta = Delta(model, policy=policy, budget=budget, bandwidth=5e9)
    for _ in range(2):
        delta.step(step, m, z)
        got = [p.grad.clone() for p in model.parameters()]
        model.zero_grad(set_to_none=True)
        assert all(torch.equal(g, r) for g, r in zip(got, ref, strict=True))
    assert delta.last.meter.peak < plain
    if budget is not None:
        assert delta.last.meter.peak <= budget


def test_chunk_map_rejects_bad_chunks():
    x = torch.randn(4, 3)
    with pytest.raises(ConfigError, match="chunk_size must be at least 1"):
        chunk_map(lambda x: x, {"x": x}, dim=0, chunk_size=0)
    with pytest.raises(ConfigError, match="disagree on dim 0"):
        chunk_map(lambda x, y: x, {"x": x, "y": torch.randn(5, 3)}, dim=0, chunk_size=2)


def test_bf16_autocast_keeps_fp32_master_weights_and_gradients():
    m, z = _inputs(3)
    model = EvoformerStack(CFG)
    _, ref = _run(model, m, z)
    mp = MixedPrecision(precision="bf16")
    with mp.autocast():
        loss = evoformer_loss(model, m, z)
    mp.backward(loss)
    for p in model.parameters():
        assert p.dtype == torch.float32 and p.grad.dtype == torch.float32
    rel = sum((p.grad - r).norm() for p, r in zip(model.parameters(), ref, strict=True)) / sum(
        r.norm() for r in ref
    )
    assert rel < 0.05, f"bf16 gradients {rel:.3f} away from fp32"


def test_fp16_loss_scaling_skips_a_step_with_inf_gradients_and_lowers_the_scale():
    lin = nn.Linear(4, 1)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    mp = MixedPrecision(precision="fp16")
    before = lin.weight.detach().clone()
    scale = mp.scaler.get_scale()
    with mp.autocast():
        loss = lin(torch.full((2, 4), 1e30)).float().sum()  # overflows in fp16
    mp.backward(loss)
    mp.step(opt)
    assert torch.equal(lin.weight, before), "the step with inf gradients is skipped"
    assert mp.scaler.get_scale() < scale
    with pytest.raises(ConfigError, match="unknown precision"):
        MixedPrecision(precision="fp8")
