"""Per-module forward/backward time, FLOPs, parameter and activation bytes, and whole-model timing."""

from __future__ import annotations

import contextlib
import functools
import gc
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from effcore.errors import ConfigError

__all__ = ["ModelTiming", "ModuleProfile", "profile_decoder", "profile_modules", "time_model"]

OTHER = "other"
Inputs = torch.Tensor | Sequence[Any] | Mapping[str, Any]
LossFn = Callable[[Any], torch.Tensor]


@dataclass(frozen=True, kw_only=True, slots=True)
class ModuleProfile:
    """One row of a profile: a module (or ``"other"``, the time and work no selected module covers).

    Times are in ns, means over the quieter half of the repeats (``backward_ns`` is None when
    backward was not run; a backward span runs from the gradient reaching the module's outputs to
    the last of its input and parameter gradients). FLOPs are FlopCounterMode's (matmuls and
    attention). ``activation_bytes`` are the unique storages saved for backward while the module
    ran, parameters and buffers excluded. A row includes the selected modules nested in it;
    ``calls`` counts forward calls per step (1 for ``"other"``).
    """

    name: str
    forward_ns: int
    backward_ns: int | None
    forward_flops: int
    backward_flops: int | None
    param_bytes: int
    activation_bytes: int
    calls: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelTiming:
    """Whole-model forward (and backward) time in ns, measured without hooks (mean of the quieter half)."""

    forward_ns: int
    backward_ns: int | None
    repeats: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _call(model: nn.Module, inputs: Inputs) -> Any:
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, torch.Tensor):
        return model(inputs)
    return model(*inputs)


def _first_tensor(out: Any) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    values = out.values() if isinstance(out, Mapping) else out if isinstance(out, (tuple, list)) else ()
    for value in values:
        found = _first_tensor(value)
        if found is not None:
            return found
    return None


def _default_loss(out: Any) -> torch.Tensor:
    # HF outputs list `loss` first when labels were given, `logits` otherwise.
    t = _first_tensor(out)
    if t is None or not t.requires_grad:
        raise ConfigError(
            "the model output has no tensor that requires grad", hint="pass loss_fn or backward=False"
        )
    return t.sum()


def _device_of(model: nn.Module) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def _timer(model: nn.Module) -> Callable[[], int]:
    """``perf_counter_ns`` read after the device has finished the work queued so far."""
    device = _device_of(model)
    if device.type != "cuda":
        return time.perf_counter_ns

    def now() -> int:
        torch.cuda.synchronize(device)
        return time.perf_counter_ns()

    return now


def _zero() -> int:
    return 0


