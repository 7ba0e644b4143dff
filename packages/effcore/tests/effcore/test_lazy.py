"""effcore.lazy: package exports resolved on first use."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from effcore.lazy import lazy_getattr


def test_a_lazy_name_resolves_once_and_an_unknown_name_is_an_attribute_error() -> None:
    pkg = types.ModuleType("fake_pkg")
    sys.modules["fake_pkg"] = pkg
    try:
        pkg.__getattr__ = lazy_getattr("fake_pkg", {"dumps": "json"})
        import json

        assert pkg.dumps is json.dumps
        assert pkg.__dict__["dumps"] is json.dumps  # cached: the hook is not asked again
        with pytest.raises(AttributeError, match="module 'fake_pkg' has no attribute 'loads'"):
            _ = pkg.loads
    finally:
        del sys.modules["fake_pkg"]


def test_effcore_exports_resolve_without_importing_torch_at_import() -> None:
    code = (
        "import sys, effcore as p; assert 'torch' not in sys.modules, 'torch imported eagerly'; "
        "missing = [n for n in p.__all__ if not hasattr(p, n)]; assert not missing, missing"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
