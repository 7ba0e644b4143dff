"""Build a real, trained Qwen2-MoE from dense SmolLM2-135M-Instruct (MoEfication-style upcycling), cached.

No pretrained MoE can be downloaded here, so ``build_moe`` turns the local dense SmolLM2-135M-Instruct
(Llama architecture, 30 layers, MLP width 1536) into a ``Qwen2MoeForCausalLM`` with the routing style of
the paper's Qwen1.5-MoE / DeepSeek-V2-Lite: softmax top-K over ``E`` routed experts, ``norm_topk_prob=False``,
plus an always-on shared expert gated by ``sigmoid(shared_expert_gate(x))``. The choices:

1. **Config** (``upcycle_config``): every Llama field that matters is copied (vocab, hidden, layers, heads,
   kv heads, head_dim, rope parameters, rms eps, tied embeddings, max positions, bos/eos/pad); every layer is
   sparse, no sliding window, ``qkv_bias=False`` (Llama has no q/k/v bias, so attention is exactly Llama's),
   ``moe_intermediate_size=(1536-S)/E``, ``shared_expert_intermediate_size=S``.
2. **Neuron partition** (``partition_neurons``), per layer, from activation statistics of the dense MLP on
   the build tokens: the shared expert takes the ``S`` most important neurons, importance =
   ``mean|silu(gate)*up|`` x the norm of the neuron's ``down_proj`` column; the others are split into ``E``
   equal experts by balanced k-means of their co-activation patterns (L2-normalised ``|activation|`` over a
   token sample; MoEfication, Zhang et al. 2022), assignments made greedily over sorted distances under a
   capacity of ``(1536-S)/E`` per expert.
3. **Exact pieces** (``convert_layer``): attention and norms are copied; the shared expert's
   ``shared_expert_gate`` weight is zero, so its gate is ``sigmoid(0)=0.5`` and its ``down_proj`` is scaled
   by 2 (its output is the exact dense partial sum); routed ``down_proj`` are scaled by ``c = K`` so that a
   router spreading its mass evenly over its K picks (``c*p_e = 1``) reproduces the dense partial sums.
4. **Router training** (``train_router``), sequential layer by layer: layer ``l``'s MLP input comes from the
   already-converted MoE layers ``0..l-1`` (errors do not compound unseen). Experts are frozen, so the
   per-token Gram matrices ``<y_e(x), y_f(x)>`` are precomputed once (``ExpertStats``), then the softmax
   router ``[E, H]`` is trained with Adam on
   ``||shared + sum_topK c*p_e*y_e - dense_mlp(x)||^2 / ||dense_mlp(x)||^2`` plus ``rank_weight`` x the
   cross-entropy of ``p`` towards the K experts with the largest true output norms ``||y_e(x)||`` (the MSE
   term alone only moves the probabilities of experts already picked). A least-squares scalar for the
   routed sum is then folded into the routed ``down_proj`` (it corrects the remaining gap between
   ``c*p_e`` and 1 on average; recorded as ``alpha`` in the report).
5. **End-to-end phase** (``e2e_steps``): routers only (experts, attention, norms frozen), Adam on next-token
   loss + KL(dense || MoE) over batches of build blocks. Measured after the local phase of the default recipe
   (WikiText-2 test 8 x 512): 16 steps of 4 x 256 tokens at lr 5e-3 took 210 s and moved perplexity
   66.6 -> 59.8, accuracy 0.312 -> 0.314, so it is kept (16 steps; the build stays well under 30 minutes).
6. **Data**: build text = Tiny Shakespeare train + GSM8K train + the FIRST half of WikiText-2 valid (each
   capped at ``max_chars``), cut into ``block_size`` blocks of which ``build_blocks`` are drawn (seeded,
   equally from the three). The second half of WikiText-2 valid is reserved for Alloc-L calibration
   (``wikitext2_valid_halves``), WikiText-2 test for evaluation; neither is ever trained on.
7. **Cache**: ``cache_root()/allocmoe/smollm2-moe-<hash>`` (hash of the recipe + the source weights' sha256),
   written into a temp folder and renamed under a ``FileLock``, with ``build.json`` (recipe, stage timings,
   quality report) and a manifest of sizes and sha256 sums; a corrupt or truncated cache is rebuilt.
8. **Quality report**: WikiText-2 test perplexity and next-token accuracy on ``eval_blocks`` x
   ``eval_block_size`` tokens (tokenised by :func:`allocmoe.data.text_blocks`, as ``allocmoe eval`` does)
   for the dense model and the MoE at full budget, plus per-layer expert load (``expert_load``: fraction
   of routed slots per expert, normalised load entropy, mean router max-prob), stage timings (wall) and
   the CPU time of the build and the machine's load average at its end (wall time on shared cores).
9. **Named recipes** (:data:`RECIPES`, ``allocmoe build-model --recipe NAME``, model spec
   ``smollm2-moe:NAME``): ``full`` (the defaults, the model behind the README's numbers) and ``ci`` (the
   same architecture and steps with fewer build tokens and training steps, built by CI and the tour on a
   fresh machine). Each is cached under its own hash; :func:`ensure_built` returns the first one cached.

``E, K, S``: see ``BuildRecipe`` for the defaults and the measured comparison behind them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from allocmoe._upcycle import (
    ExpertStats,
    Partition,
    convert_layer,
    evaluate_lm,
    expert_load,
    finetune_end_to_end,
    partition_neurons,
    train_router,
    upcycle,
)
from allocmoe.data import text_blocks, wikitext2_valid_halves
from effcore.assets import cache_root, cache_status, load_text, prepare_model, quiet_transformers
from effcore.errors import AssetError, ConfigError
from effcore.io import sha256_file, write_json
from effcore.lm import token_blocks

__all__ = [
    "RECIPES",
    "BuildRecipe",
    "ExpertStats",
    "Partition",
    "build_moe",
    "built_recipe",
    "ci_recipe",
    "convert_layer",
    "ensure_built",
    "evaluate_lm",
    "expert_load",
    "full_recipe",
    "load_moe",
    "moe_path",
    "named_recipe",
    "partition_neurons",
    "train_router",
    "upcycle_config",
]

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``; stages: data, dense-eval, convert, e2e, moe-eval, write, verify."""

