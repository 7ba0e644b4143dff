"""Checkpoints of a ParallelModel: sharded with torch.distributed.checkpoint, keyed by the HF model's names.

Every rank writes its own pieces of the model (and of the optimizer state) into one DCP folder. The
keys are the HF model's parameter names and each saved tensor is the HF model's own global tensor,
so the layout does not depend on how the run was split: a checkpoint saved on one mesh
``(dp, tp, pp)`` loads on any other, DCP reading for each rank just the boxes it holds.

The one place where a rank's shard is not a single box of the HF tensor is a fused column-parallel
matrix (GPT-2's ``c_attn``): tensor parallelism permutes its output dim so that each rank holds its
slice of q, of k and of v (``merak.tp.fused_order``). Such a shard is described to DCP as several
boxes through DCP's ``CheckpointableTensor`` protocol (one box per run of consecutive HF indices),
so it is saved un-permuted and reshards like any other tensor. Beside the DCP files, a small JSON
manifest (``merak.json``) records the mesh, the stage plan, the model and the step; it is written
last, and the folder appears under its name only once complete (written under a temporary name,
then renamed).

``export_hf`` writes a plain HF folder (``config.json`` + safetensors, one file per pipeline
stage) from a live run; ``to_hf`` does the same offline, in one process, from a checkpoint folder.
"""

from __future__ import annotations

import logging
import pickle
import shutil
import uuid
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.tensor import DTensor

from effcore.errors import EffmlError
from effcore.io import atomic_write_text, write_json
from merak.parallel import ParallelModel
from merak.tp import fused_order

__all__ = ["FORMAT", "MANIFEST", "VERSION", "CheckpointError", "Manifest", "export_hf", "load", "read_manifest",
           "save", "to_hf"]  # fmt: skip

log = logging.getLogger(__name__)

FORMAT = "merak-checkpoint"
VERSION = 1
MANIFEST = "merak.json"
_VOLATILE = {"transformers_version", "_name_or_path", "architectures", "dtype", "torch_dtype", "use_cache"}


class CheckpointError(EffmlError):
    """A checkpoint is missing, damaged, or does not fit the model or optimizer it is loaded into."""


@dataclass(kw_only=True, slots=True)
class Manifest:
    """What ``merak.json`` records about a checkpoint (``mesh`` as dp/tp/pp sizes, ``stages`` as the
    HF parameter names each pipeline stage held, ``params`` as HF name -> global shape)."""

    step: int
    mesh: dict[str, int]
    stages: list[list[str]]
    model_class: str
    config: dict[str, Any]
    params: dict[str, list[int]]
    optimizer: str | None
    format: str = FORMAT
    version: int = VERSION

    def mesh_text(self) -> str:
        return _mesh_text(self.mesh)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mesh_text(mesh: dict[str, int]) -> str:
    return f"(dp={mesh['dp']}, tp={mesh['tp']}, pp={mesh['pp']})"


def _mesh_of(pm: ParallelModel) -> dict[str, int]:
    return {dim: pm.mesh[dim].size() for dim in ("dp", "tp", "pp")}


def read_manifest(folder: str | Path) -> Manifest:
    """Read and check ``folder/merak.json``; raises :class:`CheckpointError` naming what is wrong."""
    import json

    folder = Path(folder)
    fix = "give the folder that merak.checkpoint.save wrote"
    if not folder.is_dir():
        raise CheckpointError(f"no checkpoint at {folder}", hint=fix)
    path = folder / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{folder} is not a merak checkpoint (no {MANIFEST})", hint=fix)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CheckpointError(
            f"{path} is damaged: {err.msg} at line {err.lineno}", hint="save it again"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} manifest", hint=fix)
    if data.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has format version {data.get('version')!r}; this merak reads version {VERSION}",
            hint="load it with the merak version that wrote it",
        )
    fields = set(Manifest.__dataclass_fields__)
    missing = sorted(fields - set(data))
    if missing:
        raise CheckpointError(f"{path} lacks the field {missing[0]!r}", hint="save it again")
    if not (folder / ".metadata").is_file():
        raise CheckpointError(f"{folder} has no DCP metadata (.metadata)", hint="save it again")
    return Manifest(**{k: data[k] for k in fields})


