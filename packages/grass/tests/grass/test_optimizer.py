"""LayerwiseAdamW: equals torch AdamW bit for bit with every layer active; frozen layers get no
gradient and no update; offloaded state comes back bit for bit; reset drops it; checkpoints round-trip."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from effcore.errors import ConfigError
from grass.optimizer import OFFLOAD_MODES, LayerwiseAdamW


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3), nn.Tanh(), nn.Linear(3, 2))


def _units(net: nn.Sequential) -> dict[str, list[nn.Parameter]]:
    return {f"layer{i}": list(net[i].parameters()) for i in (0, 2, 4)}


def _loss(net: nn.Module, seed: int) -> torch.Tensor:
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(seed))
    return net(x).square().mean()


@given(
    offload=st.sampled_from(OFFLOAD_MODES),
    weight_decay=st.sampled_from([0.0, 0.1]),
    lr=st.sampled_from([1e-3, 3e-2]),
    steps=st.integers(1, 5),
    seed=st.integers(0, 1000),
)
@settings(max_examples=25)
def test_with_every_layer_active_it_equals_torch_adamw_bitwise(offload, weight_decay, lr, steps, seed):
    ref, ours = _net(seed), _net(seed)
    opt_ref = torch.optim.AdamW(ref.parameters(), lr=lr, weight_decay=weight_decay)
    opt = LayerwiseAdamW(_units(ours), lr=lr, weight_decay=weight_decay, offload=offload)
    for t in range(steps):
        for net, o in ((ref, opt_ref), (ours, opt)):
            o.zero_grad()
            _loss(net, t).backward()
            o.step()
    for (name, a), b in zip(ref.named_parameters(), ours.parameters(), strict=True):
        assert torch.equal(a, b), f"{name} differs after {steps} steps ({offload})"


def test_frozen_layers_get_no_gradient_and_no_update():
    net = _net()
    opt = LayerwiseAdamW(_units(net), lr=0.1, weight_decay=0.5, offload="inactive")
    opt.set_active(["layer2"])
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    for t in range(3):
        opt.zero_grad()
        _loss(net, t).backward()
        assert all(p.grad is None for i in (0, 4) for p in net[i].parameters()), (
            "a frozen layer got a gradient"
        )
        opt.step()
    for n, p in net.named_parameters():
        changed = not torch.equal(before[n], p)
        assert changed == n.startswith("2."), f"{n}: changed={changed}"


def test_offloaded_state_returns_bit_for_bit_and_resumes_the_moments():
    net = _net()
    opt = LayerwiseAdamW(_units(net), lr=0.01, offload="inactive")
    opt.set_active(["layer0", "layer2", "layer4"])
    _loss(net, 0).backward()
    opt.step()
    saved = {k: v.clone() for k, v in opt._flat.items()}
    opt.set_active(["layer4"])
    assert set(opt._flat) == {"layer4"} and "layer0" in opt.offloader, "deactivated state went to the host"
    assert not any(p in opt.state for p in net[0].parameters())
    opt.set_active(["layer0", "layer4"])
    assert torch.equal(opt._flat["layer0"], saved["layer0"]), "the round trip is not exact"
    assert opt.state[net[0].weight]["step"].item() == 1.0, "the moments resume, not restart"


def test_reset_on_switch_restarts_the_moments():
    net = _net()
    opt = LayerwiseAdamW(_units(net), lr=0.01, offload="none", on_switch="reset")
    _loss(net, 0).backward()
    opt.step()
    opt.set_active(["layer4"])
    opt.set_active(["layer0", "layer4"])
    opt.zero_grad()
    _loss(net, 1).backward()
    opt.step()
    assert opt.state[net[0].weight]["step"].item() == 1.0
    assert opt.state[net[4].weight]["step"].item() == 2.0


def test_layerwise_offload_keeps_at_most_two_units_on_the_device():
    net = _net()
    opt = LayerwiseAdamW(_units(net), offload="layerwise")
    for t in range(2):
        opt.zero_grad()
        _loss(net, t).backward()
        opt.step()
    assert not opt._flat, "after the step every unit's state is on the host"
    largest = sorted((2 * sum(p.numel() for p in ps) * 4 for ps in _units(net).values()), reverse=True)
    assert opt.stats.peak_device_bytes <= largest[0] + largest[1]
    assert opt.stats.to_host_bytes > 0 and opt.stats.to_device_bytes > 0


@pytest.mark.parametrize("offload", OFFLOAD_MODES)
def test_state_dict_round_trip_continues_identically(offload):
    a, b = _net(), _net()
    opt_a = LayerwiseAdamW(_units(a), lr=0.01, offload=offload)
    for t in range(2):
        opt_a.set_active(["layer0", "layer4"] if t else ["layer2", "layer4"])
        opt_a.zero_grad()
        _loss(a, t).backward()
        opt_a.step()
    b.load_state_dict(a.state_dict())
    opt_b = LayerwiseAdamW(_units(b), lr=0.5, offload=offload)
    opt_b.load_state_dict(opt_a.state_dict())
    for net, opt in ((a, opt_a), (b, opt_b)):
        opt.set_active(["layer2", "layer4"])
        opt.zero_grad()
        _loss(net, 5).backward()
        opt.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="unknown offload mode"):
        LayerwiseAdamW(_units(_net()), offload="disk")
    with pytest.raises(ConfigError, match="unknown units"):
        LayerwiseAdamW(_units(_net())).set_active(["layer9"])
