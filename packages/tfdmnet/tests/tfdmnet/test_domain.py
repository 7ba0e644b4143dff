"""Consecutive EML blocks stay in the frequency domain: no inverse/forward FFT pair between them, and the
result equals running every EML block as a spatial layer (ToFreq -> block -> ToSpatial) one by one."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.overrides import TorchFunctionMode

from tfdmnet.fused import FreqBlock
from tfdmnet.layers import FreqBatchNorm, FreqLeakyReLU
from tfdmnet.models import TFDMNet, get_preset
from tfdmnet.spectral import to_freq, to_spatial


class _CountFFTs(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "").removeprefix("fft_")
        if name in ("fft2", "ifft2", "rfft2", "irfft2"):
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


# Transforms a forward must run: one FFT into the domain, one inverse FFT out of it, and the authors'
# pooling between frequency layers (inverse FFT, max-pool, FFT); nothing between consecutive EMLs.
EXPECTED = {
    "lenet-tfdmnet": ["fft2", "ifft2"],  # to_freq1, to_spatial1
    "vgg16-mixture": ["fft2", "ifft2", "fft2", "ifft2", "fft2"],  # to_freq1, pool4, pool5 (complex head)
    "alexnet-mixture": ["fft2", "ifft2", "fft2", "ifft2"],  # to_freq1, pool3, to_spatial1 before pool4
}


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("name", list(EXPECTED))
def test_a_forward_runs_only_the_transforms_where_the_domain_changes(name, train):
    width = {"lenet-tfdmnet": 1.0, "vgg16-mixture": 0.125, "alexnet-mixture": 0.0625}[name]
    model = TFDMNet(get_preset(name, width=width)).train(train)
    cfg = model.cfg
    x = torch.randn(2, cfg.in_channels, cfg.image_size, cfg.image_size)
    with torch.no_grad(), _CountFFTs() as counter:
        model(x)
    assert counter.calls == EXPECTED[name]


def _hermitian_layers(model: TFDMNet) -> None:
    # BN that keeps spectra Hermitian (random affine maps and statistics, imaginary branch unshifted)
    # and LeakyReLU at slope 1: then the inverse FFT of every block's output is real, and a round
    # trip through space between blocks is the identity.
    g = torch.Generator().manual_seed(5)
    for m in model.modules():
        if isinstance(m, FreqLeakyReLU):
            m.negative_slope = 1.0
        if isinstance(m, FreqBatchNorm):
            c = m.bn_re.num_features
            with torch.no_grad():
                m.bn_re.running_mean.copy_(torch.randn(c, generator=g))
                m.bn_re.bias.copy_(torch.randn(c, generator=g))
                for b in (m.bn_re, m.bn_im):
                    b.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                    b.weight.copy_(torch.rand(c, generator=g) + 0.5)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("spectrum", ["full", "half"])
def test_consecutive_frequency_blocks_equal_the_block_by_block_path(spectrum, fused):
    cfg = get_preset("vgg16-mixture", width=0.125)
    torch.manual_seed(0)
    model = TFDMNet(dataclasses.replace(cfg, eml=dataclasses.replace(cfg.eml, spectrum=spectrum)))
    model.set_fused(fused).eval()
    _hermitian_layers(model)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        in_domain = block_by_block = x
        for block in model.blocks.values():
            in_domain = block(in_domain)
            block_by_block = block(block_by_block)
            if isinstance(block, FreqBlock):  # back to space and into the frequency domain again
                size = block[0].size
                block_by_block = to_freq(to_spatial(block_by_block, size, spectrum), spectrum)
    torch.testing.assert_close(in_domain, block_by_block, atol=1e-4, rtol=1e-4)