def _fused(pm: ParallelModel) -> dict[str, tuple[int, int]]:
    """HF parameter name -> (permuted dim, chunks) for each fused column-parallel matrix and bias."""
    out = {}
    for plans in pm.tp_plans.values():
        for lp in plans:
            if lp.chunks > 1:
                out[f"{lp.module}.weight"] = (0 if lp.kind == "linear" else 1, lp.chunks)
                out[f"{lp.module}.bias"] = (0, lp.chunks)
    return out


def _boxes(value: torch.Tensor, fused: tuple[int, int] | None, tp: int) -> torch.Tensor:
    """A view of this rank's piece of ``value`` (a parameter or optimizer state, DTensor or plain)
    that tells DCP where it lies in the HF tensor: one box, or one per run of a permuted fused dim."""
    shape = tuple(value.shape)
    if isinstance(value, DTensor):
        local = value.to_local()
        (chunk,) = value.__create_chunk_list__()  # DCP's own description of the DTensor's shard
        offsets, sizes = tuple(chunk.offsets), tuple(chunk.sizes)
    else:
        local, offsets, sizes = value, (0,) * len(shape), shape
    zero = (0,) * len(shape)
    runs = [(offsets, zero, sizes)]
    if fused is not None and tp > 1:
        dim, chunks = fused
        order = fused_order(shape[dim], chunks, tp).tolist()  # position p holds HF index order[p]
        start, end = offsets[dim], offsets[dim] + sizes[dim]
        runs, p = [], start
        while p < end:
            q = p + 1
            while q < end and order[q] == order[q - 1] + 1:
                q += 1
            runs.append((_put(offsets, dim, order[p]), _put(zero, dim, p - start), _put(sizes, dim, q - p)))
            p = q
    runs = [run for run in runs if all(run[2])]  # an empty FSDP shard holds nothing
    view = local.detach()  # a new tensor on the same storage: loading writes into the parameter
    view.global_shape = shape
    view.global_offsets = tuple(r[0] for r in runs)
    view.local_offsets = tuple(r[1] for r in runs)
    view.local_sizes = tuple(r[2] for r in runs)
    return view


def _put(values: tuple[int, ...], dim: int, value: int) -> tuple[int, ...]:
    return (*values[:dim], value, *values[dim + 1 :])


