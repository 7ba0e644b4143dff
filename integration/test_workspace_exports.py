"""Every package's lazy exports (effcore.lazy) resolve, and importing a package alone stays torch-free."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

LAZY_PACKAGES = ("allocmoe", "grass", "merak", "paradyse", "tfdmnet", "tkgqa")


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_exported_name_resolves_and_import_alone_does_not_load_torch(package: str) -> None:
    code = (
        f"import sys, {package} as p; assert 'torch' not in sys.modules, 'torch imported eagerly'; "
        "missing = [n for n in p.__all__ if not hasattr(p, n)]; assert not missing, missing"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