def _storage_key(t: torch.Tensor) -> tuple[tuple[str, int | None, int], int] | None:
    try:
        st = t.untyped_storage()
    except (RuntimeError, NotImplementedError):  # sparse/nested/subclass tensors have no plain storage
        return None
    return ((t.device.type, t.device.index, st.data_ptr()), st.nbytes()) if st.nbytes() else None


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    # A collection inside a timed region is noise, not model time (timeit does the same); no
    # gc.collect() first: on a heap holding transformers it alone takes a few hundred ms.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class _Hooks:
    """Instruments the selected modules: forward and backward spans in ns and in FLOPs, calls."""

    def __init__(self, model: nn.Module, names: Sequence[str], *, backward: bool, now: Callable[[], int]):
        self.mods = [model.get_submodule(n) for n in names]
        self.now, self.flops = now, _zero
        self.owned_params: list[list[nn.Parameter]] = []
        seen: set[int] = set()
        for mod in self.mods:
            params = [p for p in mod.parameters() if id(p) not in seen]
            seen.update(id(p) for p in params)
            self.owned_params.append(params)
        self.handles: list[Any] = []
        self.patched: list[tuple[nn.Module, Any]] = []
        for i, mod in enumerate(self.mods):
            self._wrap_forward(i, mod)
            if backward:
                self.handles += [
                    mod.register_full_backward_pre_hook(self._bwd_pre(i)),
                    mod.register_full_backward_hook(self._bwd(i)),
                ]
                self.handles += [
                    p.register_post_accumulate_grad_hook(self._acc(i)) for p in self.owned_params[i]
                ]
        self.reset()

    def reset(self) -> None:
        n = len(self.mods)
        self.fwd_ns, self.fwd_flops, self.calls = [0] * n, [0] * n, [0] * n
        self.bwd_start: list[tuple[int, int] | None] = [None] * n
        self.bwd_end: list[tuple[int, int] | None] = [None] * n
        self.active: list[int] = []

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        for mod, previous in reversed(self.patched):
            if previous is None:
                del mod.forward
            else:
                mod.forward = previous

    def _mark(self) -> tuple[int, int]:
        return self.now(), self.flops()

    def _wrap_forward(self, i: int, mod: nn.Module) -> None:
        # A wrapper on the instance's forward rather than forward hooks: any hook sends every call
        # through nn.Module's slow path, measured at ~5 % of the tiny Llama's forward (~1 % for this).
        previous = mod.__dict__.get("forward")  # accelerate and others patch forward the same way
        inner = mod.forward

        @functools.wraps(inner)
        def forward(*args: Any, **kwargs: Any) -> Any:
            self.active.append(i)
            t0, f0 = self._mark()
            try:
                return inner(*args, **kwargs)
            finally:
                t1, f1 = self._mark()
                self.fwd_ns[i] += t1 - t0
                self.fwd_flops[i] += f1 - f0
                self.calls[i] += 1
                self.active.pop()

        mod.forward = forward
        self.patched.append((mod, previous))

    def _bwd_pre(self, i: int) -> Callable[..., None]:
        def hook(mod: nn.Module, grad_output: Any) -> None:
            if self.bwd_start[i] is None:
                self.bwd_start[i] = self._mark()

        return hook

    def _bwd(self, i: int) -> Callable[..., None]:
        # Fires when the gradient w.r.t. the module's inputs is ready; for a module whose inputs need
        # no gradient (an embedding) that is at once, so parameter-gradient hooks extend the span.
        def hook(mod: nn.Module, grad_input: Any, grad_output: Any) -> None:
            self.bwd_end[i] = self._mark()

        return hook

    def _acc(self, i: int) -> Callable[..., None]:
        def hook(param: torch.Tensor) -> None:
            self.bwd_end[i] = self._mark()

        return hook

    def bwd_span(self, i: int) -> tuple[int, int]:
        start, end = self.bwd_start[i], self.bwd_end[i]
        if start is None or end is None:
            return 0, 0
        return end[0] - start[0], end[1] - start[1]


def _steps(
    model: nn.Module,
    inputs: Inputs,
    *,
    warmup: int,
    repeats: int,
    backward: bool,
    loss_fn: LossFn,
    now: Callable[[], int],
    before: Callable[[], None] = lambda: None,
    after: Callable[[int, int], None] | None = None,
) -> tuple[list[int], list[int]]:
    """Run ``warmup + repeats`` steps; return the forward (and backward) times of the timed ones."""
    if warmup < 0 or repeats < 1:
        raise ConfigError(f"need warmup >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}")
    fwd, bwd = [], []
    grad_mode = torch.enable_grad() if backward else torch.inference_mode()
    with _gc_paused(), grad_mode, warnings.catch_warnings():
        # Modules whose inputs need no gradient (embeddings) trigger this; parameter hooks cover them.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        for step in range(warmup + repeats):
            before()
            t0 = now()
            out = _call(model, inputs)
            t1 = now()
            b_ns = 0
            if backward:
                loss = loss_fn(out)
                t2 = now()
                loss.backward()
                b_ns = now() - t2
                model.zero_grad(set_to_none=True)
            del out
            if step >= warmup:
                fwd.append(t1 - t0)
                bwd.append(b_ns)
                if after is not None:
                    after(t1 - t0, b_ns)
    return fwd, bwd


# Times are means over the quieter half of the timed steps, ranked by whole-step time: a trimmed
# mean that drops preempted or otherwise disturbed steps like a median does, but adds up. Per-row
# medians do not: on a shared machine most steps lose time to preemption in *some* row, each row's
# median drops it, and the rows' medians then sum to less than the whole step's median.
_QUIET_FRACTION = 0.5


def _quiet_steps(totals: Sequence[int]) -> list[int]:
    keep = max(1, round(len(totals) * _QUIET_FRACTION))
    return sorted(range(len(totals)), key=totals.__getitem__)[:keep]


def _quiet_mean(xs: Sequence[int], steps: Sequence[int]) -> int:
    return round(statistics.fmean(xs[i] for i in steps))