_FORMAT = 1  # bump when the build algorithm changes in a way the recipe fields do not capture
_MANIFEST = "effml-manifest.json"
_BUILD_HINT = "run `allocmoe build-model{}`"


_ADDED_FIELDS: dict[str, Any] = {"e2e_expert_lr": None, "e2e_aux_weight": 0.0}
"""Recipe fields added in 0.2, with the defaults under which a recipe hashes as in 0.1."""


@dataclass(kw_only=True, slots=True, frozen=True)
class BuildRecipe:
    """Every parameter of the upcycling; ``hash()`` names the cached model.

    Defaults chosen by measurement (2 CPU cores; 48 build blocks, router 200 steps at lr 5e-3 with rank
    weight 0.05; WikiText-2 test 8 x 512 tokens, dense perplexity 27.6 / accuracy 0.398):

    =========================  ==========  ========  ===============  ==========
    E, K, S                    perplexity  accuracy  mean layer NMSE  convert s
    =========================  ==========  ========  ===============  ==========
    16, 4, 512                 96.5        0.295     0.160            139
    16, 4, 384                 125.5       0.278     0.190            134
    16, 6, 512 (default)       67.6        0.308     0.134            162
    =========================  ==========  ========  ===============  ==========

    S=512 beats 384 at the same K; K=6 is much closer to dense than K=4 and keeps Alloc-L profiling at
    30 x 6 = 180 perplexity runs (DeepSeek-V2-Lite's K_orig is 6 too). On a hard layer (3) the router
    settings were then tuned against the oracle "top-K experts by ||y_e||, weight 1" (NMSE 0.296 at K=4):
    lr 5e-3 / rank 0.05 gave 0.389, lr 2e-2 / rank 0.05 0.374, lr 2e-2 / rank 0 0.404, lr 2e-2 / rank 0.5
    0.354; 600 steps instead of 200 gained 0.01. Hence lr 2e-2, rank weight 0.5, 400 steps (about 3 s a layer).
    """

    source: str = "smollm2"
    num_experts: int = 16
    top_k: int = 6
    shared_size: int = 512
    expert_scale: float | None = None  # c; None = top_k
    # data
    block_size: int = 256
    build_blocks: int = 96
    max_chars: int = 600_000
    # partition
    kmeans_tokens: int = 4096
    kmeans_iters: int = 15
    # router training
    router_steps: int = 400
    router_batch: int = 1024
    router_lr: float = 2e-2
    rank_weight: float = 0.5
    fold_scale: bool = True
    # end-to-end phase (routers; and the experts when e2e_expert_lr is set)
    e2e_steps: int = 16
    e2e_lr: float = 5e-3
    e2e_batch: int = 4
    e2e_kl_weight: float = 1.0
    e2e_expert_lr: float | None = None  # None: experts frozen
    e2e_aux_weight: float = 0.0  # x the load-balancing loss
    # evaluation
    eval_blocks: int = 16
    eval_block_size: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        positive = (
            "num_experts top_k block_size build_blocks max_chars kmeans_tokens kmeans_iters router_batch "
            "e2e_batch eval_blocks eval_block_size"
        )
        for name in positive.split():
            if getattr(self, name) < 1:
                raise ConfigError(f"BuildRecipe.{name} must be >= 1, got {getattr(self, name)}")
        if self.top_k > self.num_experts:
            raise ConfigError(
                f"BuildRecipe.top_k must be in [1, num_experts={self.num_experts}], got {self.top_k}"
            )
        if self.shared_size < 0:
            raise ConfigError(f"BuildRecipe.shared_size must be >= 0, got {self.shared_size}")
        for name in ("router_steps", "e2e_steps", "rank_weight", "e2e_aux_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"BuildRecipe.{name} must be >= 0, got {getattr(self, name)}")
        if self.e2e_expert_lr is not None and not self.e2e_expert_lr > 0:
            raise ConfigError(f"BuildRecipe.e2e_expert_lr must be > 0 or None, got {self.e2e_expert_lr}")

    @property
    def scale(self) -> float:
        """The routed experts' output scale ``c`` (``expert_scale`` or ``top_k``)."""
        return float(self.top_k if self.expert_scale is None else self.expert_scale)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def hash(self, source_sha256: str = "") -> str:
        """A 12-hex-digit hash of every field, the build format and the source weights' sha256.

        Fields added after 0.1 enter the hash only when they differ from their defaults, so the builds
        of 0.1 recipes keep their names (and caches).
        """
        recipe = {k: v for k, v in self.to_dict().items() if _ADDED_FIELDS.get(k, object()) != v}
        blob = json.dumps({"recipe": recipe, "format": _FORMAT, "source": source_sha256}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------------------------- recipes


def full_recipe() -> BuildRecipe:
    """The model behind every README number (the defaults; about 10 minutes on 2 CPU cores)."""
    return BuildRecipe()


def ci_recipe() -> BuildRecipe:
    """The same upcycling at reduced cost, for CI and the tour on a fresh machine.

    Same architecture (30 MoE layers, E=16, K=6, S=512: ``B = 180``), same data splits and steps, with
    fewer build tokens, router steps and end-to-end steps, and a smaller report evaluation; see the
    package README for its measured build time and quality.
    """
    return BuildRecipe(
        build_blocks=24,
        kmeans_tokens=2048,
        kmeans_iters=10,
        router_steps=200,
        e2e_steps=4,
        eval_blocks=4,
    )


def experts_recipe() -> BuildRecipe:
    """The full upcycling, then an end-to-end phase that trains the experts too (not only the routers),
    with a load-balancing loss, for longer: 64 steps. Not yet built on the project's machines."""
    return dataclasses.replace(full_recipe(), e2e_steps=64, e2e_expert_lr=5e-4, e2e_aux_weight=0.01)


def ci_experts_recipe() -> BuildRecipe:
    """:func:`ci_recipe` with the experts trained end to end (16 steps) under a load-balancing loss."""
    return dataclasses.replace(ci_recipe(), e2e_steps=16, e2e_expert_lr=5e-4, e2e_aux_weight=0.01)


RECIPES: dict[str, Callable[[], BuildRecipe]] = {
    "full": full_recipe,
    "ci": ci_recipe,
    "experts": experts_recipe,
    "ci-experts": ci_experts_recipe,
}
"""Named build recipes (``allocmoe build-model --recipe NAME``, model spec ``smollm2-moe:NAME``)."""


def named_recipe(name: str) -> BuildRecipe:
    """The :data:`RECIPES` entry ``name``."""
    if name not in RECIPES:
        raise ConfigError(f"unknown build recipe {name!r}", hint=f"known: {', '.join(RECIPES)}")
    return RECIPES[name]()


# ------------------------------------------------------------------------------------------------ config


def upcycle_config(dense_config: Any, recipe: BuildRecipe):
    """The ``Qwen2MoeConfig`` of the MoE upcycled from a Llama config ``dense_config`` under ``recipe``."""
    from transformers import Qwen2MoeConfig

    inter = dense_config.intermediate_size
    routed = inter - recipe.shared_size
    if not 0 <= recipe.shared_size < inter:
        raise ConfigError(f"BuildRecipe.shared_size must be in [0, {inter}), got {recipe.shared_size}")
    if routed % recipe.num_experts:
        raise ConfigError(
            f"{routed} routed neurons (intermediate {inter} - shared {recipe.shared_size}) do not split into "
            f"{recipe.num_experts} equal experts",
            hint="pick num_experts dividing intermediate_size - shared_size",
        )
    head_dim = (
        getattr(dense_config, "head_dim", None)
        or dense_config.hidden_size // dense_config.num_attention_heads
    )
    return Qwen2MoeConfig(
        vocab_size=dense_config.vocab_size,
        hidden_size=dense_config.hidden_size,
        intermediate_size=inter,
        num_hidden_layers=dense_config.num_hidden_layers,
        num_attention_heads=dense_config.num_attention_heads,
        num_key_value_heads=dense_config.num_key_value_heads,
        head_dim=head_dim,
        hidden_act=dense_config.hidden_act,
        max_position_embeddings=dense_config.max_position_embeddings,
        rms_norm_eps=dense_config.rms_norm_eps,
        tie_word_embeddings=dense_config.tie_word_embeddings,
        rope_parameters=dict(dense_config.rope_parameters),
        use_sliding_window=False,
        decoder_sparse_step=1,
        mlp_only_layers=[],
        num_experts=recipe.num_experts,
        num_experts_per_tok=recipe.top_k,
        moe_intermediate_size=routed // recipe.num_experts,
        shared_expert_intermediate_size=recipe.shared_size,
        norm_topk_prob=False,
        qkv_bias=False,
        attention_dropout=0.0,
        bos_token_id=dense_config.bos_token_id,
        eos_token_id=dense_config.eos_token_id,
        pad_token_id=getattr(dense_config, "pad_token_id", None),
    )


# ----------------------------------------------------------------------------------------------- data


def _ids(tokenizer: Any, text: str) -> torch.Tensor:
    return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)


def _eval_blocks(tokenizer: Any, recipe: BuildRecipe, data_dir: str | Path | None) -> torch.Tensor:
    """The report's WikiText-2 test blocks, tokenised as ``allocmoe eval`` tokenises them."""
    return text_blocks(
        tokenizer, "test", blocks=recipe.eval_blocks, block_size=recipe.eval_block_size, data_dir=data_dir
    )


def _cap(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    cut = text.rfind("\n", 0, max_chars)
    return text[: cut if cut > 0 else max_chars]


def _build_blocks(tokenizer: Any, recipe: BuildRecipe, data_dir: str | Path | None) -> torch.Tensor:
    """``build_blocks`` blocks drawn equally from Tiny Shakespeare, GSM8K and WikiText-2 valid's first half."""
    texts = [
        load_text("tinyshakespeare", "train", data_dir=data_dir, max_chars=recipe.max_chars),
        load_text("gsm8k", "train", data_dir=data_dir, max_chars=recipe.max_chars),
        _cap(wikitext2_valid_halves(data_dir)[0], recipe.max_chars),
    ]
    gen = torch.Generator().manual_seed(recipe.seed)
    per = [recipe.build_blocks // 3 + (i < recipe.build_blocks % 3) for i in range(3)]
    out = []
    for text, k in zip(texts, per, strict=True):
        blocks = token_blocks(_ids(tokenizer, text), block_size=recipe.block_size)
        out.append(blocks[torch.randperm(blocks.shape[0], generator=gen)[:k]])
    return torch.cat(out)


# --------------------------------------------------------------------------------------------- caching


def _source_sha256(name: str) -> str:
    """A digest of the prepared source model's manifest (cheap: no weight hashing when already prepared)."""
    folder, reason = cache_status(name)
    if reason is not None:
        folder = prepare_model(name)
    manifest = folder / "effml-manifest.json"
    if not manifest.is_file():
        return hashlib.sha256(str(folder).encode()).hexdigest()
    files = json.loads(manifest.read_text())["files"]
    return hashlib.sha256(
        json.dumps({k: v["sha256"] for k, v in files.items()}, sort_keys=True).encode()
    ).hexdigest()


def _load_source(name: str) -> tuple[torch.nn.Module, Any]:
    from effcore.assets import load_causal_lm

    return load_causal_lm(name)


def moe_path(recipe: BuildRecipe = BuildRecipe(), *, source_sha256: str | None = None) -> Path:
    """The cache folder of the MoE built by ``recipe`` (it may not exist yet)."""
    sha = _source_sha256(recipe.source) if source_sha256 is None else source_sha256
    return cache_root() / "allocmoe" / f"{recipe.source}-moe-{recipe.hash(sha)}"


def _manifest(folder: Path) -> dict[str, dict[str, Any]]:
    return {
        str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != _MANIFEST
    }


def _check(folder: Path, *, full: bool) -> str | None:
    """None when the cache at ``folder`` is complete (``full``: sha256 too), else the reason."""
    try:
        files = json.loads((folder / _MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError):
        return "no manifest (partial or interrupted build)"
    for rel, entry in files.items():
        path = folder / rel
        if not path.is_file() or path.stat().st_size != entry["size"]:
            return f"{rel} is missing or truncated"
        if full and sha256_file(path) != entry["sha256"]:
            return f"{rel} fails its sha256 checksum"
    return None


def build_moe(
    recipe: BuildRecipe = BuildRecipe(),
    *,
    data_dir: str | Path | None = None,
    refresh: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Build (or find in the cache) the MoE of ``recipe`` and return its folder (see the module docstring)."""
    source_sha = _source_sha256(recipe.source)
    folder = moe_path(recipe, source_sha256=source_sha)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not refresh and folder.exists():
            reason = _check(folder, full=True)
            if reason is None:
                return folder
            log.warning("cached MoE at %s is unusable (%s): rebuilding", folder, reason)
        dense, tokenizer = _load_source(recipe.source)
        _build(dense, tokenizer, recipe, folder, source_sha, data_dir, progress)
    return folder


def _build(
    dense: torch.nn.Module,
    tokenizer: Any,
    recipe: BuildRecipe,
    folder: Path,
    source_sha: str,
    data_dir: str | Path | None,
    progress: Progress | None,
) -> None:
    upcycle_config(dense.config, recipe)  # E, S against this MLP width: fail before any work
    timings: dict[str, float] = {}
    cpu0 = time.process_time()

    def stage(name: str, t0: float) -> float:
        timings[name] = round(time.perf_counter() - t0, 2)
        log.info("stage %s: %.1f s", name, timings[name])
        return time.perf_counter()

    t = time.perf_counter()
    if progress:
        progress("data", 0, 1)
    blocks = _build_blocks(tokenizer, recipe, data_dir)
    eval_blocks = _eval_blocks(tokenizer, recipe, data_dir)
    if progress:
        progress("data", 1, 1)
    t = stage("data", t)
    dense_eval = evaluate_lm(dense, eval_blocks, progress=_sub(progress, "dense-eval"))
    t = stage("dense_eval", t)
    moe, layers = upcycle(dense, recipe, blocks, progress=progress)
    t = stage("convert", t)
    e2e = None
    if recipe.e2e_steps:
        e2e = finetune_end_to_end(
            moe,
            dense,
            blocks,
            steps=recipe.e2e_steps,
            batch=recipe.e2e_batch,
            lr=recipe.e2e_lr,
            kl_weight=recipe.e2e_kl_weight,
            seed=recipe.seed,
            expert_lr=recipe.e2e_expert_lr,
            aux_weight=recipe.e2e_aux_weight,
            progress=progress,
        )
        t = stage("e2e", t)
    moe_eval = evaluate_lm(moe, eval_blocks, progress=_sub(progress, "moe-eval"))
    load = expert_load(moe, eval_blocks[: max(1, len(eval_blocks) // 4)])
    t = stage("moe_eval", t)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if progress:
        progress("write", 0, 1)
    moe.save_pretrained(tmp, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    timings["write"] = round(time.perf_counter() - t, 2)
    report = {
        "recipe": recipe.to_dict(),
        "recipe_hash": recipe.hash(source_sha),
        "source_sha256": source_sha,
        "format": _FORMAT,
        "created": time.time(),
        "timings_s": timings,
        "total_s": round(sum(timings.values()), 2),
        "cpu_s": round(time.process_time() - cpu0, 2),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(v, 2) for v in os.getloadavg()],  # 1, 5, 15 min: was the machine shared?
        "quality": {
            "eval": f"wikitext2 test, {eval_blocks.shape[0]} x {eval_blocks.shape[1]} tokens",
            "dense": dense_eval,
            "moe_full_budget": moe_eval,
        },
        "layers": layers,
        "e2e_losses": e2e,
        "expert_load": load,
    }
    write_json(tmp / "build.json", report)
    write_json(tmp / _MANIFEST, {"files": _manifest(tmp)})
    if progress:
        progress("write", 1, 1)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)
    log.info("stage write: %.1f s; MoE written to %s", timings["write"], folder)


def _sub(progress: Progress | None, stage: str) -> Progress | None:
    if progress is None:
        return None
    return lambda _stage, done, total: progress(stage, done, total)


def built_recipe(prefer: Sequence[str] = ("full", "ci")) -> str | None:
    """The first recipe named in ``prefer`` whose model is cached and complete (sizes checked), else None."""
    for name in prefer:
        folder = moe_path(named_recipe(name))
        if folder.exists() and _check(folder, full=False) is None:
            return name
    return None


def ensure_built(
    prefer: Sequence[str] = ("full", "ci"),
    *,
    data_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> tuple[str, Path]:
    """``(name, folder)`` of the first recipe in ``prefer`` already built; when none is, the last one is
    built (cached). Tests and the tour use the full model where it exists and the ci one elsewhere."""
    if not prefer:
        raise ConfigError("ensure_built needs at least one recipe name")
    name = built_recipe(prefer) or prefer[-1]
    return name, build_moe(named_recipe(name), data_dir=data_dir, progress=progress)


def load_moe(path: str | Path | None = None, *, recipe_name: str = "full", dtype: torch.dtype | None = None):
    """Load ``(model, tokenizer)`` of a built MoE in eval mode: from ``path``, else from the cache of the
    recipe ``recipe_name`` (:data:`RECIPES`)."""
    from transformers import AutoTokenizer, Qwen2MoeForCausalLM

    folder = moe_path(named_recipe(recipe_name)) if path is None else Path(path)
    reason = _check(folder, full=False) if folder.exists() else "not built"
    if reason is not None:
        hint = _BUILD_HINT.format(
            "" if path is not None or recipe_name == "full" else f" --recipe {recipe_name}"
        )
        raise AssetError(f"the upcycled MoE at {folder} is unusable: {reason}", hint=hint)
    with quiet_transformers():
        model = Qwen2MoeForCausalLM.from_pretrained(str(folder), dtype=dtype or torch.float32).eval()
    tokenizer = (
        AutoTokenizer.from_pretrained(str(folder)) if (folder / "tokenizer_config.json").is_file() else None
    )
    return model, tokenizer
