"""Memory by category of a training step equals analytic counts for Linear-ReLU-Linear with Adam."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from effcore.errors import ConfigError
from effcore.profiling import MemoryBreakdown, track_memory

FP32 = 4


def mlp_step(batch: int, d_in: int, hidden: int, d_out: int):
    model = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch, d_in, generator=torch.Generator().manual_seed(batch))

    def step() -> None:
        model(x).sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return model, opt, x, step


@settings(max_examples=10)
@given(batch=st.integers(1, 9), d_in=st.integers(1, 17), hidden=st.integers(1, 33), d_out=st.integers(1, 5))
def test_memory_categories_equal_analytic_counts_for_linear_relu_linear_with_adam(
    batch: int, d_in: int, hidden: int, d_out: int
) -> None:
    model, opt, x, step = mlp_step(batch, d_in, hidden, d_out)
    mem = track_memory(model, opt, step, inputs=[x])
    params = list(model.parameters())
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    assert mem.parameters == param_bytes, "parameters"
    assert mem.gradients == param_bytes, "one gradient per parameter element"
    # Adam keeps exp_avg and exp_avg_sq (2x the parameters) plus a float32 scalar `step` per tensor.
    assert mem.optimizer_state == 2 * param_bytes + FP32 * len(params), "optimizer state"
    # Held after forward: the ReLU output (saved by ReLU and by the second Linear: one storage) and the
    # model output; x was made outside and counts as `other`.
    assert mem.activations == (batch * hidden + batch * d_out) * FP32, "activations"
    assert mem.activations > 0
    assert mem.other >= x.numel() * FP32
    assert mem.peak >= mem.parameters + mem.gradients + mem.optimizer_state, "all three coexist after step"


def test_memory_breakdown_is_the_same_on_the_next_step() -> None:
    model, opt, x, step = mlp_step(4, 8, 16, 2)
    first = track_memory(model, opt, step, inputs=[x])
    second = track_memory(model, opt, step, inputs=[x])
    assert first == second
    assert set(first.to_dict()) == set(MemoryBreakdown.__dataclass_fields__)


def test_track_memory_needs_the_model_to_be_called() -> None:
    model, opt, x, _ = mlp_step(2, 3, 4, 1)
    with pytest.raises(ConfigError, match="never called the model"):
        track_memory(model, opt, lambda: model.forward(x).sum().backward())


def test_frozen_parameters_are_tracked_without_gradients() -> None:
    """Layer-wise fine-tuning freezes most of a model: MemTracker would hook every parameter's
    gradient (and a frozen one refuses a hook); only the trainable layer's gradient and state count."""
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    for p in model[0].parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(model[2].parameters(), lr=1e-3)
    x = torch.randn(3, 8)

    def step() -> None:
        model(x).sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    b = track_memory(model, opt, step, inputs=[x])
    trainable = (16 * 4 + 4) * FP32
    assert b.parameters == (8 * 16 + 16) * FP32 + trainable
    assert b.gradients == trainable
    assert b.optimizer_state >= 2 * trainable and b.optimizer_state_peak >= b.optimizer_state
    assert all(p.grad is None for p in model[0].parameters())
