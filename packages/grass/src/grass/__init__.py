"""GRASS: gradient-based adaptive layer-wise importance sampling for memory-efficient fine-tuning.

``grass.GrassSampler`` (which layers train, from their mean gradient norm), ``grass.LayerwiseAdamW``
(AdamW over every layer, state only for the active ones, offloaded layer by layer),
``grass.LayerwiseTuner`` (the two together, one step at a time), ``grass.GrassTrainer`` (the HF
``Trainer`` integration), ``grass.run`` (one run of any method in the shared harness). Names resolve
lazily, so ``import grass`` does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from effcore.lazy import lazy_getattr

if TYPE_CHECKING:
    from grass.config import METHODS, RunConfig
    from grass.controller import LayerwiseTuner
    from grass.hf import GrassCallback, GrassTrainer
    from grass.importance import GradNormMeter
    from grass.layers import LayerMap, layer_map
    from grass.optimizer import LayerwiseAdamW
    from grass.sampler import (
        BlockCycleSampler,
        FullSampler,
        GrassSampler,
        GrassSettings,
        LayerSampler,
        UniformSampler,
    )
    from grass.train import RunResult, TrainingError, run

__version__ = "0.1.0"

_LAZY: dict[str, str] = {}
for _module, _names in {
    "grass.sampler": ("BlockCycleSampler", "FullSampler", "GrassSampler", "GrassSettings", "LayerSampler",
                      "UniformSampler"),
    "grass.importance": ("GradNormMeter",),
    "grass.optimizer": ("LayerwiseAdamW",),
    "grass.controller": ("LayerwiseTuner",),
    "grass.layers": ("LayerMap", "layer_map"),
    "grass.hf": ("GrassCallback", "GrassTrainer"),
    "grass.config": ("METHODS", "RunConfig"),
    "grass.train": ("RunResult", "TrainingError", "run"),
}.items():  # fmt: skip
    _LAZY.update(dict.fromkeys(_names, _module))

__all__ = [  # noqa: RUF022 -- grouped by role
    # the method
    "GradNormMeter",
    "GrassSampler",
    "GrassSettings",
    "LayerwiseAdamW",
    "LayerwiseTuner",
    # the baselines' samplers
    "BlockCycleSampler",
    "FullSampler",
    "LayerSampler",
    "UniformSampler",
    # integration and harness
    "GrassCallback",
    "GrassTrainer",
    "LayerMap",
    "METHODS",
    "RunConfig",
    "RunResult",
    "TrainingError",
    "layer_map",
    "run",
]


__getattr__ = lazy_getattr(__name__, _LAZY)