def time_model(
    model: nn.Module,
    inputs: Inputs,
    *,
    warmup: int = 3,
    repeats: int = 20,
    backward: bool = False,
    loss_fn: LossFn | None = None,
) -> ModelTiming:
    """Whole-model time without hooks (mean of the quieter half of ``repeats`` steps).

    Forward-only timing runs under ``torch.inference_mode``; ``backward=True`` also times
    ``loss_fn(output).backward()`` and leaves the parameters' ``.grad`` as None.
    """
    fwd, bwd = _steps(
        model,
        inputs,
        warmup=warmup,
        repeats=repeats,
        backward=backward,
        loss_fn=loss_fn or _default_loss,
        now=_timer(model),
    )
    return ModelTiming(
        forward_ns=_quiet_mean(fwd, _quiet_steps(fwd)),
        backward_ns=_quiet_mean(bwd, _quiet_steps(bwd)) if backward else None,
        repeats=repeats,
    )


def _outermost(names: Sequence[str]) -> list[int]:
    def inside(a: str, b: str) -> bool:  # b strictly inside a
        return a != b and (a == "" or b.startswith(a + "."))

    return [j for j, b in enumerate(names) if not any(inside(a, b) for a in names)]


def _unique_bytes(params: Sequence[torch.Tensor], seen: set) -> int:
    total = 0
    for p in params:
        key = _storage_key(p)
        if key is not None and key[0] not in seen:
            seen.add(key[0])
            total += key[1]
    return total


_INPLACE_ON_HOOKED = "BackwardHookFunction"  # torch's error when a hooked module's output is changed in place