def _state(pm: ParallelModel, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    """The DCP state dict of this rank: ``model``, and ``optim`` (per HF name: each state entry and
    the hyperparameters of its group) when an optimizer is given."""
    fused, tp = _fused(pm), pm.mesh["tp"].size()
    named = pm.named_hf_parameters()
    state: dict[str, Any] = {"model": {n: _boxes(p, fused.get(n), tp) for n, p in named}}
    if optimizer is None:
        return state
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    optim: dict[str, Any] = {}
    for name, param in named:
        entries = optimizer.state.get(param)
        if not entries:
            continue
        hyper = {k: v for k, v in group_of[id(param)].items() if k != "params"}
        optim[name] = {"hyper": pickle.dumps(hyper)}
        for key, value in entries.items():
            like_param = isinstance(value, torch.Tensor) and value.shape == param.shape and value.dim() > 0
            optim[name][key] = _boxes(value, fused.get(name), tp) if like_param else value
    state["optim"] = optim
    return state


def _hf_shapes(model: nn.Module) -> dict[str, list[int]]:
    return {n: list(p.shape) for n, p in model.named_parameters(remove_duplicate=False)}


def _shared_token() -> str:
    token = [uuid.uuid4().hex[:12]]
    dist.broadcast_object_list(token, src=0)
    return token[0]


def save(
    pm: ParallelModel, folder: str | Path, *, optimizer: torch.optim.Optimizer | None = None, step: int = 0
) -> Path:
    """Save this run (every rank calls it): each rank writes its shards of the model, and of
    ``optimizer``'s state when given, under HF names; then ``merak.json``. ``folder`` appears only
    when complete; an existing checkpoint there is replaced. Returns ``folder``."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(
            f"cannot save a checkpoint to {folder}: it is a file", hint="choose a folder path"
        )
    token = _shared_token()
    tmp = folder.with_name(f".{folder.name}.tmp-{token}")
    stages: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(stages, (pm.stage_index, sorted(n for n, _ in pm.named_hf_parameters())))
    try:
        dcp.save(_state(pm, optimizer), storage_writer=FileSystemWriter(tmp))
    except CheckpointException as err:  # DCP raises it on every rank when any rank failed
        if dist.get_rank() == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"cannot save a checkpoint to {folder}: {_first_failure(err)}") from None
    failed = [None]
    if dist.get_rank() == 0:
        manifest = Manifest(
            step=step,
            mesh=_mesh_of(pm),
            stages=[dict(stages)[s] for s in range(len(pm.plan.stages))],
            model_class=type(pm.model).__name__,
            config=_config_dict(pm.model.config),
            params=_hf_shapes(pm.model),
            optimizer=None if optimizer is None else type(optimizer).__name__,
        )
        try:
            _publish(tmp, folder, manifest, token)
        except OSError as err:
            shutil.rmtree(tmp, ignore_errors=True)
            failed = [f"{type(err).__name__}: {err}"]
    dist.broadcast_object_list(failed, src=0)
    if failed[0] is not None:
        raise CheckpointError(f"cannot save a checkpoint to {folder}: {failed[0]}")
    return folder


def _first_failure(err: CheckpointException) -> str:
    """The first failing rank's error, in one line (DCP's own message holds every rank's traceback)."""
    rank, (exc, _) = min(err.failures.items(), key=lambda item: item[0])
    lines = str(exc).strip().splitlines()
    return f"rank {rank}: {type(exc).__name__}" + (f": {lines[0]}" if lines else "")


def _publish(tmp: Path, folder: Path, manifest: Manifest, token: str) -> None:
    """Write the manifest into the finished ``tmp`` folder and put it in ``folder``'s place."""
    write_json(tmp / MANIFEST, manifest.to_dict())
    old = folder.with_name(f".{folder.name}.old-{token}")
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def _config_dict(config: Any) -> dict[str, Any]:
    """The config as JSON would give it back (tuples as lists, dtypes as strings)."""
    import json

    return json.loads(json.dumps(config.to_dict(), default=str))


def _config_diff(saved: dict[str, Any], here: dict[str, Any]) -> list[str]:
    keys = sorted((set(saved) | set(here)) - _VOLATILE)
    return [f"{k}={saved.get(k)!r} there, {here.get(k)!r} here" for k in keys if saved.get(k) != here.get(k)]


def _check_model(manifest: Manifest, model: nn.Module, folder: Path) -> None:
    here = _hf_shapes(model)
    if manifest.model_class == type(model).__name__ and manifest.params == here:
        return
    diff = _config_diff(manifest.config, _config_dict(model.config))
    if manifest.model_class != type(model).__name__:
        diff.insert(0, f"{manifest.model_class} there, {type(model).__name__} here")
    if not diff:
        name = next(
            n for n in sorted(set(manifest.params) | set(here)) if manifest.params.get(n) != here.get(n)
        )
        diff = [f"{name}: {manifest.params.get(name)} there, {here.get(name)} here"]
    raise CheckpointError(
        f"checkpoint {folder} holds a different model ({'; '.join(diff[:3])})",
        hint="load it into the model config it was saved from",
    )


def _init_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Create the optimizer's state tensors (a step with zero gradients at learning rate 0), so
    that DCP has tensors of the right layout to load into. Gradients are left as they were."""
    params = [p for g in optimizer.param_groups for p in g["params"] if p.requires_grad]
    if all(p in optimizer.state for p in params):
        return
    grads = [p.grad for p in params]
    lrs = [g["lr"] for g in optimizer.param_groups]
    with torch.no_grad():
        for p in params:
            p.grad = torch.zeros_like(p)
        for g in optimizer.param_groups:
            g["lr"] = torch.zeros_like(g["lr"]) if isinstance(g["lr"], torch.Tensor) else 0.0
        optimizer.step()
    for g, lr in zip(optimizer.param_groups, lrs, strict=True):
        g["lr"] = lr
    for p, grad in zip(params, grads, strict=True):
        p.grad = grad


def load(pm: ParallelModel, folder: str | Path, *, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Load a checkpoint into ``pm`` (and ``optimizer``'s state and hyperparameters when given);
    every rank calls it. The checkpoint may come from any mesh. Returns the step it was saved at."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    _check_model(manifest, pm.model, folder)
    if optimizer is not None and manifest.optimizer != type(optimizer).__name__:
        saved = manifest.optimizer or "no optimizer state"
        raise CheckpointError(
            f"checkpoint {folder} holds {saved}, not {type(optimizer).__name__} state",
            hint="pass the optimizer class it was saved with, or optimizer=None to load the model only",
        )
    if manifest.mesh != _mesh_of(pm):
        log.info("resharding %s from mesh %s to %s", folder, manifest.mesh_text(), _mesh_text(_mesh_of(pm)))
    reader = FileSystemReader(folder)
    saved_keys = set(reader.read_metadata().state_dict_metadata)
    if optimizer is not None:
        _init_optimizer_state(optimizer)
    state = _state(pm, optimizer)
    for name in list(state.get("optim", {})):
        if f"optim.{name}.hyper" not in saved_keys:  # no state saved for it: it had never stepped
            del state["optim"][name]
    try:
        dcp.load(state, storage_reader=reader)
    except CheckpointException as err:
        raise CheckpointError(
            f"cannot read checkpoint {folder}: {_first_failure(err)}", hint="save it again"
        ) from None
    if optimizer is not None:
        _restore_optimizer(pm, optimizer, state["optim"])
    return manifest.step


def _restore_optimizer(pm: ParallelModel, optimizer: torch.optim.Optimizer, loaded: dict[str, Any]) -> None:
    """Put back what DCP loaded by value (non-tensor state, group hyperparameters)."""
    names: dict[int, str] = {}
    for name, param in pm.named_hf_parameters():
        names.setdefault(id(param), name)
    for param, entries in optimizer.state.items():
        name = names.get(id(param))
        if name not in loaded:
            continue
        for key, value in loaded[name].items():
            if key != "hyper" and not isinstance(value, torch.Tensor):
                entries[key] = value
    for group in optimizer.param_groups:
        name = next((names[id(p)] for p in group["params"] if names.get(id(p)) in loaded), None)
        if name is not None:
            group.update(pickle.loads(loaded[name]["hyper"]))


def _hf_layout(config: Any) -> set[str]:
    """The names HF's ``save_pretrained`` writes for ``config``'s model: parameters (a tied weight
    once, under its first name) and persistent buffers. Built on the meta device: no memory."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(config)
    aliases = {n for n, _ in meta.named_parameters(remove_duplicate=False)} - dict(
        meta.named_parameters()
    ).keys()
    return set(meta.state_dict()) - aliases


def _weights_file(stage: int, stages: int) -> str:
    return "model.safetensors" if stages == 1 else f"model-{stage + 1:05d}-of-{stages:05d}.safetensors"


def _finish_hf(
    tmp: Path, out: Path, config: Any, architecture: str, sizes: dict[str, tuple[str, int]]
) -> None:
    """Write the config (and, for several weight files, their index) into ``tmp``, then move every
    file into ``out``, removing weight files of an earlier export that this one does not rewrite.
    ``sizes``: tensor name -> (weight file, bytes)."""
    import json

    config = config.__class__.from_dict(config.to_dict())  # a copy: the run's config stays as it is
    config.architectures = [architecture]
    config.save_pretrained(tmp)
    files = {file for file, _ in sizes.values()}
    if len(files) > 1:
        index = {
            "metadata": {"total_size": sum(size for _, size in sizes.values())},
            "weight_map": {name: file for name, (file, _) in sorted(sizes.items())},
        }
        atomic_write_text(tmp / "model.safetensors.index.json", json.dumps(index, indent=2) + "\n")
    for stale in [*out.glob("model*.safetensors"), *out.glob("model.safetensors.index.json")]:
        if not (tmp / stale.name).exists():
            stale.unlink()
    for path in tmp.iterdir():
        path.chmod(0o644)  # safetensors creates its files readable by their owner only
        path.replace(out / path.name)
    tmp.rmdir()


def export_hf(pm: ParallelModel, out_folder: str | Path) -> Path:
    """Write the run's current weights as a HF model folder that ``from_pretrained`` loads (every
    rank calls it; one rank per pipeline stage writes that stage's safetensors file). Files in
    ``out_folder`` other than the model's are kept. Returns ``out_folder``."""
    from safetensors.torch import save_file

    out = Path(out_folder)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"cannot export to {out}: it is a file", hint="choose a folder path")
    tensors = pm.full_tensors()  # collective over each stage's tp and dp ranks
    keep = _hf_layout(pm.model.config)
    file = _weights_file(pm.stage_index, len(pm.plan.stages))
    tmp = out / f".merak-export-{_shared_token()}"
    result: dict[str, tuple[str, int]] | str = {}
    if pm.mesh["dp"].get_local_rank() == 0 and pm.mesh["tp"].get_local_rank() == 0:  # one writer per stage
        mine = {n: t.contiguous() for n, t in tensors.items() if n in keep}
        if pm.stage_index == 0:  # persistent buffers (most LMs have none) travel with the first stage
            mine |= {n: b.detach().clone() for n, b in pm.model.named_buffers() if n in keep}
        try:
            tmp.mkdir(parents=True, exist_ok=True)
            save_file(mine, str(tmp / file), metadata={"format": "pt"})
            result = {n: (file, t.numel() * t.element_size()) for n, t in mine.items()}
        except OSError as err:
            result = f"{type(err).__name__}: {err}"
    results: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(results, result)
    failed = next((r for r in results if isinstance(r, str)), None)
    sizes = {} if failed else {n: v for part in results for n, v in part.items()}
    if failed is None and keep - set(sizes):
        failed = f"no stage holds {sorted(keep - set(sizes))[0]}"
    if failed is None and dist.get_rank() == 0:
        try:
            _finish_hf(tmp, out, pm.model.config, type(pm.model).__name__, sizes)
        except OSError as err:
            failed = f"{type(err).__name__}: {err}"
    status = [failed]
    dist.broadcast_object_list(status, src=0)
    if status[0] is not None:
        if dist.get_rank() == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"cannot export to {out}: {status[0]}")
    return out


