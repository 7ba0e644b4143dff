"""Which layers train at each step: GRASS (MGN importance, adaptive or static), LISA (uniform),
BAdam (block cycling) and full fine-tuning, behind one small interface.

A sampler is asked ``active(step)`` before each step (the layers to train, or None while GRASS
probes, when every layer computes gradients and nothing is updated) and told ``observe(step, rms)``
after the backward pass, with the RMS gradient of each layer (NaN for frozen layers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from effcore.errors import ConfigError

__all__ = [
    "BADAM_ORDERS",
    "BlockCycleSampler",
    "FullSampler",
    "GrassSampler",
    "GrassSettings",
    "LayerSampler",
    "UniformSampler",
]


BADAM_ORDERS: tuple[str, ...] = ("descending", "ascending", "random")


def _check_gamma(gamma: int, num_layers: int) -> None:
    if not 1 <= gamma <= num_layers:
        raise ConfigError(
            f"gamma={gamma} active layers is impossible for a model with {num_layers} layers",
            hint=f"choose --gamma between 1 and {num_layers}",
        )


class LayerSampler:
    """The interface: which layers are active at a step, and what the gradients said."""

    num_layers: int

    def active(self, step: int) -> tuple[int, ...] | None:
        """The sorted active layers for ``step`` (None: probing, all layers compute, no update)."""
        raise NotImplementedError

    def observe(self, step: int, rms: torch.Tensor) -> None:
        """The RMS gradient per layer measured at ``step`` (NaN where a layer was frozen)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class FullSampler(LayerSampler):
    """Every layer, every step (full fine-tuning)."""

    def __init__(self, num_layers: int) -> None:
        self.num_layers = num_layers

    def active(self, step: int) -> tuple[int, ...]:
        return tuple(range(self.num_layers))


class _Seeded(LayerSampler):
    """A sampler whose draws come from its own generator, saved with its state (resumes exactly)."""

    def __init__(self, num_layers: int, seed: int) -> None:
        self.num_layers = num_layers
        self.generator = torch.Generator().manual_seed(seed)
        self.current: tuple[int, ...] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.generator.get_state(), "current": self.current}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["rng"])
        self.current = None if state["current"] is None else tuple(state["current"])


class UniformSampler(_Seeded):
    """LISA: every ``period`` steps, ``gamma`` layers drawn uniformly without replacement."""

    def __init__(self, num_layers: int, gamma: int, period: int, *, seed: int = 0) -> None:
        _check_gamma(gamma, num_layers)
        super().__init__(num_layers, seed)
        self.gamma, self.period = gamma, period

    def active(self, step: int) -> tuple[int, ...]:
        if step % self.period == 0 or self.current is None:
            draw = torch.randperm(self.num_layers, generator=self.generator)[: self.gamma]
            self.current = tuple(sorted(draw.tolist()))
        return self.current


