"""Apply a budget to a loaded model: wrap every MoE router, run the experts on the budgeted path.

``with allocmoe.budgeted(model, budget) as stats:`` patches, for the duration of the block,

- each router's ``forward`` (the router module and its class stay, so HF's ``output_router_logits``
  recording keeps working) to score, rank and select under the budget, returning ``-1`` for dropped
  slots;
- each experts module's ``forward`` to :func:`allocmoe.kernels.experts.fused_experts`, which sorts the
  valid (token, expert) pairs by expert and skips the dropped ones entirely (``engine="allocmoe"``), or
  keeps HF's own experts forward with dropped slots as the sentinel index ``E`` and weight 0
  (``engine="hf"``; eager handles the sentinel, ``grouped_mm`` is told to treat it as a non-local expert).

Everything is restored on exit, also after an exception.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch

from allocmoe.adapters import MoELayer, RouterSpec, find_moe_layers, model_k_orig
from allocmoe.budget import ActivationBudget, Policy, ThresholdPolicy
from effcore.errors import ConfigError

__all__ = [
    "BudgetHandle",
    "BudgetStats",
    "Engine",
    "LayerStats",
    "apply_budget",
    "budgeted",
    "select",
    "threshold_keep",
]

Engine = Literal["allocmoe", "hf"]


class LayerStats:
    """What one MoE layer spent: tokens routed, (token, expert) pairs kept, distinct experts per call.

    Counts accumulate on the model's device without a host sync per call (decode steps stay cheap);
    the properties read them.
    """

    __slots__ = ("_load", "_unique", "calls", "tokens")

    def __init__(self) -> None:
        self.tokens = 0
        self.calls = 0
        self._load: torch.Tensor | None = None
        self._unique: torch.Tensor | None = None

    def add(self, ids: torch.Tensor, tokens: int, num_experts: int) -> None:
        # dropped slots are -1: shift by one so they land in bin 0, which is discarded
        counts = torch.bincount(ids.reshape(-1) + 1, minlength=num_experts + 1)[1:]
        present = (counts > 0).sum()
        self._load = counts if self._load is None else self._load + counts
        self._unique = present if self._unique is None else self._unique + present
        self.tokens += tokens
        self.calls += 1

    @property
    def load(self) -> torch.Tensor | None:
        """Kept (token, expert) pairs per expert."""
        return None if self._load is None else self._load.cpu()

    @property
    def activations(self) -> int:
        return 0 if self._load is None else int(self._load.sum())

    @property
    def unique_experts(self) -> int:
        """Distinct experts used, summed over calls."""
        return 0 if self._unique is None else int(self._unique)


@dataclass(slots=True)
class BudgetStats:
    """Per-layer spending, accumulated while a budget is applied (``reset()`` to start over)."""

    layers: list[LayerStats] = field(default_factory=list)

    def reset(self) -> None:
        for i in range(len(self.layers)):
            self.layers[i] = LayerStats()

    @property
    def activations_per_token(self) -> float:
        """Average routed activations per token summed over layers: the *spent* budget ``B``."""
        return sum(s.activations / s.tokens for s in self.layers if s.tokens)

    def rows(self) -> list[dict]:
        out = []
        for i, s in enumerate(self.layers):
            out.append(
                {
                    "layer": i,
                    "tokens": s.tokens,
                    "experts_per_token": s.activations / s.tokens if s.tokens else 0.0,
                    "unique_experts_per_call": s.unique_experts / s.calls if s.calls else 0.0,
                }
            )
        return out


def _normalise(topv: torch.Tensor, keep: torch.Tensor, spec: RouterSpec, renorm: str) -> torch.Tensor:
    w = torch.where(keep, topv, torch.zeros_like(topv))
    if spec.normalize:
        denom = w.sum(-1, keepdim=True) if renorm == "kept" else topv.sum(-1, keepdim=True)
        w = w / denom.clamp_min(1e-20)
    if spec.scaling != 1.0:
        w = w * spec.scaling
    return w


def threshold_keep(topv: torch.Tensor, total: torch.Tensor, kind: str, value: float) -> torch.Tensor:
    """Which ranked slots a threshold policy keeps (rank 0 always).

    ``topv[T, K]``: ranked gate scores; ``total[T, 1]``: the sum of all of a token's scores. ``top_p``
    keeps the smallest prefix whose normalised scores reach ``value``; ``naee`` keeps a rank when its
    score is at least ``value`` times the top-1 score.
    """
    if kind == "top_p":
        frac = topv / total.clamp_min(1e-20)
        keep = (frac.cumsum(-1) - frac) < value
    else:
        keep = topv >= value * topv[:, :1]
    keep[:, 0] = True
    return keep


def select(
    logits: torch.Tensor,
    *,
    layer: int,
    policy: Policy,
    spec: RouterSpec,
    k_orig: int,
    choice_bias: torch.Tensor | None = None,
    candidate_mask: torch.Tensor | None = None,
    batch_shape: tuple[int, ...] | None = None,
    valid_tokens: torch.Tensor | None = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Budgeted routing of one layer: ``logits[T, E]`` -> ``(weights[T, k_orig], ids[T, k_orig])``.

    ``ids`` is ``-1`` for dropped slots (their weight is 0). ``batch_shape=(B, S)`` enables the
    per-sequence scope; ``valid_tokens[T]`` excludes padding (it keeps nothing and takes no slot).
    """
    from allocmoe.kernels.routing import route

    T = logits.shape[0]
    common = dict(score=spec.score, choice_bias=choice_bias, candidate_mask=candidate_mask, backend=backend)
    if isinstance(policy, ThresholdPolicy):
        topv, ids, keep = route(logits, k_orig=k_orig, k_base=k_orig, n_extra=None, **common)
        s_all = logits.float().softmax(-1) if spec.score == "softmax" else logits.float().sigmoid()
        keep = threshold_keep(topv, s_all.sum(-1, keepdim=True), policy.kind, policy.value)
        if valid_tokens is not None:
            keep &= valid_tokens[:, None]
        ids = torch.where(keep, ids, torch.full_like(ids, -1))
        return _normalise(topv, keep, spec, policy.renorm), ids

    k_l, k_base = policy.k_layers[layer], policy.k_base
    if k_base is None or k_base >= k_l:  # plain top-k_l (the Uniform baseline, and the full budget)
        k_base, per_token = k_l, 0
        simple = choice_bias is None and candidate_mask is None and valid_tokens is None
        if simple and backend != "triton" and not (spec.normalize and policy.renorm == "full"):
            # the model's own routing with top-k_l: one topk, nothing to drop (the decode fast path)
            s = logits.float().softmax(-1) if spec.score == "softmax" else logits.float().sigmoid()
            w, ids = torch.topk(s, k_l, dim=-1)
            if spec.normalize:
                w = w / w.sum(-1, keepdim=True)
            return (w * spec.scaling if spec.scaling != 1.0 else w), ids
    else:
        per_token = k_l - k_base
    pools = 1
    if policy.scope == "sequence" and batch_shape is not None and len(batch_shape) == 2:
        pools = batch_shape[0]
    if valid_tokens is None or pools == 1:
        n_valid = T if valid_tokens is None else int(valid_tokens.sum())
        n_extra = per_token * (n_valid if pools == 1 else T // pools)
        topv, ids, keep = route(
            logits,
            k_orig=k_orig,
            k_base=k_base,
            n_extra=n_extra,
            num_pools=pools,
            valid_tokens=valid_tokens,
            **common,
        )
    else:  # per-sequence pools with padding: every sequence has its own number of valid tokens
        parts = [
            route(
                lg,
                k_orig=k_orig,
                k_base=k_base,
                n_extra=per_token * int(v.sum()),
                valid_tokens=v,
                **{**common, "candidate_mask": None if cm is None else cm},
            )
            for lg, v, cm in zip(
                logits.chunk(pools),
                valid_tokens.chunk(pools),
                candidate_mask.chunk(pools) if candidate_mask is not None else [None] * pools,
                strict=True,
            )
        ]
        topv, ids, keep = (torch.cat(x) for x in zip(*parts, strict=True))
    return _normalise(topv, keep, spec, policy.renorm), ids


@dataclass(slots=True)
class _Context:
    """Per-forward information the routers need: batch shape of the block input, padding mask."""

    attention_mask: torch.Tensor | None = None
    batch_shape: dict[int, tuple[int, ...]] = field(default_factory=dict)


def _valid_tokens(ctx: _Context, batch_shape: tuple[int, ...] | None) -> torch.Tensor | None:
    mask = ctx.attention_mask
    if mask is None or batch_shape is None or len(batch_shape) != 2 or mask.dim() != 2:
        return None
    b, s = batch_shape
    if mask.shape[0] != b or mask.shape[1] < s:
        return None
    valid = mask[:, -s:].reshape(-1).bool()
    return None if bool(valid.all()) else valid


class BudgetHandle:
    """A budget applied to a model until :meth:`remove` (what :func:`budgeted` uses)."""

    def __init__(
        self,
        model: torch.nn.Module,
        policy: Policy,
        *,
        engine: Engine = "allocmoe",
        backend: str = "auto",
        layers: list[MoELayer] | None = None,
    ) -> None:
        self.model = model
        self.layers = layers or find_moe_layers(model)
        self.policy = policy
        self.engine = engine
        self.k_orig = model_k_orig(model, self.layers)
        _validate(policy, len(self.layers), self.k_orig)
        if engine not in get_args(Engine):
            raise ConfigError(f"engine {engine!r} is not one of: {', '.join(get_args(Engine))}")
        self.stats = BudgetStats([LayerStats() for _ in self.layers])
        self.record = True
        self._ctx = _Context()
        self._undo: list = []
        try:
            self._install(backend)
        except BaseException:
            self.remove()
            raise

    def _install(self, backend: str) -> None:
        ctx = self._ctx

        def model_hook(_mod, args, kwargs):
            mask = kwargs.get("attention_mask")
            ctx.attention_mask = mask if isinstance(mask, torch.Tensor) else None

        self._undo.append(self.model.register_forward_pre_hook(model_hook, with_kwargs=True).remove)
        for layer in self.layers:
            self._install_layer(layer, backend)

    def _install_layer(self, layer: MoELayer, backend: str) -> None:
        ctx, adapter, block = self._ctx, layer.adapter, layer.block
        router, experts = adapter.router(block), adapter.experts(block)
        spec = adapter.spec(block)
        num_experts = adapter.num_experts(block)
        k_orig, idx, handle = self.k_orig, layer.index, self

        def block_hook(_mod, args):
            if args and isinstance(args[0], torch.Tensor):
                ctx.batch_shape[idx] = tuple(args[0].shape[:-1])

        self._undo.append(block.register_forward_pre_hook(block_hook).remove)

        def router_forward(hidden_states: torch.Tensor):
            h = hidden_states.reshape(-1, hidden_states.shape[-1])
            logits = adapter.logits(block, h)
            bias, cmask = adapter.candidates(block, logits)
            shape = ctx.batch_shape.get(idx)
            valid = _valid_tokens(ctx, shape)
            weights, ids = select(
                logits,
                layer=idx,
                policy=handle.policy,
                spec=spec,
                k_orig=k_orig,
                choice_bias=bias,
                candidate_mask=cmask,
                batch_shape=shape,
                valid_tokens=valid,
                backend=backend,
            )
            if handle.record:
                n_tok = h.shape[0] if valid is None else int(valid.sum())
                handle.stats.layers[idx].add(ids, n_tok, num_experts)
            if spec.out_dtype is not None:
                weights = weights.to(spec.out_dtype)
            if handle.engine == "hf":
                dropped = ids < 0
                ids = ids.masked_fill(dropped, num_experts)
                weights = weights.masked_fill(dropped, 0)
            return logits, weights, ids

        self._patch(router, "forward", router_forward)
        if self.engine == "allocmoe" and not _fusable(experts):
            raise ConfigError(
                f"the experts of {layer.name} are not SwiGLU experts with gate_up_proj/down_proj weights",
                hint="use engine='hf' (transformers' own experts forward) for this model",
            )
        if self.engine == "allocmoe":
            from allocmoe.kernels.experts import fused_experts

            def experts_forward(hidden_states, top_k_index, top_k_weights):
                return fused_experts(
                    hidden_states,
                    experts.gate_up_proj,
                    experts.down_proj,
                    top_k_index,
                    top_k_weights,
                    backend=backend,
                )

            self._patch(experts, "forward", experts_forward)
        else:
            self._patch(experts, "_is_expert_parallel", True)

    def _patch(self, obj, attr: str, value) -> None:
        had = attr in obj.__dict__
        old = obj.__dict__.get(attr)

        def undo():
            if had:
                setattr(obj, attr, old)
            else:
                with suppress(AttributeError):
                    delattr(obj, attr)

        setattr(obj, attr, value)
        self._undo.append(undo)

    def set_policy(self, policy: Policy) -> None:
        """Switch to another budget without re-wrapping (e.g. between evaluation runs)."""
        _validate(policy, len(self.layers), self.k_orig)
        self.policy = policy

    def remove(self) -> None:
        while self._undo:
            self._undo.pop()()


def _fusable(experts: torch.nn.Module) -> bool:
    """Whether the fused path computes exactly what ``experts`` does (SiLU-gated, no biases)."""
    act = getattr(experts, "act_fn", None)
    silu = isinstance(act, torch.nn.SiLU) or type(act).__name__ == "SiLUActivation"
    return (
        silu
        and isinstance(getattr(experts, "gate_up_proj", None), torch.Tensor)
        and isinstance(getattr(experts, "down_proj", None), torch.Tensor)
        and not getattr(experts, "has_bias", False)
        and not getattr(experts, "is_transposed", False)
    )


def _validate(policy: Policy, num_layers: int, k_orig: int) -> None:
    if isinstance(policy, ActivationBudget):
        if policy.num_layers != num_layers:
            raise ConfigError(
                f"the budget has {policy.num_layers} per-layer values but the model has {num_layers} MoE layers",
                hint=f"give exactly {num_layers} values of K_l (1..{k_orig})",
            )
        if policy.k_orig != k_orig:
            raise ConfigError(
                f"the budget was made for k_orig={policy.k_orig} but the model routes top-{k_orig}",
                hint="build the budget from this model (allocmoe allocate) or pass k_orig={k_orig}",
            )
    elif isinstance(policy, ThresholdPolicy):
        if policy.k_orig != k_orig:
            raise ConfigError(f"threshold policy made for k_orig={policy.k_orig}, model routes top-{k_orig}")
    else:
        raise ConfigError(f"not a budget or threshold policy: {type(policy).__name__}")


def apply_budget(model: torch.nn.Module, policy: Policy, **kw) -> BudgetHandle:
    """Apply ``policy`` until ``handle.remove()``; see :func:`budgeted` for the arguments."""
    return BudgetHandle(model, policy, **kw)


@contextmanager
def budgeted(
    model: torch.nn.Module,
    policy: Policy,
    *,
    engine: Engine = "allocmoe",
    backend: str = "auto",
) -> Iterator[BudgetStats]:
    """Run ``model`` under ``policy`` inside the block; yields the per-layer spending statistics.

    ``engine="allocmoe"`` runs the routed experts on the fused sort-by-expert path that skips dropped
    slots; ``engine="hf"`` keeps transformers' own experts forward. ``backend`` picks the kernels
    (``auto``: Triton on CUDA, torch on CPU).
    """
    handle = BudgetHandle(model, policy, engine=engine, backend=backend)
    try:
        yield handle.stats
    finally:
        handle.remove()
