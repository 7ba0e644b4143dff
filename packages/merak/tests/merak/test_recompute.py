"""Recomputation (plain and ahead of backward) gives the exact gradients of the plain forward."""

from __future__ import annotations

import pytest
import torch

from merak.recompute import Recomputer


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Dropout(0.3), torch.nn.Linear(16, 8)
    )


@pytest.mark.parametrize("ahead", [False, True])
@pytest.mark.parametrize("input_needs_grad", [False, True])
def test_recomputed_gradients_are_bit_identical(ahead, input_needs_grad):
    net = _net().train()
    x = torch.randn(4, 8, requires_grad=input_needs_grad)
    torch.manual_seed(7)
    net(x).square().sum().backward()
    ref = [p.grad.clone() for p in net.parameters()] + ([x.grad.clone()] if input_needs_grad else [])
    net.zero_grad()
    x.grad = None
    rec = Recomputer()
    rec.microbatch = 3
    torch.manual_seed(7)
    out = rec.run(net, x)
    torch.randn(100)  # the RNG moves on between forward and recompute; dropout must still replay
    if ahead:
        assert rec.recompute(3) == 1
    out.square().sum().backward()
    got = [p.grad for p in net.parameters()] + ([x.grad] if input_needs_grad else [])
    for a, b in zip(got, ref, strict=True):
        assert torch.equal(a, b)


def test_without_grad_the_segment_just_runs():
    rec = Recomputer()
    with torch.no_grad():
        rec.run(_net(), torch.randn(2, 8))
    assert rec.recompute(None) == 0
