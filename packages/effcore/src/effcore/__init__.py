"""effml's shared core: devices, tensor layouts, cost and memory profiling, offline assets, CLI and test helpers.

Submodules are imported on demand (``effcore.layout``, ``effcore.profiling``, ``effcore.assets``,
``effcore.offload``, ``effcore.memory``, ``effcore.lm``, ``effcore.cli``, ``effcore.testing``); the
names below are the ones nearly every package needs.
"""

from effcore.device import DeviceSpec, cuda_available, device_spec, infer_device, known_spec
from effcore.errors import AssetError, ConfigError, DataNotFoundError, EffmlError, LayoutError

__version__ = "0.1.0"

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
