"""effml's shared core: devices, tensor layouts, cost and memory profiling, offline assets, CLI and test helpers.

Submodules are imported on demand (``effcore.layout``, ``effcore.profiling``, ``effcore.assets``,
``effcore.offload``, ``effcore.memory``, ``effcore.lm``, ``effcore.cli``, ``effcore.testing``); the
names below are the ones nearly every package needs. They resolve lazily so that ``import effcore``
(and CLI commands that need no tensors, such as verifying a model cache) do not pay for importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from effcore.errors import AssetError, ConfigError, DataNotFoundError, EffmlError, LayoutError
from effcore.lazy import lazy_getattr

if TYPE_CHECKING:
    from effcore.device import DeviceSpec, cuda_available, device_spec, infer_device, known_spec

__version__ = "0.1.0"

_LAZY = {
    name: "effcore.device"
    for name in ("DeviceSpec", "cuda_available", "device_spec", "infer_device", "known_spec")
}

__all__ = [  # noqa: RUF022 -- grouped by submodule, sorted within groups
    # device
    "DeviceSpec",
    "cuda_available",
    "device_spec",
    "infer_device",
    "known_spec",
    # errors
    "AssetError",
    "ConfigError",
    "DataNotFoundError",
    "EffmlError",
    "LayoutError",
    # version
    "__version__",
]


__getattr__ = lazy_getattr(__name__, _LAZY)
