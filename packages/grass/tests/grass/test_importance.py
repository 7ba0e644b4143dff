"""The MGN meter: per-layer RMS gradient from post-accumulate-grad hooks equals a hand computation."""

from __future__ import annotations

import math

import torch
from torch import nn

from grass.importance import GradNormMeter


def test_rms_per_layer_equals_hand_computation():
    torch.manual_seed(0)
    layers = [nn.Linear(3, 4), nn.Linear(4, 2)]
    meter = GradNormMeter([list(m.parameters()) for m in layers])
    x = torch.randn(5, 3)
    layers[1](layers[0](x).tanh()).square().sum().backward()
    rms = meter.take()
    for i, m in enumerate(layers):
        sq = sum(float(p.grad.double().square().sum()) for p in m.parameters())
        n = sum(p.numel() for p in m.parameters())
        # the meter sums float32 norms per parameter in float64: equal to ~1e-7 relative
        assert math.isclose(rms[i].item(), math.sqrt(sq / n), rel_tol=1e-6), f"layer {i}"


def test_frozen_layer_reports_nan_and_unarmed_backward_is_not_measured():
    layers = [nn.Linear(2, 2), nn.Linear(2, 2)]
    meter = GradNormMeter([list(m.parameters()) for m in layers])
    for p in layers[0].parameters():
        p.requires_grad_(False)
    layers[1](layers[0](torch.ones(1, 2))).sum().backward()
    rms = meter.take()
    assert math.isnan(rms[0]) and rms[1] > 0
    meter.armed = False
    layers[1](torch.ones(1, 2)).sum().backward()
    assert torch.isnan(meter.take()).all()


def test_with_accumulation_the_last_micro_batch_sees_the_step_gradient():
    torch.manual_seed(1)
    lin = nn.Linear(3, 1)
    meter = GradNormMeter([list(lin.parameters())])
    xs = torch.randn(2, 4, 3)
    meter.armed = False
    lin(xs[0]).sum().backward()
    meter.armed = True
    lin(xs[1]).sum().backward()
    total = torch.cat([p.grad.flatten() for p in lin.parameters()])
    assert abs(meter.take()[0].item() - float(total.double().square().mean().sqrt())) < 1e-7


def test_discard_drops_the_gradient_once_measured():
    lin = nn.Linear(2, 2)
    meter = GradNormMeter([list(lin.parameters())])
    meter.discard = True
    lin(torch.ones(1, 2)).sum().backward()
    assert all(p.grad is None for p in lin.parameters())
    assert meter.take()[0] > 0
