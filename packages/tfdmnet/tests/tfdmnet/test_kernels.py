"""The channel-mixing kernel against its reference: forward and both gradients, adversarial shapes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st

from effcore.errors import ConfigError
from effcore.testing.tolerances import assert_close
from tfdmnet.kernels import freq_mix, freq_mix_reference, freq_mix_torch, freq_mix_triton
from tfdmnet.kernels import mixing as fm
from tfdmnet.layers import EML, ToFreq, ToSpatial

needs_triton = pytest.mark.skipif(not fm.triton_available(), reason="triton is not installed")

# Sizes that break tiled kernels: 1, primes, just past a tile (16, 32, 64 are the tile sizes).
SIZES = st.sampled_from([1, 2, 3, 5, 7, 13, 17, 33])


def _complex(shape, *, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    return torch.complex(
        torch.randn(shape, generator=g, dtype=real), torch.randn(shape, generator=g, dtype=real)
    )


def _operands(n, c, o, h, wf, *, dtype, seed, layout):
    """X (N, C, H, W') and W (O, C, H, W'); ``layout`` makes them non-contiguous views."""
    if layout == "contiguous":
        x = _complex((n, c, h, wf), dtype=dtype, seed=seed)
        w = _complex((o, c, h, wf), dtype=dtype, seed=seed + 1)
    elif layout == "permuted":  # channels-last storage seen through a permute
        x = _complex((n, h, wf, c), dtype=dtype, seed=seed).permute(0, 3, 1, 2)
        w = _complex((c, o, h, wf), dtype=dtype, seed=seed + 1).transpose(0, 1)
    else:  # a strided slice
        x = _complex((n, 2 * c, h, wf), dtype=dtype, seed=seed)[:, ::2]
        w = _complex((o, c, h, 2 * wf), dtype=dtype, seed=seed + 1)[..., ::2]
    return x.requires_grad_(True), w.requires_grad_(True)


def _check(fn, x, w, *, dtype, label):
    y_ref = freq_mix_reference(x, w)
    y = fn(x, w)
    scale = max(1.0, x.shape[1] ** 0.5)
    assert_close(y, y_ref, label=f"{label}: output", scale=scale)
    g = _complex(tuple(y.shape), dtype=dtype, seed=99)
    dx_ref, dw_ref = torch.autograd.grad(y_ref, (x, w), g)
    dx, dw = torch.autograd.grad(y, (x, w), g)
    assert_close(dx, dx_ref, label=f"{label}: dX", scale=max(1.0, w.shape[0] ** 0.5))
    assert_close(dw, dw_ref, label=f"{label}: dW", scale=max(1.0, x.shape[0] ** 0.5))


@needs_triton
@given(
    n=SIZES, c=SIZES, o=SIZES, h=st.sampled_from([1, 2, 3]), wf=st.sampled_from([1, 2, 3]),
    dtype=st.sampled_from([torch.complex64, torch.complex128]),
    layout=st.sampled_from(["contiguous", "permuted", "strided"]), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_triton_freq_mix_matches_reference_forward_and_backward(n, c, o, h, wf, dtype, layout, seed):
    note(f"N={n} C={c} O={o} H={h} W'={wf} {dtype} {layout}")
    x, w = _operands(n, c, o, h, wf, dtype=dtype, seed=seed, layout=layout)
    _check(freq_mix_triton, x, w, dtype=dtype, label="triton")


@given(
    n=SIZES, c=SIZES, o=SIZES, h=st.integers(1, 5), wf=st.integers(1, 5),
    layout=st.sampled_from(["contiguous", "permuted", "strided"]), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_torch_bmm_freq_mix_matches_reference(n, c, o, h, wf, layout, seed):
    x, w = _operands(n, c, o, h, wf, dtype=torch.complex64, seed=seed, layout=layout)
    _check(freq_mix_torch, x, w, dtype=torch.complex64, label="torch bmm")


@needs_triton
def test_triton_freq_mix_passes_gradcheck_in_float64():
    # Tiny on purpose: gradcheck runs the kernel twice per input element, ~10 ms each in the interpreter.
    x, w = _operands(2, 3, 2, 1, 2, dtype=torch.complex128, seed=0, layout="permuted")
    assert torch.autograd.gradcheck(freq_mix_triton, (x, w))


@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("parametrisation", ["spatial", "free"])
def test_eml_layer_passes_gradcheck_in_float64(backend, parametrisation):
    # The whole layer (FFT, filter transform, mixing, inverse FFT); the Triton mixing has its own
    # gradcheck above and equals these backends' gradients in the property test.
    torch.manual_seed(0)
    eml = EML(2, 3, (5, 4), 3, parametrisation=parametrisation, backend=backend).double()
    layer = torch.nn.Sequential(ToFreq(), eml, ToSpatial((5, 4)))
    x = torch.randn(2, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp, wt: torch.func.functional_call(layer, {"1.weight": wt}, (inp,)),
                                    (x, eml.weight.detach().clone().requires_grad_(True)))  # fmt: skip


@needs_triton
@pytest.mark.parametrize(
    ("conj_a", "conj_b", "what"),
    [(False, False, "forward without the conjugate on W"), (True, True, "both operands conjugated")],
)
def test_a_kernel_with_the_wrong_conjugation_is_caught(conj_a, conj_b, what):
    # The comparison is sharp enough to catch a plausible bug: a flipped conjugation flag.
    x, w = _operands(4, 3, 5, 2, 2, dtype=torch.complex64, seed=1, layout="contiguous")
    xs = x.detach().reshape(4, 3, 4).permute(2, 0, 1)
    wt = w.detach().reshape(5, 3, 4).permute(2, 0, 1).transpose(1, 2)
    bad = (
        fm._cgemm(xs, wt, conj_a=conj_a, conj_b=conj_b, allow_tf32=False).permute(1, 2, 0).reshape(4, 5, 2, 2)
    )
    with pytest.raises(AssertionError):
        assert_close(bad, freq_mix_reference(x.detach(), w.detach()), label=what)


@needs_triton
@pytest.mark.parametrize("conj_a", [False, True])
@pytest.mark.parametrize("conj_b", [False, True])
def test_the_complex_gemm_kernel_reads_any_strides(conj_a, conj_b):
    # Batched (F, M, K) @ (F, K, N) on transposed and sliced views, against torch.matmul.
    a = _complex((3, 17, 5), dtype=torch.complex64, seed=4).transpose(1, 2)  # (3, 5, 17), strided
    b = _complex((3, 17, 40), dtype=torch.complex64, seed=5)[:, :, ::2]  # (3, 17, 20), strided
    got = fm._cgemm(a, b, conj_a=conj_a, conj_b=conj_b, allow_tf32=False)
    want = torch.matmul(a.conj() if conj_a else a, b.conj() if conj_b else b)
    assert_close(got, want, label=f"cgemm conj_a={conj_a} conj_b={conj_b}", scale=4)


def test_freq_mix_refuses_real_or_mismatched_operands():
    x = torch.zeros(2, 3, 4, 3, dtype=torch.complex64)
    with pytest.raises(ConfigError, match="complex spectra"):
        freq_mix(x.real, x)
    with pytest.raises(ConfigError, match="disagree on channels or frequencies"):
        freq_mix(x, torch.zeros(5, 4, 4, 3, dtype=torch.complex64))
    with pytest.raises(ConfigError, match="backend='cuda' is not one of"):
        freq_mix(x, x, backend="cuda")


def test_auto_backend_is_torch_on_cpu():
    assert fm.resolve_backend("auto", torch.device("cpu")) == "torch"


def test_empty_batch_gives_an_empty_output():
    x = torch.zeros(0, 3, 2, 2, dtype=torch.complex64)
    w = torch.zeros(4, 3, 2, 2, dtype=torch.complex64)
    assert freq_mix_torch(x, w).shape == (0, 4, 2, 2)
    if fm.triton_available():
        assert freq_mix_triton(x, w).shape == (0, 4, 2, 2)


@pytest.mark.gpu
@pytest.mark.parametrize("allow_tf32", [False, True])
def test_triton_freq_mix_on_cuda_matches_reference(allow_tf32):
    # VGG16-mixture's conv9 shape at batch 64: 512 -> 512 channels over 4x3 frequencies.
    x, w = _operands(64, 512, 512, 4, 3, dtype=torch.complex64, seed=0, layout="contiguous")
    x, w = x.detach().cuda().requires_grad_(True), w.detach().cuda().requires_grad_(True)
    y = fm.FreqMixFunction.apply(x, w, allow_tf32)
    y_ref = freq_mix_reference(x, w)
    scale = 300.0 if allow_tf32 else 10.0  # TF32 keeps 10 mantissa bits over a 512-term sum
    assert_close(y, y_ref, label=f"cuda triton tf32={allow_tf32}", scale=scale)
    g = torch.randn_like(y)
    dx, dw = torch.autograd.grad(y, (x, w), g)
    dx_ref, dw_ref = torch.autograd.grad(y_ref, (x, w), g)
    assert_close(dx, dx_ref, label="cuda dX", scale=scale)
    assert_close(dw, dw_ref, label="cuda dW", scale=scale)
