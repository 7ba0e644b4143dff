"""A forward under ``torch.inference_mode()`` must not break later training (issue 21): validation loops
and serving code run inference mode, then training resumes in the same process. Every mixture preset
(every frequency-domain layer type; spatial and free EML parametrisations; both spectrum layouts) runs
inference -> train -> inference -> train and must match, bit for bit, a copy that never saw inference mode."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch.nn import functional as F

from tfdmnet.models import build_model, get_preset

CASES = [
    ("lenet-tfdmnet", {}),  # spatial parametrisation
    ("lenet-cemnet", {}),  # free parametrisation (CEMNet)
    ("vgg16-mixture", {"width": 0.125}),
    ("alexnet-mixture", {"width": 0.0625, "num_classes": 10}),
]


def _train_step(model, opt, x, y, seed):
    torch.manual_seed(seed)  # the same dropout masks on both sides
    model.train()
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    opt.step()
    return grads


@pytest.mark.parametrize("spectrum", ["full", "half"])
@pytest.mark.parametrize(("name", "kw"), CASES, ids=[c[0] for c in CASES])
def test_inference_then_training_alternate_and_match_a_model_that_never_used_inference_mode(
    name, kw, spectrum
):
    torch.manual_seed(0)
    cfg = get_preset(name, **kw)
    ours = build_model(dataclasses.replace(cfg, eml=dataclasses.replace(cfg.eml, spectrum=spectrum)))
    ref = copy.deepcopy(ours)
    cfg = ours.cfg
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, cfg.in_channels, cfg.image_size, cfg.image_size, generator=gen)
    y = torch.randint(0, cfg.num_classes, (2,), generator=gen)
    opts = [torch.optim.SGD(m.parameters(), lr=0.01) for m in (ours, ref)]
    for round_ in range(2):
        with torch.inference_mode():
            seen = ours.eval()(x)
        with torch.no_grad():
            expected = ref.eval()(x)
        assert torch.equal(seen, expected), f"inference output differs in round {round_}"
        g_ours = _train_step(ours, opts[0], x, y, seed=round_)
        g_ref = _train_step(ref, opts[1], x, y, seed=round_)
        for a, b in zip(g_ours, g_ref, strict=True):
            assert torch.equal(a, b), f"gradients differ in round {round_}"