class BlockCycleSampler(LayerSampler):
    """BAdam: blocks of ``gamma`` consecutive layers, one block every ``period`` steps, in
    ``order`` "descending" (BAdam's default: the last block first), "ascending" or "random"
    (a fresh permutation of the blocks each cycle)."""

    def __init__(
        self, num_layers: int, gamma: int, period: int, *, order: str = "descending", seed: int = 0
    ) -> None:
        _check_gamma(gamma, num_layers)
        if order not in BADAM_ORDERS:
            raise ConfigError(f"unknown block order {order!r}", hint=f"choose from {', '.join(BADAM_ORDERS)}")
        self.num_layers, self.period, self.order = num_layers, period, order
        self.blocks = [tuple(range(s, min(s + gamma, num_layers))) for s in range(0, num_layers, gamma)]
        self.seed = seed

    def active(self, step: int) -> tuple[int, ...]:
        switch, position = divmod(step // self.period, len(self.blocks))
        if self.order == "ascending":
            return self.blocks[position]
        if self.order == "descending":
            return self.blocks[len(self.blocks) - 1 - position]
        # one permutation per cycle, a function of (seed, cycle): nothing to save for a resume
        gen = torch.Generator().manual_seed(self.seed * 100_003 + switch)
        return self.blocks[int(torch.randperm(len(self.blocks), generator=gen)[position])]


@dataclass(kw_only=True, slots=True)
class GrassSettings:
    """GRASS's hyper-parameters (the notes' six, with our defaults; see the README for why).

    - ``gamma``: active layers; ``probe_steps`` (T_p): steps with every layer computing gradients
      and no update; ``sample_period`` (T_s): steps between resamples; ``update_period`` (T_u):
      steps between EMA refreshes of the active layers' MGN; ``tau``: softmax temperature;
      ``normalize``: divide the MGN by its mean before the softmax (so ``tau`` is scale-free);
      ``alpha``: EMA weight of the new window.
    - ``adaptive``: False freezes the probabilities after probing (Static GRASS).
    """

    gamma: int = 2
    probe_steps: int = 10
    sample_period: int = 25
    update_period: int = 25
    tau: float = 0.5
    alpha: float = 0.5
    normalize: bool = True
    adaptive: bool = True

    def __post_init__(self) -> None:
        for name in ("probe_steps", "sample_period", "update_period"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.tau > 0 and math.isfinite(self.tau)):
            raise ConfigError(f"tau must be a positive number, got {self.tau}")
        if not 0.0 < self.alpha <= 1.0:
            raise ConfigError(f"alpha must be in (0, 1], got {self.alpha}")


class GrassSampler(_Seeded):
    """GRASS: probe every layer's MGN for ``probe_steps``, then sample ``gamma`` layers from
    ``softmax(m / tau)`` without replacement every ``sample_period`` steps; every ``update_period``
    steps refresh the active layers' MGN by EMA over the window (frozen layers keep theirs)."""

    def __init__(self, num_layers: int, settings: GrassSettings, *, seed: int = 0) -> None:
        _check_gamma(settings.gamma, num_layers)
        super().__init__(num_layers, seed)
        self.s = settings
        self.mgn = torch.zeros(num_layers, dtype=torch.float64)
        self._sum = torch.zeros(num_layers, dtype=torch.float64)  # RMS summed over the window
        self._count = torch.zeros(num_layers, dtype=torch.float64)
        self.history: list[dict[str, Any]] = []  # (step, mgn, probabilities) at every refresh

    def probabilities(self) -> torch.Tensor:
        """``softmax(m / tau)`` (``m / mean(m)`` when normalizing): positive, summing to 1; uniform
        before probing."""
        scale = float(self.mgn.mean()) if self.s.normalize else 1.0
        if not scale > 0:
            return torch.full((self.num_layers,), 1.0 / self.num_layers, dtype=torch.float64)
        return torch.softmax(self.mgn / (scale * self.s.tau), dim=0)

    def active(self, step: int) -> tuple[int, ...] | None:
        if step < self.s.probe_steps:
            return None
        if (step - self.s.probe_steps) % self.s.sample_period == 0 or self.current is None:
            draw = torch.multinomial(
                self.probabilities(), self.s.gamma, replacement=False, generator=self.generator
            )
            self.current = tuple(sorted(draw.tolist()))
        return self.current

    def observe(self, step: int, rms: torch.Tensor) -> None:
        seen = ~torch.isnan(rms)
        self._sum[seen] += rms[seen].double()
        self._count[seen] += 1
        if step == self.s.probe_steps - 1:  # end of probing: m = the mean over the probe
            self.mgn = self._sum / self._count.clamp(min=1)
            self._reset_window(step)
        elif step >= self.s.probe_steps and (step - self.s.probe_steps + 1) % self.s.update_period == 0:
            if self.s.adaptive:
                fresh = self._count > 0
                window = self._sum[fresh] / self._count[fresh]
                self.mgn[fresh] = self.s.alpha * window + (1 - self.s.alpha) * self.mgn[fresh]
            self._reset_window(step)

    def _reset_window(self, step: int) -> None:
        self._sum.zero_()
        self._count.zero_()
        self.history.append(
            {"step": step + 1, "mgn": self.mgn.tolist(), "probabilities": self.probabilities().tolist()}
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "mgn": self.mgn.clone(),
            "sum": self._sum.clone(),
            "count": self._count.clone(),
            "history": list(self.history),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.mgn, self._sum, self._count = state["mgn"].clone(), state["sum"].clone(), state["count"].clone()
        self.history = list(state["history"])
