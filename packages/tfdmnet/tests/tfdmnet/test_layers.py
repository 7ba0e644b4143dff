"""Frequency-domain BN, dropout, nonlinearities, the EML's cache, bias and input checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from effcore.errors import ConfigError
from effcore.testing.tolerances import assert_close
from tfdmnet.layers import (
    EML,
    ComplexHead,
    FreqBatchNorm,
    FreqDropout,
    FreqLeakyReLU,
    FreqSpatialReLU,
    ToFreq,
    ToSpatial,
)
from tfdmnet.spectral import to_freq, to_spatial


def _spectrum(n=8, c=3, h=6, w=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return to_freq(torch.randn(n, c, h, w, generator=g))


def test_freq_batchnorm_standardises_real_and_imaginary_parts_separately():
    x = _spectrum() * 5 + 3
    y = FreqBatchNorm(3).train()(x)
    for part, name in ((y.real, "real"), (y.imag, "imag")):
        mean = part.mean(dim=(0, 2, 3))
        var = part.var(dim=(0, 2, 3), unbiased=False)
        assert_close(mean, torch.zeros(3), label=f"{name} mean", scale=10)
        assert_close(var, torch.ones(3), label=f"{name} variance", scale=1e2)


def test_freq_leaky_relu_acts_on_each_part():
    x = torch.complex(torch.tensor([-1.0, 2.0]), torch.tensor([3.0, -4.0]))
    y = FreqLeakyReLU(0.2)(x)
    assert torch.equal(y.real, torch.tensor([-0.2, 2.0])) and torch.equal(y.imag, torch.tensor([3.0, -0.8]))


def test_spatial_relu_is_relu_between_transforms():
    x = torch.randn(2, 3, 5, 7)
    y = to_spatial(FreqSpatialReLU((5, 7))(to_freq(x)), (5, 7))
    assert_close(y, F.relu(x), label="ifft -> relu -> fft")


@pytest.mark.parametrize("mode", ["gaussian", "exact"])
def test_freq_dropout_is_the_identity_in_eval_mode(mode):
    drop = FreqDropout(0.5, mode=mode, relu_noise=0.1).eval()
    x = _spectrum()
    assert torch.equal(drop(x), x) and torch.equal(drop(x), drop(x))


def test_gaussian_dropout_multiplies_by_n1_p_over_2_noise():
    drop = FreqDropout(0.4).train()
    x = torch.complex(torch.ones(200_000), torch.ones(200_000))
    torch.manual_seed(0)
    y = drop(x)
    for part in (y.real, y.imag):
        assert abs(part.mean().item() - 1.0) < 0.005
        assert abs(part.std().item() - 0.2) < 0.005


def test_exact_dropout_drops_one_part_per_call():
    drop = FreqDropout(0.5, mode="exact").train()
    x = torch.complex(torch.ones(10_000), torch.ones(10_000))
    torch.manual_seed(0)
    for _ in range(4):
        y = drop(x)
        changed = [not torch.equal(part, torch.ones(10_000)) for part in (y.real, y.imag)]
        assert sum(changed) == 1, "exactly one of the real and imaginary parts is dropped"
        dropped = y.real if changed[0] else y.imag
        assert set(dropped.unique().tolist()) <= {0.0, 2.0}


def test_dropout_rate_out_of_range_is_refused():
    with pytest.raises(ConfigError, match=r"dropout rate must be in \[0, 1\)"):
        FreqDropout(1.0)


def test_eml_eval_cache_follows_weight_updates():
    eml = EML(2, 2, 6, 3).eval()
    x = _spectrum(c=2)
    with torch.no_grad():
        y1 = eml(x)
        eml.weight.mul_(2.0)  # an in-place update, like an optimizer step
        y2 = eml(x)
    assert_close(y2, 2 * y1, label="a cached filter spectrum must be refreshed after an update")


def test_eml_bias_is_a_constant_in_space():
    torch.manual_seed(0)
    eml = EML(2, 3, (5, 6), 3, bias=True)
    with torch.no_grad():
        eml.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
    layer = torch.nn.Sequential(ToFreq(), eml, ToSpatial((5, 6)))
    x = torch.randn(2, 2, 5, 6)
    no_bias = torch.nn.Sequential(ToFreq(), EML(2, 3, (5, 6), 3), ToSpatial((5, 6)))
    no_bias[1].weight.data.copy_(eml.weight.data)
    assert_close(layer(x) - no_bias(x), torch.tensor([0.5, -1.0, 2.0]).view(1, 3, 1, 1).expand(2, 3, 5, 6),
                 label="spatial bias")  # fmt: skip


def test_eml_refuses_a_spectrum_of_another_size_naming_both():
    eml = EML(4, 8, 14, 5)
    with pytest.raises(ConfigError, match=r"expects a spectrum of 4 x 14 x 8, got 4 x 12 x 7"):
        eml(_spectrum(c=4, h=12, w=12))
    with pytest.raises(ConfigError, match=r"expects a spectrum of 4 x 14 x 8, got 3 x 14 x 8"):
        eml(_spectrum(c=3, h=14, w=14))


def test_eml_refuses_a_real_input_and_says_to_transform_it():
    with pytest.raises(ConfigError, match="ToFreq"):
        EML(1, 1, 4, 3)(torch.zeros(1, 1, 4, 3))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"parametrisation": "dense"}, "parametrisation"), ({"spectrum": "quarter"}, "spectrum"),
     ({"backend": "cuda"}, "backend"), ({"kernel_size": 0}, "kernel_size=0")],
)  # fmt: skip
def test_eml_options_are_validated(kwargs, match):
    args = {"kernel_size": 3, **kwargs}
    with pytest.raises(ConfigError, match=match):
        EML(2, 2, 8, **args)


def test_complex_head_concatenates_both_branches():
    x = _spectrum(n=4, c=2, h=3, w=4)  # 2 channels x 3 x 3 half-spectrum bins = 18 per part
    head = ComplexHead(18, 5, 3).eval()
    out = head(x)
    assert out.shape == (4, 3)
    with torch.no_grad():  # the imaginary branch feeds the output: zeroing it changes the logits
        head.fc_im.weight.zero_()
        head.fc_im.bias.zero_()
    assert not torch.allclose(head(x), out)