def to_hf(folder: str | Path, out_folder: str | Path) -> Path:
    """Convert a checkpoint folder into a HF model folder, offline, in this one process (no process
    group): the checkpoint holds the HF tensors themselves, whatever mesh saved it."""
    from safetensors.torch import save_file
    from transformers import AutoConfig

    folder, out = Path(folder), Path(out_folder)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"cannot export to {out}: it is a file", hint="choose a folder path")
    manifest = read_manifest(folder)
    config = AutoConfig.for_model(manifest.config["model_type"]).__class__.from_dict(manifest.config)
    keep = _hf_layout(config)
    reader = FileSystemReader(folder)
    saved = reader.read_metadata().state_dict_metadata
    tensors = {}
    for name in sorted(keep & set(manifest.params)):
        md = saved[f"model.{name}"]
        tensors[name] = torch.empty(md.size, dtype=md.properties.dtype)
    with warnings.catch_warnings():  # one process on purpose
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load({"model": tensors}, storage_reader=reader, no_dist=True)
    file = _weights_file(0, 1)
    tmp = out / f".merak-export-{uuid.uuid4().hex[:12]}"
    tmp.mkdir(parents=True)
    try:
        save_file(tensors, str(tmp / file), metadata={"format": "pt"})
        sizes = {n: (file, t.numel() * t.element_size()) for n, t in tensors.items()}
        _finish_hf(tmp, out, config, manifest.model_class, sizes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
