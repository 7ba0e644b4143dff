"""The effcore pytest plugin: Triton runs on CPU, gpu/slow tests skip with a reason, tests are seeded."""

from __future__ import annotations

import os

import pytest
import torch

from effcore.device import cuda_available


@pytest.mark.skipif(cuda_available(), reason="the interpreter is only forced without CUDA")
def test_triton_kernels_run_on_cpu_in_the_interpreter():
    assert os.environ.get("TRITON_INTERPRET") == "1"
    triton = pytest.importorskip("triton")
    import triton.language as tl

    @triton.jit
    def _add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        tl.store(
            out_ptr + offs, tl.load(x_ptr + offs, mask=mask) + tl.load(y_ptr + offs, mask=mask), mask=mask
        )

    x, y = torch.randn(37), torch.randn(37)
    out = torch.empty_like(x)
    _add_kernel[(triton.cdiv(37, 16),)](x, y, out, 37, BLOCK=16)
    torch.testing.assert_close(out, x + y)


def test_gpu_and_slow_tests_are_skipped_with_a_reason(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.gpu
        def test_needs_gpu():
            pass

        @pytest.mark.slow
        def test_is_slow():
            pass

        def test_plain():
            pass
        """
    )
    result = pytester.runpytest("-rs", "-p", "no:cacheprovider")
    if cuda_available():
        result.assert_outcomes(passed=2, skipped=1)
    else:
        result.assert_outcomes(passed=1, skipped=2)
        result.stdout.fnmatch_lines(["*needs a CUDA device*"])
    result.stdout.fnmatch_lines(["*slow test: pass --run-slow*"])


def test_every_test_starts_from_the_same_seed():
    first = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(first, torch.rand(3)), "the plugin seeds torch with 0 before each test"


def test_device_fixture_is_the_inferred_device(device):
    assert device.type == ("cuda" if cuda_available() else "cpu")
