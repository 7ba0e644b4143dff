"""Full (fft2, the authors') or half (rfft2) spectrum: what each network computes, and where they agree."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from effcore.testing.tolerances import assert_close
from tfdmnet.layers import FreqBatchNorm, FreqLeakyReLU
from tfdmnet.models import EMLOptions, Freq, NetConfig, TFDMNet, get_preset
from tfdmnet.spectral import to_spatial


def _with(cfg: NetConfig, **eml) -> NetConfig:
    return dataclasses.replace(cfg, eml=dataclasses.replace(cfg.eml, **eml))


def _twins(name: str, nonlinearity: str, **kw) -> tuple[TFDMNet, TFDMNet]:
    """The preset built on the half and on the full spectrum, with the same weights."""
    cfg = _with(get_preset(name, **kw), nonlinearity=nonlinearity)
    torch.manual_seed(0)
    half = TFDMNet(_with(cfg, spectrum="half"))
    full = TFDMNet(_with(cfg, spectrum="full"))
    state = {}
    for key, value in half.state_dict().items():
        target = full.state_dict()[key]
        if value.shape != target.shape:  # a free (CEMNet) filter: the same spatial filter, fft2'd
            size = (target.shape[-3], target.shape[-2])
            value = torch.view_as_real(torch.fft.fft2(torch.fft.irfft2(torch.view_as_complex(value), s=size)))
        state[key] = value
    full.load_state_dict(state)
    return half.eval(), full.eval()


def _odd_batchnorm(model: TFDMNet, seed: int) -> None:
    """Random eval-mode statistics and affine maps, except that the imaginary branch is not shifted: the
    most general two-branch BN that keeps a spectrum Hermitian (real parts even, imaginary parts odd)."""
    g = torch.Generator().manual_seed(seed)
    for bn in (m for m in model.modules() if isinstance(m, FreqBatchNorm)):
        c = bn.bn_re.num_features
        with torch.no_grad():
            bn.bn_re.running_mean.copy_(torch.randn(c, generator=g))
            bn.bn_re.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            bn.bn_re.weight.copy_(torch.rand(c, generator=g) + 0.5)
            bn.bn_re.bias.copy_(torch.randn(c, generator=g))
            bn.bn_im.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            bn.bn_im.weight.copy_(torch.rand(c, generator=g) + 0.5)


def _features(model: TFDMNet, x: torch.Tensor) -> torch.Tensor:
    """The network's output, or for a frequency head (whose inputs differ in size) the real signal of
    the spectrum it reads."""
    for name, block in model.blocks.items():
        if name == "head" and model.cfg.head_domain == "frequency":
            return to_spatial(x, model.out_size, model.cfg.eml.spectrum)
        x = block(x)
    return x


@pytest.mark.parametrize("nonlinearity", ["leaky_relu", "spatial_relu", "none"])
@pytest.mark.parametrize("name", ["lenet-tfdmnet", "lenet-cemnet", "vgg16-mixture"])
def test_half_and_full_spectra_are_one_network_when_the_layers_keep_spectra_hermitian(name, nonlinearity):
    # LeakyReLU at slope 1 and an unshifted imaginary BN branch keep every spectrum Hermitian; the
    # spatial ReLU is real in, real out. Then the half spectrum is only a cheaper way to compute the
    # same network (the paper's network differs from ours only through the nonlinear layers).
    half, full = _twins(name, nonlinearity, width=0.125 if name.startswith("vgg") else 1.0)
    for model in (half, full):
        _odd_batchnorm(model, seed=1)
        for m in model.modules():
            if isinstance(m, FreqLeakyReLU):
                m.negative_slope = 1.0
    cfg = half.cfg
    x = torch.randn(
        4, cfg.in_channels, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(2)
    )
    with torch.no_grad():
        assert_close(_features(full, x), _features(half, x), label=f"{name}: full vs half", scale=10)


@pytest.mark.parametrize("name", ["lenet-tfdmnet", "vgg16-mixture"])
def test_half_spectrum_is_a_different_network_with_the_papers_nonlinear_layers(name):
    # What the issue was about: LeakyReLU(0.2) and BN on the stored half are not the paper's layers.
    half, full = _twins(name, "leaky_relu", width=0.125 if name.startswith("vgg") else 1.0)
    cfg = half.cfg
    x = torch.randn(
        8, cfg.in_channels, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(3)
    )
    with torch.no_grad():
        for mode in ("eval", "train"):  # running statistics, then batch statistics
            half.train(mode == "train")
            full.train(mode == "train")
            torch.manual_seed(4)
            a = _features(half, x)
            torch.manual_seed(4)
            b = _features(full, x)
            assert (a - b).abs().max() > 0.05 * b.abs().max(), f"{mode}: half and full agree"


@pytest.mark.parametrize("convention", ["torch", "tfdmnet"])
@pytest.mark.parametrize("size", [6, 7])
def test_full_spectrum_eml_block_equals_a_plain_fft2_reference_of_the_authors_layer(convention, size):
    # ComplexDotLayer as the authors wrote it: fft2 of the input and of the top-left padded kernel, the
    # product, BatchNorm (batch statistics) and LeakyReLU(0.2) on the real and imaginary parts of every
    # bin; their pooling layer then keeps the real part of ifft2.
    cfg = NetConfig(name="one-eml", in_channels=3, image_size=size, num_classes=2,
                    layers=(Freq(channels=4, kernel=3),), eml=EMLOptions(convention=convention))  # fmt: skip
    assert cfg.eml.spectrum == "full", "the paper's spectrum is the default"
    torch.manual_seed(0)
    model = TFDMNet(cfg).train()
    g = torch.Generator().manual_seed(1)
    bn = model.blocks["eml1"][1]
    with torch.no_grad():
        for part in (bn.bn_re, bn.bn_im):
            part.weight.copy_(torch.rand(4, generator=g) + 0.5)
            part.bias.copy_(torch.randn(4, generator=g))
    x = torch.randn(5, 3, size, size, generator=g)
    spectrum = model.blocks["eml1"](model.blocks["to_freq1"](x))
    spatial = model.blocks["to_spatial1"](spectrum)

    w = model.blocks["eml1"][0].weight.detach()
    X = torch.fft.fft2(x)
    K = torch.fft.fft2(F.pad(w, (0, size - 3, 0, size - 3)))
    if convention == "tfdmnet":
        Y = torch.einsum("nchw,ochw->nohw", X.conj(), K)
    else:
        Y = torch.einsum("nchw,ochw->nohw", X, K.conj())

    def bn_lrelu(part: torch.Tensor, bn2d: torch.nn.BatchNorm2d) -> torch.Tensor:
        mean = part.mean(dim=(0, 2, 3), keepdim=True)
        var = part.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        normed = (part - mean) / torch.sqrt(var + bn2d.eps)
        return F.leaky_relu(normed * bn2d.weight[:, None, None] + bn2d.bias[:, None, None], 0.2)

    Z = torch.complex(bn_lrelu(Y.real, bn.bn_re), bn_lrelu(Y.imag, bn.bn_im))
    assert spectrum.shape == (5, 4, size, size)
    assert_close(spectrum.detach(), Z, label="EML -> BN -> LeakyReLU on the full spectrum", scale=10)
    inverse = torch.fft.ifft2(Z)
    assert inverse.imag.abs().max() > 0.1 * inverse.real.abs().max(), "the nonlinear layers left Z Hermitian"
    assert not spatial.is_complex()
    assert_close(
        spatial.detach(), inverse.real, label="real part of ifft2, as the authors' pooling", scale=10
    )


@pytest.mark.parametrize("width", [6, 7])
def test_leaky_relu_on_imaginary_parts_is_linear_on_the_full_spectrum_once_the_real_part_is_kept(width):
    # Why the two spectra differ, bin by bin. Full: f acts on both bins of a conjugate pair, and keeping
    # the real part at the next inverse FFT averages f(X) with conj(f(conj X)): the real part gets
    # LeakyReLU, the imaginary part only the factor (1 + s) / 2. Half: an interior bin gets f and its
    # mirror follows; the self-conjugate columns (v = 0 and, for even W, v = W/2) hold both bins of
    # each pair, so irfft2's projection does there what the full spectrum does.
    s, h = 0.2, 5
    x = torch.randn(3, 2, h, width, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    act = FreqLeakyReLU(s)
    X = torch.fft.fft2(x)
    full = torch.fft.fft2(torch.fft.ifft2(act(X)).real)
    assert_close(full.real, F.leaky_relu(X.real, s), label="full: real parts")
    assert_close(full.imag, X.imag * (1 + s) / 2, label="full: imaginary parts")
    Xh = torch.fft.rfft2(x)
    half = torch.fft.rfft2(torch.fft.irfft2(act(Xh), s=(h, width)))
    self_conjugate = [0] + ([width // 2] if width % 2 == 0 else [])
    interior = [v for v in range(width // 2 + 1) if v not in self_conjugate]
    assert_close(half[..., interior], act(Xh)[..., interior], label="half: interior bins get f")
    assert_close(half[..., self_conjugate], full[..., self_conjugate], label="half: self-conjugate columns")
