"""pytest plugin shipped with effcore (auto-loaded via the ``pytest11`` entry point).

- sets ``TRITON_INTERPRET=1`` before anything imports triton when no CUDA device exists, so
  Triton kernels run on CPU tensors in the interpreter;
- registers the hypothesis profiles ``dev`` and ``ci`` (``ci`` is derandomized and picked when
  ``CI`` is set) and ``--run-slow`` / ``--run-slow-hypothesis``;
- skips ``gpu``-marked tests without CUDA and ``slow`` ones unless asked, with a stated reason;
- seeds python, numpy and torch before every test; provides the ``device`` fixture.
"""

from __future__ import annotations

import os
import random

import pytest

from effcore.device import cuda_available, infer_device

if not cuda_available():
    # Must happen before the first `import triton` anywhere in the test session.
    os.environ.setdefault("TRITON_INTERPRET", "1")


def _register_hypothesis_profiles() -> None:
    try:
        from hypothesis import HealthCheck, settings
    except ImportError:  # hypothesis is optional outside the test extra
        return
    common = {"deadline": None, "print_blob": True, "suppress_health_check": [HealthCheck.too_slow]}
    settings.register_profile("dev", max_examples=25, **common)
    settings.register_profile("ci", max_examples=25, derandomize=True, **common)
    settings.register_profile("slow", max_examples=300, **common)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


_register_hypothesis_profiles()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("effml")
    group.addoption(
        "--run-slow", action="store_true", help="run tests marked slow (big models, long searches)"
    )
    group.addoption(
        "--run-slow-hypothesis", action="store_true", help="use the 'slow' hypothesis profile (300 examples)"
    )


def pytest_configure(config: pytest.Config) -> None:
    for line in (
        "gpu: needs a CUDA device (skipped otherwise)",
        "slow: long-running; only with --run-slow",
        "distributed: launches torch.distributed process groups",
        "integration: end-to-end run on real models and data",
    ):
        config.addinivalue_line("markers", line)
    if config.getoption("--run-slow-hypothesis", default=False):
        from hypothesis import settings

        settings.load_profile("slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_cuda = cuda_available()
    run_slow = config.getoption("--run-slow", default=False)
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device; none is present"))
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow test: pass --run-slow"))


@pytest.fixture(autouse=True)
def _effml_seed() -> None:
    """Deterministic tests: every test starts from the same seeds."""
    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def device():
    """The device tests run on: CUDA when present, CPU otherwise (override with EFFML_TEST_DEVICE)."""
    return infer_device(os.environ.get("EFFML_TEST_DEVICE", "auto"))
