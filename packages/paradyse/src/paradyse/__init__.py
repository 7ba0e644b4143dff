"""ParaDySe: per-sequence, per-layer switching among parallel strategies on one weight layout.

``paradyse.model`` (the switchable stack and its four strategies), ``paradyse.comm`` (differentiable
collectives), ``paradyse.attention`` (ring attention), ``paradyse.memory_model`` / ``paradyse.costmodel``
(cost models and profiles), ``paradyse.planner`` (the paper's heuristic and ours), ``paradyse.train``,
``paradyse.simulate``, ``paradyse.hf`` (Llama-family HF decoders in the shard layout),
``paradyse.weights`` (per-shard initialisation), ``paradyse.placement`` (devices and backends).
Names resolve lazily, so ``import paradyse`` does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from effcore.lazy import lazy_getattr

if TYPE_CHECKING:
    from paradyse.config import MODELS, STRATEGIES, ModelConfig, PlanError, get_model
    from paradyse.costmodel import Profile, TimeModel, fit_time_model
    from paradyse.hf import check_shardable, config_from_hf, load_hf
    from paradyse.memory_model import estimate_memory
    from paradyse.model import ParallelTransformer
    from paradyse.planner import CostTable, HeuristicState, Plan, Planner, paradyse_plan
    from paradyse.reference import reference_forward, reference_weights
    from paradyse.simulate import calibrate, gpu_hardware, simulate

__version__ = "0.1.0"

_LAZY: dict[str, str] = {}
for _module, _names in {
    "paradyse.config": ("MODELS", "STRATEGIES", "ModelConfig", "PlanError", "get_model"),
    "paradyse.costmodel": ("Profile", "TimeModel", "fit_time_model"),
    "paradyse.hf": ("check_shardable", "config_from_hf", "load_hf"),
    "paradyse.memory_model": ("estimate_memory",),
    "paradyse.model": ("ParallelTransformer",),
    "paradyse.planner": ("CostTable", "HeuristicState", "Plan", "Planner", "paradyse_plan"),
    "paradyse.reference": ("reference_forward", "reference_weights"),
    "paradyse.simulate": ("calibrate", "gpu_hardware", "simulate"),
}.items():
    _LAZY.update(dict.fromkeys(_names, _module))

__all__ = [  # noqa: RUF022 -- grouped by submodule
    # configuration
    "MODELS",
    "STRATEGIES",
    "ModelConfig",
    "PlanError",
    "get_model",
    # the switchable model and its oracle
    "ParallelTransformer",
    "reference_forward",
    "reference_weights",
    # HF models in the shard layout
    "check_shardable",
    "config_from_hf",
    "load_hf",
    # cost models
    "Profile",
    "TimeModel",
    "estimate_memory",
    "fit_time_model",
    # planning
    "CostTable",
    "HeuristicState",
    "Plan",
    "Planner",
    "paradyse_plan",
    # simulation
    "calibrate",
    "gpu_hardware",
    "simulate",
    # version
    "__version__",
]


__getattr__ = lazy_getattr(__name__, _LAZY)