def _modified_in_place(model: nn.Module, inputs: Inputs, names: Sequence[str]) -> str:
    """The first selected module whose output alone, backward-hooked, triggers the in-place error."""
    for name in names:
        handle = model.get_submodule(name).register_full_backward_hook(lambda *_: None)
        try:
            with torch.enable_grad(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                _call(model, inputs)
        except RuntimeError as err:
            if _INPLACE_ON_HOOKED in str(err):
                return name
            raise
        finally:
            handle.remove()
    return ", ".join(names)


def _measure_work(
    model: nn.Module,
    inputs: Inputs,
    names: Sequence[str],
    *,
    backward: bool,
    loss_fn: LossFn,
) -> tuple[_Hooks, int, int, list[int]]:
    """One untimed step under FlopCounterMode and a saved-tensors hook: FLOPs and activation bytes."""
    hooks = _Hooks(model, names, backward=backward, now=_zero)
    state_keys = {k[0] for t in (*model.parameters(), *model.buffers()) if (k := _storage_key(t)) is not None}
    saved: set = set()
    act_bytes = [0] * (len(names) + 1)  # last slot: saved outside every selected module

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key is not None and key[0] not in state_keys and key[0] not in saved:
            saved.add(key[0])
            # Every selected module running now saved it: a module's row includes its selected children.
            for i in hooks.active or [-1]:
                act_bytes[i] += key[1]
        return t

    counter = FlopCounterMode(display=False)
    hooks.flops = counter.get_total_flops
    try:
        with counter, torch.enable_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                out = _call(model, inputs)
            fwd_total = counter.get_total_flops()
            if backward:
                loss_fn(out).backward()
                model.zero_grad(set_to_none=True)
            bwd_total = counter.get_total_flops() - fwd_total
    finally:
        hooks.remove()
    return hooks, fwd_total, bwd_total, act_bytes


def profile_modules(
    model: nn.Module,
    inputs: Inputs,
    *,
    modules: Sequence[str] | None = None,
    warmup: int = 3,
    repeats: int = 20,
    backward: bool = True,
    loss_fn: LossFn | None = None,
) -> list[ModuleProfile]:
    """Profile the named submodules (default: the direct children) of ``model`` on ``inputs``.

    Rows follow ``modules``, then an ``"other"`` row: the whole step minus the outermost selected
    modules, so the rows' times add up to the (hooked) whole-model time. Forward-only profiling
    (``backward=False``) times under ``torch.inference_mode``; backward runs ``loss_fn(output)``
    (default: the sum of the first output tensor) and leaves the parameters' ``.grad`` as None.
    FLOPs and activation bytes come from one extra, untimed step.
    """
    names = list(modules) if modules is not None else [n for n, _ in model.named_children()]
    if not names:
        raise ConfigError("no modules to profile", hint="pass modules=[...] with submodule names")
    for name in names:
        try:
            model.get_submodule(name)
        except AttributeError:
            raise ConfigError(f"{type(model).__name__} has no submodule {name!r}") from None
    loss = loss_fn or _default_loss
    try:
        work, fwd_total, bwd_total, act_bytes = _measure_work(
            model, inputs, names, backward=backward, loss_fn=loss
        )
    except RuntimeError as err:
        if _INPLACE_ON_HOOKED not in str(err):
            raise
        culprit = _modified_in_place(model, inputs, names)
        raise ConfigError(
            f"the output of module {culprit!r} is modified in place after it returns, so its backward "
            "time cannot be hooked",
            hint="profile with backward=False, select its parent or its children instead, "
            "or make that in-place op out-of-place",
        ) from None

    now = _timer(model)
    hooks = _Hooks(model, names, backward=backward, now=now)
    top = _outermost(names)
    per_mod_fwd: list[list[int]] = [[] for _ in names]
    per_mod_bwd: list[list[int]] = [[] for _ in names]
    other_fwd: list[int] = []
    other_bwd: list[int] = []

    def after(f_ns: int, b_ns: int) -> None:
        spans = [hooks.bwd_span(i)[0] for i in range(len(names))]
        for i in range(len(names)):
            per_mod_fwd[i].append(hooks.fwd_ns[i])
            per_mod_bwd[i].append(spans[i])
        other_fwd.append(f_ns - sum(hooks.fwd_ns[i] for i in top))
        other_bwd.append(b_ns - sum(spans[i] for i in top))

    try:
        fwd_steps, bwd_steps = _steps(
            model,
            inputs,
            warmup=warmup,
            repeats=repeats,
            backward=backward,
            loss_fn=loss,
            now=now,
            before=hooks.reset,
            after=after,
        )
    finally:
        hooks.remove()

    quiet_fwd, quiet_bwd = _quiet_steps(fwd_steps), _quiet_steps(bwd_steps)
    seen_params: set = set()
    rows = []
    for i, name in enumerate(names):
        bwd_flops = work.bwd_span(i)[1]
        rows.append(
            ModuleProfile(
                name=name,
                forward_ns=_quiet_mean(per_mod_fwd[i], quiet_fwd),
                backward_ns=_quiet_mean(per_mod_bwd[i], quiet_bwd) if backward else None,
                forward_flops=work.fwd_flops[i],
                backward_flops=bwd_flops if backward else None,
                param_bytes=_unique_bytes(
                    list(model.get_submodule(name).parameters()), seen_params if i in top else set()
                ),
                activation_bytes=act_bytes[i],
                calls=work.calls[i],
            )
        )
    rows.append(
        ModuleProfile(
            name=OTHER,
            forward_ns=_quiet_mean(other_fwd, quiet_fwd),
            backward_ns=_quiet_mean(other_bwd, quiet_bwd) if backward else None,
            forward_flops=fwd_total - sum(work.fwd_flops[i] for i in top),
            backward_flops=bwd_total - sum(work.bwd_span(i)[1] for i in top) if backward else None,
            param_bytes=_unique_bytes(list(model.parameters()), seen_params),
            activation_bytes=act_bytes[-1],
            calls=1,
        )
    )
    return rows


def _decoder_pieces(model: nn.Module) -> list[str]:
    inner = getattr(model, "model", None)
    needed = ("embed_tokens", "layers", "norm")
    if inner is None or not all(hasattr(inner, a) for a in needed) or not hasattr(model, "lm_head"):
        raise ConfigError(
            f"{type(model).__name__} is not a HF causal LM with model.embed_tokens/layers/norm and lm_head",
            hint="use profile_modules(model, inputs, modules=[...]) with explicit names",
        )
    names = ["model.embed_tokens"]
    if isinstance(getattr(inner, "rotary_emb", None), nn.Module):
        names.append("model.rotary_emb")
    names += [f"model.layers.{i}" for i in range(len(inner.layers))]
    return [*names, "model.norm", "lm_head"]


def profile_decoder(
    model: nn.Module,
    input_ids: torch.Tensor,
    *,
    warmup: int = 3,
    repeats: int = 20,
    backward: bool = False,
    **forward_kwargs: Any,
) -> list[ModuleProfile]:
    """One row per top-level piece of a HF causal LM plus ``"other"`` (masks, cache, glue, hook overhead).

    Pieces: ``model.embed_tokens``, ``model.rotary_emb`` (when present), each ``model.layers.i``,
    ``model.norm``, ``lm_head``. Forward-only by default, under ``torch.inference_mode``. The rows'
    forward times add up to the hooked whole-model time, which stays within a few % of
    ``time_model(model, {"input_ids": input_ids, **forward_kwargs})``; on a shared machine compare
    the two back to back, several times, as load drifts between separate measurements.
    """
    inputs = {"input_ids": input_ids, **forward_kwargs}
    return profile_modules(
        model,
        inputs,
        modules=_decoder_pieces(model),
        warmup=warmup,
        repeats=repeats,
        backward=backward,
    )
