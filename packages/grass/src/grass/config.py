"""``RunConfig``: one training run (method, model, data, schedule, GRASS settings), validated once.

``METHODS`` is the one list of methods; ``method_defaults`` gives what each method fixes (which
sampler, whether the embeddings and head train, what happens to a deactivated layer's state, where
optimizer state lives).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from effcore.errors import ConfigError
from grass.sampler import BADAM_ORDERS

__all__ = ["APPLIES_TO", "LAYERWISE", "METHODS", "RunConfig", "load_config", "method_defaults"]

METHODS: tuple[str, ...] = ("grass", "static-grass", "lisa", "lisa-keep", "badam", "full", "lora", "dora")
LAYERWISE: tuple[str, ...] = ("grass", "static-grass", "lisa", "lisa-keep", "badam")
_GRASS: tuple[str, ...] = ("grass", "static-grass")

# setting -> the methods it changes; given for any other method it is an error, not ignored
APPLIES_TO: dict[str, tuple[str, ...]] = {
    "gamma": LAYERWISE,
    "sample_period": LAYERWISE,
    "embed_head": LAYERWISE,
    "on_switch": LAYERWISE,
    "offload": LAYERWISE,
    "probe_steps": _GRASS,
    "tau": _GRASS,
    "normalize": _GRASS,
    # Static GRASS freezes the probabilities after probing: no refresh, so no period and no EMA
    "update_period": ("grass",),
    "alpha": ("grass",),
    "badam_order": ("badam",),
    "lora_r": ("lora", "dora"),
    "lora_alpha": ("lora", "dora"),
}

# method -> (embed_head, on_switch, offload); None: the user's choice is kept
_FIXED: dict[str, tuple[str, str, str]] = {
    "grass": ("freeze", "resume", "layerwise"),
    "static-grass": ("freeze", "resume", "layerwise"),
    # LMFlow's LISA: E and H always train; the optimizer is rebuilt at each switch, keeping state
    # only for the E/H groups (LISA_PARAM_GROUPS_KEEP_STATE_IDX = [0, 1])
    "lisa": ("train", "reset", "none"),
    # LISA with the deactivated layers' state kept (on the host) for their return
    "lisa-keep": ("train", "resume", "inactive"),
    # BAdam: include_embedding / include_lm_head default False; states reset at every switch
    "badam": ("freeze", "reset", "none"),
}


def method_defaults(method: str) -> dict[str, str]:
    """The settings ``method`` implies (embed_head, on_switch, offload), for the layer-wise methods."""
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}", hint=f"choose from {', '.join(METHODS)}")
    if method not in _FIXED:
        return {}
    embed_head, on_switch, offload = _FIXED[method]
    return {"embed_head": embed_head, "on_switch": on_switch, "offload": offload}


@dataclass(kw_only=True, slots=True)
class RunConfig:
    """One run. ``embed_head``/``on_switch``/``offload`` left as None take the method's defaults."""

    method: str = "grass"
    model: str = "smollm2"
    task: str = "gsm8k"
    steps: int = 100
    batch: int = 4
    grad_accum: int = 1
    seq_len: int = 192
    lr: float | None = None  # None: 2e-5 for parameter updates, 2e-4 for LoRA/DoRA adapters
    schedule: str = "cosine"
    warmup: int = 5
    weight_decay: float = 0.0
    seed: int = 0
    # GRASS (T_p, T_s, T_u, tau, alpha, gamma); T_s is LISA's and BAdam's switching period too
    gamma: int = 2
    probe_steps: int = 10
    sample_period: int = 25
    update_period: int = 25
    tau: float = 0.5
    alpha: float = 0.5
    normalize: bool = True
    embed_head: str | None = None
    on_switch: str | None = None
    offload: str | None = None
    badam_order: str = "descending"
    lora_r: int = 32
    lora_alpha: int = 64
    gradient_checkpointing: bool = False
    bf16: bool = False
    train_limit: int | None = None
    save_every: int = 0  # 0: only at the end
    nan_at_step: int | None = field(default=None, repr=False)  # tests: poison the loss at this step

    def __post_init__(self) -> None:
        from grass.data import TASKS
        from grass.optimizer import OFFLOAD_MODES

        fixed = method_defaults(self.method)
        for key, value in fixed.items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.task not in TASKS:
            raise ConfigError(f"unknown task {self.task!r}", hint=f"choose from {', '.join(TASKS)}")
        for name in (
            "steps",
            "batch",
            "grad_accum",
            "probe_steps",
            "sample_period",
            "update_period",
            "lora_r",
            "lora_alpha",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup", "save_every", "weight_decay"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.train_limit is not None and self.train_limit < 1:
            raise ConfigError(f"--train-limit must be >= 1, got {self.train_limit}", hint="or leave it out")
        # checked here, before any model is loaded (GrassSettings checks them again for library use)
        if not (self.tau > 0 and math.isfinite(self.tau)):
            raise ConfigError(f"--tau must be a positive number, got {self.tau}")
        if not 0.0 < self.alpha <= 1.0:
            raise ConfigError(f"--alpha must be in (0, 1], got {self.alpha}")
        if self.badam_order not in BADAM_ORDERS:
            raise ConfigError(
                f"unknown --badam-order {self.badam_order!r}", hint=f"choose from {', '.join(BADAM_ORDERS)}"
            )
        if self.seq_len < 8:
            raise ConfigError(f"--seq-len must be >= 8, got {self.seq_len}")
        if self.gamma < 1:
            raise ConfigError(
                f"--gamma must be at least 1, got {self.gamma}", hint="train at least one layer"
            )
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ConfigError(f"unknown --schedule {self.schedule!r}", hint="cosine, linear or constant")
        if self.embed_head not in (None, "train", "freeze"):
            raise ConfigError(f"--embed-head must be train or freeze, got {self.embed_head!r}")
        if self.on_switch not in (None, "resume", "reset"):
            raise ConfigError(f"--on-switch must be resume or reset, got {self.on_switch!r}")
        if self.offload not in (None, *OFFLOAD_MODES):
            raise ConfigError(
                f"unknown --offload {self.offload!r}", hint=f"choose from {', '.join(OFFLOAD_MODES)}"
            )

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (2e-4 if self.method in ("lora", "dora") else 2e-5)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "nan_at_step"}

    def fingerprint(self) -> str:
        """What makes two runs the same run (a checkpoint resumes only into its own run)."""
        keep = {k: v for k, v in self.to_dict().items() if k not in ("steps", "save_every")}
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def load_config(path: Path | None, **overrides: Any) -> RunConfig:
    """A ``RunConfig`` from a TOML file (keys as the field names, ``-`` or ``_``), then ``overrides``
    (the command line's explicitly given options). A setting given for a method it does not change
    (``APPLIES_TO``: ``--tau`` for LISA, ``--gamma`` for LoRA) is an error, not silently ignored."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except OSError as err:
            raise ConfigError(f"cannot read --config {path}: {err.strerror or err}") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"--config {path} is not valid TOML: {err}") from None
        names = {f.name for f in dataclasses.fields(RunConfig)} - {"nan_at_step"}
        for key, value in raw.items():
            name = key.replace("-", "_")
            if name not in names:
                raise ConfigError(
                    f"--config {path}: unknown key {key!r}", hint=f"known: {', '.join(sorted(names))}"
                )
            values[name] = value
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        cfg = RunConfig(**values)
    except TypeError as err:
        raise ConfigError(f"bad configuration: {err}") from None
    for name in sorted(values):
        methods = APPLIES_TO.get(name)
        if methods is not None and cfg.method not in methods:
            raise ConfigError(
                f"--{name.replace('_', '-')} does not apply to --method {cfg.method}",
                hint=f"it sets {', '.join(methods)}; drop it",
            )
    return cfg
