"""Properties of the EML and the spectral conventions: conv equivalence, fixation, linearity, pooling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, note
from hypothesis import strategies as st

from effcore.errors import ConfigError
from effcore.testing.strategies import seeded_tensor
from effcore.testing.tolerances import assert_close
from tfdmnet.layers import EML, FreqMaxPool, ToFreq, ToSpatial
from tfdmnet.spectral import (
    circular_conv2d,
    fix_spectrum,
    freq_shape,
    kernel_spectrum,
    support_mask,
    to_freq,
    to_spatial,
)

SPECTRA = st.sampled_from(["half", "full"])
ANCHORS = st.sampled_from(["corner", "center"])


@st.composite
def eml_cases(draw, *, max_size: int = 9, max_channels: int = 4):
    """(N, Cin, Cout, H, W, k, seed): odd and even sizes, k up to the smaller side."""
    h = draw(st.integers(1, max_size))
    w = draw(st.integers(1, max_size))
    k = draw(st.integers(1, min(h, w)))
    case = (
        draw(st.integers(1, 3)),
        draw(st.integers(1, max_channels)),
        draw(st.integers(1, max_channels)),
        h,
        w,
        k,
        draw(st.integers(0, 2**16)),
    )
    note(f"N, Cin, Cout, H, W, k, seed = {case}")
    return case


def _layer(cin, cout, h, w, k, *, spectrum, anchor, convention="torch", parametrisation="spatial", seed=0):
    torch.manual_seed(seed)
    eml = EML(cin, cout, (h, w), k, spectrum=spectrum, anchor=anchor, convention=convention,
              parametrisation=parametrisation, backend="torch").double()  # fmt: skip
    return torch.nn.Sequential(ToFreq(spectrum), eml, ToSpatial((h, w), spectrum))


def _mirror(y: torch.Tensor) -> torch.Tensor:
    # y(-m mod H, -n mod W)
    return torch.roll(torch.flip(y, dims=(-2, -1)), shifts=(1, 1), dims=(-2, -1))


@given(case=eml_cases(), spectrum=SPECTRA, anchor=ANCHORS)
def test_eml_equals_circular_conv2d(case, spectrum, anchor):
    n, cin, cout, h, w, k, seed = case
    layer = _layer(cin, cout, h, w, k, spectrum=spectrum, anchor=anchor, seed=seed)
    x = seeded_tensor((n, cin, h, w), dtype=torch.float64, seed=seed)
    expected = circular_conv2d(x, layer[1].weight.detach(), anchor=anchor)
    assert_close(layer(x), expected, label=f"EML vs circular conv2d ({spectrum}, {anchor})")


@given(case=eml_cases(), spectrum=SPECTRA)
def test_tfdmnet_convention_is_the_mirrored_correlation(case, spectrum):
    n, cin, cout, h, w, k, seed = case
    layer = _layer(cin, cout, h, w, k, spectrum=spectrum, anchor="corner", convention="tfdmnet", seed=seed)
    x = seeded_tensor((n, cin, h, w), dtype=torch.float64, seed=seed)
    expected = _mirror(circular_conv2d(x, layer[1].weight.detach()))
    assert_close(layer(x), expected, label="conj(X) W is y(-m)")


def test_circular_conv2d_matches_explicit_sum():
    # The oracle itself, against the definition y(m) = sum_t w(t) x(m + t) (indices mod H, W).
    x = seeded_tensor((1, 2, 5, 4), dtype=torch.float64, seed=1)
    wt = seeded_tensor((3, 2, 3, 2), dtype=torch.float64, seed=2)
    y = torch.zeros(1, 3, 5, 4, dtype=torch.float64)
    for o in range(3):
        for i in range(5):
            for j in range(4):
                for ti in range(3):
                    for tj in range(2):
                        y[0, o, i, j] += (wt[o, :, ti, tj] * x[0, :, (i + ti) % 5, (j + tj) % 4]).sum()
    assert_close(circular_conv2d(x, wt), y, label="circular_conv2d vs the definition")


@given(case=eml_cases(), spectrum=SPECTRA, anchor=ANCHORS, mode=st.sampled_from(["mask", "mass"]))
def test_weight_fixation_is_idempotent_and_leaves_a_kxk_support(case, spectrum, anchor, mode):
    _, cin, cout, h, w, k, seed = case
    fh, fw = freq_shape((h, w), spectrum)
    gen = torch.Generator().manual_seed(seed)
    free = torch.randn(cout, cin, fh, fw, dtype=torch.complex128, generator=gen)
    once = fix_spectrum(free, (h, w), k, spectrum=spectrum, anchor=anchor, mode=mode)
    twice = fix_spectrum(once, (h, w), k, spectrum=spectrum, anchor=anchor, mode=mode)
    assert_close(twice, once, label="fixation twice == once")
    spatial = to_spatial(once, (h, w), spectrum)
    outside = spatial * (1 - support_mask((h, w), k, anchor=anchor).double())
    assert float(outside.abs().max()) < 1e-9, "fixed filters must vanish outside the k x k support"


@given(case=eml_cases(), spectrum=SPECTRA)
def test_free_eml_after_fixation_is_a_kxk_conv(case, spectrum):
    n, cin, cout, h, w, k, seed = case
    layer = _layer(cin, cout, h, w, k, spectrum=spectrum, anchor="corner", parametrisation="free", seed=seed)
    eml = layer[1]
    with torch.no_grad():  # leave the fixation set, then project back onto it
        eml.weight.add_(0.3 * torch.randn_like(eml.weight))
    eml.fix_weights()
    kernel = eml.spatial_kernel()[..., :k, :k]
    x = seeded_tensor((n, cin, h, w), dtype=torch.float64, seed=seed)
    assert_close(layer(x), circular_conv2d(x, kernel), label="fixed free EML vs its k x k conv")


@given(case=eml_cases(), spectrum=SPECTRA, anchor=ANCHORS, data=st.data())
def test_eml_is_linear_and_circularly_shift_equivariant(case, spectrum, anchor, data):
    n, cin, cout, h, w, k, seed = case
    layer = _layer(cin, cout, h, w, k, spectrum=spectrum, anchor=anchor, seed=seed)
    x1 = seeded_tensor((n, cin, h, w), dtype=torch.float64, seed=seed)
    x2 = seeded_tensor((n, cin, h, w), dtype=torch.float64, seed=seed + 1)
    a, b = 1.7, -0.4
    assert_close(layer(a * x1 + b * x2), a * layer(x1) + b * layer(x2), label="linearity")
    dy, dx = data.draw(st.integers(0, h - 1)), data.draw(st.integers(0, w - 1))
    note(f"shift = ({dy}, {dx})")
    shifted = layer(torch.roll(x1, (dy, dx), dims=(-2, -1)))
    assert_close(shifted, torch.roll(layer(x1), (dy, dx), dims=(-2, -1)), label="shift equivariance")


@given(
    n=st.integers(1, 3), c=st.integers(1, 4), h=st.integers(2, 12), w=st.integers(2, 12),
    k=st.integers(1, 3), spectrum=SPECTRA, seed=st.integers(0, 2**16),
)  # fmt: skip
def test_frequency_pooling_equals_spatial_max_pool(n, c, h, w, k, spectrum, seed):
    k = min(k, h, w)
    x = seeded_tensor((n, c, h, w), dtype=torch.float64, seed=seed)
    pool = FreqMaxPool((h, w), k, spectrum=spectrum)
    out = to_spatial(pool(to_freq(x, spectrum)), pool.out_size, spectrum)
    assert_close(out, F.max_pool2d(x, k), label="ifft -> max_pool -> fft round trip")


@given(h=st.integers(1, 12), w=st.integers(1, 12), spectrum=SPECTRA, seed=st.integers(0, 2**16))
def test_to_spatial_inverts_to_freq_for_odd_and_even_sizes(h, w, spectrum, seed):
    x = seeded_tensor((2, 3, h, w), dtype=torch.float64, seed=seed)
    X = to_freq(x, spectrum)
    assert tuple(X.shape[-2:]) == freq_shape((h, w), spectrum)
    assert_close(to_spatial(X, (h, w), spectrum), x, label="irfft2(rfft2(x), s) == x")


def test_kernel_spectrum_is_the_fft_of_the_padded_kernel():
    w = seeded_tensor((2, 3, 3, 3), dtype=torch.float64, seed=3)
    padded = torch.zeros(2, 3, 7, 6, dtype=torch.float64)
    padded[..., :3, :3] = w
    assert_close(kernel_spectrum(w, (7, 6)), torch.fft.rfft2(padded), label="corner-anchored spectrum")
    assert_close(kernel_spectrum(w, (7, 6), spectrum="full"), torch.fft.fft2(padded), label="full spectrum")


def test_half_precision_input_is_transformed_in_fp32():
    x = torch.randn(1, 2, 6, 6).to(torch.bfloat16)
    assert to_freq(x).dtype == torch.complex64


def test_a_kernel_larger_than_the_map_is_refused_with_the_limit():
    with pytest.raises(ConfigError, match=r"kernel_size=5 does not fit its 4x4 input.*<= 4"):
        EML(2, 2, 4, 5)
    with pytest.raises(ConfigError, match="does not fit"):
        kernel_spectrum(torch.zeros(1, 1, 5, 5), (4, 4))


def test_to_spatial_refuses_a_spectrum_of_another_size():
    X = to_freq(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ConfigError, match=r"8x8 map has shape 8x5, got 8x5|7x7 map has shape 7x4, got 8x5"):
        to_spatial(X, (7, 7))
