"""The fused EML-block tail (BN + LeakyReLU + dropout in one pass) equals the reference layers run one by
one: outputs, every gradient, running statistics, in training and in eval, for every mixture preset."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch.nn import functional as F

from tfdmnet.fused import FreqBlock, freq_bn_act_dropout
from tfdmnet.layers import FreqBatchNorm, FreqDropout, FreqLeakyReLU
from tfdmnet.models import build_model, get_preset

TOL = {"atol": 2e-5, "rtol": 2e-5}  # float32 layers
TOL64 = {"atol": 1e-9, "rtol": 1e-9}  # float64 networks
PRESETS = [
    ("lenet-tfdmnet", {}),
    ("lenet-cemnet", {}),
    ("vgg16-mixture", {"width": 0.125}),
    ("alexnet-mixture", {"width": 0.0625, "num_classes": 10}),
]


def _forbid(module: torch.nn.Module) -> None:
    def boom(*args, **kwargs):
        raise AssertionError(f"{type(module).__name__} ran one by one: the fused path was not taken")

    module.forward = boom


def _pair(name, kw, **eml):
    # float64: in float32 the paths' different rounding can flip a max-pool's argmax between two
    # near-equal candidates, which sends an upstream gradient elsewhere (a tie, not an error).
    torch.manual_seed(0)
    cfg = get_preset(name, **kw)
    fast = build_model(dataclasses.replace(cfg, eml=dataclasses.replace(cfg.eml, **eml))).double()
    # Random BN affine parameters: at zero bias, the imaginary parts of self-conjugate bins of a
    # Hermitian spectrum normalise to 0 +- rounding, where LeakyReLU's slope is a coin toss.
    with torch.no_grad():
        for bn in fast.modules():
            if isinstance(bn, FreqBatchNorm):
                for b in (bn.bn_re, bn.bn_im):
                    b.weight.uniform_(0.5, 1.5)
                    b.bias.uniform_(-0.5, 0.5)
    ref = copy.deepcopy(fast).set_fused(False)
    return fast, ref


def _step(model, x, y, seed):
    torch.manual_seed(seed)
    model.train()
    model.zero_grad()
    out = model(x)
    F.cross_entropy(out, y).backward()
    return out, {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("spectrum", ["full", "half"])
@pytest.mark.parametrize(("name", "kw"), PRESETS, ids=[p[0] for p in PRESETS])
def test_fused_network_matches_reference_layers_outputs_gradients_and_running_stats(name, kw, spectrum):
    fast, ref = _pair(name, kw, spectrum=spectrum)
    for block in fast.modules():
        if isinstance(block, FreqBlock):
            for child in list(block)[1:]:
                _forbid(child)
    cfg = fast.cfg
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, cfg.in_channels, cfg.image_size, cfg.image_size, generator=gen, dtype=torch.float64)
    y = torch.randint(0, cfg.num_classes, (3,), generator=gen)
    for seed in range(2):  # two steps: the second sees the first one's running statistics
        out_f, g_f = _step(fast, x, y, seed)
        out_r, g_r = _step(ref, x, y, seed)
        torch.testing.assert_close(out_f, out_r, **TOL64, msg=f"training output, step {seed}")
        for n in g_r:
            torch.testing.assert_close(g_f[n], g_r[n], **TOL64, msg=f"grad {n}, step {seed}")
    for (n, a), (_, b) in zip(fast.named_buffers(), ref.named_buffers(), strict=True):
        torch.testing.assert_close(a, b, **TOL64, msg=f"buffer {n}")
    with torch.no_grad():
        torch.testing.assert_close(fast.eval()(x), ref.eval()(x), **TOL64, msg="eval output")


@pytest.mark.parametrize(
    "eml", [{"nonlinearity": "spatial_relu"}, {"nonlinearity": "none"}, {"convention": "tfdmnet"}], ids=str
)
def test_blocks_with_other_options_match_reference(eml):
    fast, ref = _pair("lenet-tfdmnet", {}, **eml)
    x = torch.randn(2, 1, 28, 28, dtype=torch.float64)
    y = torch.tensor([1, 7])
    out_f, g_f = _step(fast, x, y, 0)
    out_r, g_r = _step(ref, x, y, 0)
    torch.testing.assert_close(out_f, out_r, **TOL64)
    for n in g_r:
        torch.testing.assert_close(g_f[n], g_r[n], **TOL64, msg=n)


@pytest.mark.parametrize("layout", ["strided", "freq_major", "contiguous"])
@pytest.mark.parametrize("mode", ["gaussian", "exact"])
@pytest.mark.parametrize("shape", [(1, 3, 5, 3), (4, 1, 2, 2), (7, 5, 6, 4)], ids=str)
def test_freq_bn_act_dropout_matches_the_layers_on_odd_shapes_and_every_layout(shape, mode, layout):
    gen = torch.Generator().manual_seed(0)
    n, c, h, w = shape
    if layout == "strided":
        x = torch.randn(n, c, h, 2 * w, dtype=torch.complex64, generator=gen)[..., ::2]
    elif layout == "freq_major":  # what the EML's batched GEMM hands over
        x = torch.randn(h, w, n, c, dtype=torch.complex64, generator=gen).permute(2, 3, 0, 1)
    else:
        x = torch.randn(*shape, dtype=torch.complex64, generator=gen)
    bn = FreqBatchNorm(c)
    with torch.no_grad():
        for b in (bn.bn_re, bn.bn_im):
            b.weight.uniform_(0.5, 1.5)
            b.bias.uniform_(-0.5, 0.5)
    act, drop = FreqLeakyReLU(0.2), FreqDropout(0.5, mode=mode)
    bn_ref = copy.deepcopy(bn)
    xf, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    torch.manual_seed(3)
    out_f = freq_bn_act_dropout(xf, bn, act, drop)
    torch.manual_seed(3)
    out_r = drop(act(bn_ref(xr)))
    torch.testing.assert_close(out_f, out_r, **TOL, msg="output")
    g = torch.randn(out_r.shape, dtype=out_r.dtype, generator=gen)
    (out_f * g.conj()).real.sum().backward()
    (out_r * g.conj()).real.sum().backward()
    torch.testing.assert_close(xf.grad, xr.grad, atol=1e-4, rtol=1e-3, msg="input gradient")
    for (n, a), (_, b) in zip(bn.named_parameters(), bn_ref.named_parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-3, msg=f"grad {n}")
    for (n, a), (_, b) in zip(bn.named_buffers(), bn_ref.named_buffers(), strict=True):
        torch.testing.assert_close(a, b, **TOL, msg=f"buffer {n}")


def test_single_value_per_channel_is_refused_as_batchnorm_refuses_it():
    block = FreqBlock(torch.nn.Identity(), FreqBatchNorm(2), FreqLeakyReLU(0.2))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        block(torch.randn(1, 2, 1, 1, dtype=torch.complex64))


def test_fused_block_keeps_the_sequential_state_dict():
    fast, ref = _pair("vgg16-mixture", {"width": 0.125})
    assert list(fast.state_dict()) == list(ref.state_dict())
    assert any(k.startswith("blocks.eml8.1.bn_re.") for k in fast.state_dict())
