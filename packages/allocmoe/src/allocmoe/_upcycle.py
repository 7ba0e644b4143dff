"""The upcycling machinery behind :func:`allocmoe.build.build_moe`: neuron partition, layer conversion,
router training (local, layer by layer) and the optional end-to-end router phase.

See :mod:`allocmoe.build` for the recipe, its measured choices and the cache.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from effcore.errors import ConfigError

if TYPE_CHECKING:
    from allocmoe.build import BuildRecipe

__all__ = [
    "ExpertStats",
    "Partition",
    "balanced_kmeans",
    "convert_layer",
    "evaluate_lm",
    "expert_load",
    "finetune_end_to_end",
    "partition_neurons",
    "train_router",
    "upcycle",
]

log = logging.getLogger("allocmoe.build")

Progress = Callable[[str, int, int], None]


@dataclass(kw_only=True, slots=True, frozen=True)
class Partition:
    """Neuron indices of one MLP: ``shared [S]`` and ``experts [E, m]`` (each row sorted)."""

    shared: torch.Tensor
    experts: torch.Tensor
    importance: torch.Tensor


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run a loop of small tensor ops on one intra-op thread.

    The router steps and the k-means updates work on ``[1024, 16]``-sized tensors that a second thread
    cannot speed up, while each op's thread barrier costs milliseconds when the cores are shared: measured
    on the 2-core machine under load, 200 router steps took 36 s with 2 threads and 3 s with 1.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _mlp_acts(mlp: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)


def _balanced_assign(dist: torch.Tensor, capacity: int) -> torch.Tensor:
    """Greedy balanced assignment: pairs in increasing distance, each point once, each cluster ``capacity``."""
    n, k = dist.shape
    order = torch.argsort(dist.reshape(-1)).tolist()
    assign = [-1] * n
    room = [capacity] * k
    left = n
    for flat in order:
        i, c = divmod(flat, k)
        if assign[i] < 0 and room[c] > 0:
            assign[i] = c
            room[c] -= 1
            left -= 1
            if left == 0:
                break
    return torch.tensor(assign)


def balanced_kmeans(
    features: torch.Tensor, k: int, *, iters: int, generator: torch.Generator
) -> torch.Tensor:
    """Cluster ids ``[n]`` of ``features [n, d]`` into ``k`` clusters of exactly ``n / k`` points."""
    n = features.shape[0]
    capacity = n // k
    centroids = features[torch.randperm(n, generator=generator)[:k]].clone()
    assign = torch.zeros(n, dtype=torch.long)
    with _one_thread():
        for _ in range(iters):
            new = _balanced_assign(torch.cdist(features, centroids), capacity)
            if torch.equal(new, assign):
                break
            assign = new
            for c in range(k):
                centroids[c] = features[assign == c].mean(0)
    return assign


def partition_neurons(
    mlp: torch.nn.Module,
    x: torch.Tensor,
    *,
    shared_size: int,
    num_experts: int,
    kmeans_iters: int = 15,
    generator: torch.Generator | None = None,
) -> Partition:
    """Split the neurons of a Llama MLP from its activations on ``x [n, H]`` (see the module docstring)."""
    generator = generator or torch.Generator().manual_seed(0)
    with torch.no_grad():
        acts = _mlp_acts(mlp, x).abs()  # [n, I]
        importance = acts.mean(0) * mlp.down_proj.weight.norm(dim=0)
        inter = importance.numel()
        if (inter - shared_size) % num_experts:
            raise ConfigError(f"{inter - shared_size} routed neurons do not split into {num_experts} experts")
        shared = torch.sort(torch.topk(importance, shared_size).indices).values
        mask = torch.ones(inter, dtype=torch.bool)
        mask[shared] = False
        rest = torch.nonzero(mask).squeeze(1)
        feats = F.normalize(acts[:, rest].T.contiguous(), dim=1)
        assign = balanced_kmeans(feats, num_experts, iters=kmeans_iters, generator=generator)
        experts = torch.stack([torch.sort(rest[assign == e]).values for e in range(num_experts)])
    return Partition(shared=shared, experts=experts, importance=importance)


# -------------------------------------------------------------------------------------------- conversion


@torch.no_grad()
def convert_layer(
    dense_layer: torch.nn.Module, moe_layer: torch.nn.Module, part: Partition, *, scale: float
) -> None:
    """Copy attention, norms and the partitioned MLP of a Llama decoder layer into a Qwen2-MoE layer.

    The router is left as it is (``train_router`` sets it); ``scale`` is ``c``, the routed output scale.
    """
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        getattr(moe_layer.self_attn, name).weight.copy_(getattr(dense_layer.self_attn, name).weight)
    moe_layer.input_layernorm.weight.copy_(dense_layer.input_layernorm.weight)
    moe_layer.post_attention_layernorm.weight.copy_(dense_layer.post_attention_layernorm.weight)
    src, dst = dense_layer.mlp, moe_layer.mlp
    wg, wu, wd = src.gate_proj.weight, src.up_proj.weight, src.down_proj.weight
    shared = dst.shared_expert
    shared.gate_proj.weight.copy_(wg[part.shared])
    shared.up_proj.weight.copy_(wu[part.shared])
    shared.down_proj.weight.copy_(2.0 * wd[:, part.shared])  # sigmoid(0) = 0.5 undone
    dst.shared_expert_gate.weight.zero_()
    for e, idx in enumerate(part.experts):
        dst.experts.gate_up_proj[e].copy_(torch.cat([wg[idx], wu[idx]], dim=0))
        dst.experts.down_proj[e].copy_(scale * wd[:, idx])


def _expert_outputs(moe_mlp: torch.nn.Module, x: torch.Tensor, scale: float) -> torch.Tensor:
    """Unscaled outputs of every routed expert: ``[n, E, H]`` (``y_e(x)``, the dense partial sums)."""
    ex = moe_mlp.experts
    gate_up = torch.einsum("nh,eih->nei", x, ex.gate_up_proj)
    gate, up = gate_up.chunk(2, dim=-1)
    return torch.einsum("nei,ehi->neh", ex.act_fn(gate) * up, ex.down_proj) / scale


@dataclass(kw_only=True, slots=True, frozen=True)
class ExpertStats:
    """Per-token sufficient statistics of the local loss: ``gram[n, E, E] = <y_e, y_f>``, ``dense_sq[n]``.

    The routed target is ``sum_e y_e`` (the dense MLP minus the exact shared expert), so for routing
    weights ``w[n, E]`` (``c*p_e`` on the top-K, 0 elsewhere) the squared error is
    ``w^T G w - 2 w^T G 1 + 1^T G 1``: training the router never touches the hidden dimension.
    """

    gram: torch.Tensor
    dense_sq: torch.Tensor

    @classmethod
    @torch.no_grad()
    def collect(
        cls, moe_mlp: torch.nn.Module, x: torch.Tensor, *, scale: float, chunk: int = 4096
    ) -> ExpertStats:
        """Statistics of ``moe_mlp`` (converted, shared gate 0.5) on MLP inputs ``x [n, H]``."""
        grams, dense_sq = [], []
        for start in range(0, x.shape[0], chunk):
            xs = x[start : start + chunk]
            ys = _expert_outputs(moe_mlp, xs, scale)
            dense = ys.sum(1) + 0.5 * moe_mlp.shared_expert(xs)
            grams.append(torch.bmm(ys, ys.transpose(1, 2)))
            dense_sq.append(dense.pow(2).sum(-1))
        return cls(gram=torch.cat(grams), dense_sq=torch.cat(dense_sq))

    def sq_error(self, weights: torch.Tensor, idx: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        """Per-token squared error of the routed sum with ``weights [n, E]`` against the dense output."""
        gram = self.gram[idx]
        cross = gram.sum(-1)
        quad = torch.einsum("ne,nef,nf->n", weights, gram, weights)
        return quad - 2 * (weights * cross).sum(-1) + cross.sum(-1)


def _routing_weights(logits: torch.Tensor, k: int, scale: float) -> torch.Tensor:
    probs = logits.float().softmax(-1)
    top_p, top_i = probs.topk(k, dim=-1)
    return torch.zeros_like(probs).scatter(1, top_i, scale * top_p)


def train_router(
    router: torch.nn.Module,
    x: torch.Tensor,
    stats: ExpertStats,
    *,
    top_k: int,
    scale: float,
    steps: int,
    batch: int,
    lr: float,
    rank_weight: float,
    generator: torch.Generator,
) -> dict[str, float]:
    """Fit ``router.weight [E, H]`` to the local distillation loss (see the module docstring).

    ``x [n, H]`` are the MLP inputs, ``stats`` the experts' statistics on them. Returns the normalised MSE
    of the whole MoE layer output on all ``n`` tokens and ``alpha``, the least-squares scale of the routed
    sum (applied by the caller when ``fold_scale``).
    """
    n = x.shape[0]
    weight = router.weight.detach().clone().float().requires_grad_(True)
    opt = torch.optim.Adam([weight], lr=lr)
    diag = torch.diagonal(stats.gram, dim1=1, dim2=2)
    rank_target = diag.topk(top_k, dim=-1).indices  # the K experts with the largest ||y_e(x)||
    with _one_thread():
        for _ in range(steps):
            idx = torch.randint(n, (min(batch, n),), generator=generator)
            logits = x[idx] @ weight.T
            w = _routing_weights(logits, top_k, scale)
            loss = stats.sq_error(w, idx).sum() / stats.dense_sq[idx].sum().clamp_min(1e-12)
            if rank_weight:
                loss = loss - rank_weight * torch.gather(logits.log_softmax(-1), 1, rank_target[idx]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        router.weight.copy_(weight)
        w = _routing_weights(x @ weight.T, top_k, scale)
        denom = float(stats.dense_sq.sum().clamp_min(1e-12))
        quad = float(torch.einsum("ne,nef,nf->", w, stats.gram, w))
        cross = float(torch.einsum("ne,nef->", w, stats.gram))
        alpha = cross / max(quad, 1e-12)
        nmse = float(stats.sq_error(w).sum()) / denom
        nmse_alpha = float(stats.sq_error(alpha * w).sum()) / denom
    return {"nmse": nmse, "alpha": alpha, "nmse_scaled": nmse_alpha}


def _rotary(model: torch.nn.Module, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pos = torch.arange(h.shape[1])[None].expand(h.shape[0], -1)
    return model.model.rotary_emb(h, pos)


@torch.no_grad()
def _attention_half(layer: torch.nn.Module, h: torch.Tensor, pe) -> tuple[torch.Tensor, torch.Tensor]:
    """``(h + attn(norm(h)), post_attention_norm(...))`` of a decoder layer (causal, no mask needed)."""
    attn, _ = layer.self_attn(
        hidden_states=layer.input_layernorm(h), position_embeddings=pe, attention_mask=None
    )
    mid = h + attn
    return mid, layer.post_attention_layernorm(mid)


def upcycle(
    dense: torch.nn.Module,
    recipe: BuildRecipe,
    blocks: torch.Tensor,
    *,
    progress: Progress | None = None,
) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """Convert ``dense`` (a LlamaForCausalLM) into a trained ``Qwen2MoeForCausalLM`` on ``blocks [n, T]``.

    Layers are converted in order; the hidden states that feed layer ``l`` come from the MoE layers before
    it. Returns the MoE (eval mode) and one report row per layer.
    """
    from transformers import Qwen2MoeForCausalLM

    config = _upcycle_config(dense.config, recipe)
    gen = torch.Generator().manual_seed(recipe.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        moe = Qwen2MoeForCausalLM(config).eval()
    with torch.no_grad():
        moe.model.embed_tokens.weight.copy_(dense.model.embed_tokens.weight)
        moe.model.norm.weight.copy_(dense.model.norm.weight)
        if not config.tie_word_embeddings:
            moe.lm_head.weight.copy_(dense.lm_head.weight)
        h = dense.model.embed_tokens(blocks)  # [B, T, H]
    pe = _rotary(dense, h)
    hidden = h.shape[-1]
    rows = []
    nlayers = len(dense.model.layers)
    for li, (dl, ml) in enumerate(zip(dense.model.layers, moe.model.layers, strict=True)):
        if progress:
            progress("convert", li, nlayers)
        mid, x = _attention_half(dl, h, pe)
        x2 = x.reshape(-1, hidden)
        sample = x2[torch.randperm(x2.shape[0], generator=gen)[: recipe.kmeans_tokens]]
        part = partition_neurons(
            dl.mlp,
            sample,
            shared_size=recipe.shared_size,
            num_experts=recipe.num_experts,
            kmeans_iters=recipe.kmeans_iters,
            generator=gen,
        )
        convert_layer(dl, ml, part, scale=recipe.scale)
        ml.mlp.gate.weight.data.zero_()
        stats = train_router(
            ml.mlp.gate,
            x2,
            ExpertStats.collect(ml.mlp, x2, scale=recipe.scale),
            top_k=recipe.top_k,
            scale=recipe.scale,
            steps=recipe.router_steps,
            batch=recipe.router_batch,
            lr=recipe.router_lr,
            rank_weight=recipe.rank_weight,
            generator=gen,
        )
        if recipe.fold_scale:
            with torch.no_grad():
                ml.mlp.experts.down_proj.mul_(stats["alpha"])
        with torch.no_grad():
            h = mid + ml.mlp(x)
        rows.append({"layer": li, **stats})
        log.info(
            "layer %d: nmse %.4f (scaled %.4f) alpha %.3f",
            li,
            stats["nmse"],
            stats["nmse_scaled"],
            stats["alpha"],
        )
    if progress:
        progress("convert", nlayers, nlayers)
    return moe, rows


# ------------------------------------------------------------------------------------------ end-to-end


def finetune_end_to_end(
    moe: torch.nn.Module,
    dense: torch.nn.Module,
    blocks: torch.Tensor,
    *,
    steps: int,
    batch: int,
    lr: float,
    kl_weight: float,
    seed: int,
    expert_lr: float | None = None,
    aux_weight: float = 0.0,
    progress: Progress | None = None,
) -> list[float]:
    """End-to-end phase: next-token loss + ``kl_weight`` x KL(dense || moe) + ``aux_weight`` x the
    model's load-balancing loss (Switch/Qwen2-MoE ``aux_loss``), Adam over the routers at ``lr`` and,
    when ``expert_lr`` is set, the routed and shared experts at ``expert_lr``. Losses back."""
    layers = [layer.mlp for layer in moe.model.layers]
    routers = [mlp.gate.weight for mlp in layers]
    groups = [{"params": routers, "lr": lr}]
    if expert_lr is not None:
        experts = [p for mlp in layers for name, p in mlp.named_parameters() if not name.startswith("gate.")]
        groups.append({"params": experts, "lr": expert_lr})
    for p in moe.parameters():
        p.requires_grad_(False)
    trained = [p for g in groups for p in g["params"]]
    for p in trained:
        p.requires_grad_(True)
    opt = torch.optim.Adam(groups)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    moe.train()
    try:
        for step in range(steps):
            ids = blocks[torch.randint(blocks.shape[0], (batch,), generator=gen)]
            with torch.no_grad():
                teacher = dense(input_ids=ids).logits.float().log_softmax(-1)
            out = moe(input_ids=ids, output_router_logits=aux_weight > 0)
            logits = out.logits.float()
            lm = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
            kl = (
                F.kl_div(logits.log_softmax(-1), teacher, log_target=True, reduction="batchmean")
                / ids.shape[1]
            )
            loss = lm + kl_weight * kl
            if aux_weight > 0:
                loss = loss + aux_weight * out.aux_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if progress:
                progress("e2e", step + 1, steps)
    finally:
        moe.eval()
        for p in trained:
            p.requires_grad_(False)
    return losses


# ------------------------------------------------------------------------------------------- evaluation


@torch.inference_mode()
def evaluate_lm(
    model: torch.nn.Module, blocks: torch.Tensor, *, batch_size: int = 4, progress: Progress | None = None
) -> dict[str, float]:
    """Perplexity and next-token (argmax) accuracy of a causal LM on ``[n, T]`` token blocks."""
    from allocmoe.evaluation import evaluate

    r = evaluate(
        model,
        blocks,
        batch_size=batch_size,
        progress=(lambda d, t: progress("eval", d, t)) if progress else None,
    )
    return {"perplexity": r.perplexity, "nll": r.nll, "accuracy": r.accuracy, "tokens": r.tokens}


@torch.inference_mode()
def expert_load(model: torch.nn.Module, blocks: torch.Tensor, *, batch_size: int = 4) -> list[dict[str, Any]]:
    """Per MoE layer: fraction of routed slots per expert, normalised load entropy, mean router max-prob."""
    gates = [(i, layer.mlp.gate) for i, layer in enumerate(model.model.layers) if hasattr(layer.mlp, "gate")]
    counts = {i: torch.zeros(g.num_experts) for i, g in gates}
    maxp = dict.fromkeys(counts, 0.0)
    tokens = [0]

    def hook(index: int):
        def fn(module, args, output) -> None:
            logits, _, top_i = output
            counts[index] += torch.bincount(top_i.reshape(-1).cpu(), minlength=module.num_experts)[
                : module.num_experts
            ].float()
            maxp[index] += float(logits.float().softmax(-1).max(-1).values.sum())

        return fn

    handles = [g.register_forward_hook(hook(i)) for i, g in gates]
    try:
        for start in range(0, blocks.shape[0], batch_size):
            ids = blocks[start : start + batch_size]
            model(input_ids=ids)
            tokens[0] += ids.numel()
    finally:
        for handle in handles:
            handle.remove()
    rows = []
    for i, g in gates:
        load = counts[i] / counts[i].sum().clamp_min(1)
        nz = load[load > 0]
        entropy = float(-(nz * nz.log()).sum() / math.log(g.num_experts)) if g.num_experts > 1 else 1.0
        rows.append(
            {
                "layer": i,
                "load": [round(float(v), 5) for v in load],
                "load_entropy": entropy,
                "max_load": float(load.max()),
                "mean_max_prob": maxp[i] / max(tokens[0], 1),
            }
        )
    return rows


def _upcycle_config(dense_config: Any, recipe: BuildRecipe):
    from allocmoe.build import upcycle_config

    return upcycle_config(dense_config, recipe)
