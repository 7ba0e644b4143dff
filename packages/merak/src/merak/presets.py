"""The paper's 64-GPU setting: GPT sizes, a cluster, and Merak against a Megatron-DeepSpeed-style baseline.

Merak (TPDS 2023) reports, on 64 GPUs, speedups of up to 1.42x, 1.39x, 1.43x and 1.61x for GPT
models of 1.5B, 2.5B, 8.3B and 20B parameters over "state-of-the-art 3D parallel frameworks".
:func:`predict_speedup` simulates one training step of both systems on the same mesh and batch:

- baseline (Megatron-DeepSpeed style): 1F1B, parameter-balanced partition (DeepSpeed's default),
  every stage recomputes every layer, tensor-parallel all-reduces not overlapped;
- Merak: shifted-critical-path schedule, stage-aware recomputation with the first stage's ratio
  ``r0`` the fastest of ``0, 0.1, ..., 1`` whose step fits in memory, time-balanced partition,
  sub-pipelined TP with the overlap of :func:`merak.simulate.sub_pipeline_overlap`.

Costs come from capturing the model on the meta device (:func:`capture_size`) and
``merak.costs.predict_costs`` at the device's fp16 peak, divided by a sustained efficiency.
Both systems use ZeRO-1 (Merak's default; DeepSpeed supports it with pipelining).

Choices the sources leave open, all arguments: the paper's parallel shapes, batch sizes, sequence
length and cluster are not in our notes [UNVERIFIED]; the presets' meshes fit A100-80GB memory
under the baseline's full recomputation. Model shapes: 1.5B is GPT-2 XL (48 x 1600, 25 heads);
2.5B and 8.3B are Megatron-LM's (Shoeybi et al. 2019, Table 2: 54 x 1920, 20 heads; 72 x 3072,
32 heads); 20B [UNVERIFIED] takes GPT-NeoX-20B's 44 x 6144, 64 heads in GPT-2 blocks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from effcore.device import DeviceSpec, known_spec
from effcore.errors import ConfigError
from merak.partition import ShardCost, assign_stages, stage_recompute_ratios
from merak.shard import Shard
from merak.simulate import (
    Network,
    SimResult,
    StageCost,
    ring_allreduce_s,
    simulate,
    stage_costs,
    sub_pipeline_overlap,
)

__all__ = [  # noqa: RUF022 -- grouped by topic
    # model sizes
    "GPTSize",
    "PAPER_SIZES",
    "gpt_1_5b",
    "gpt_2_5b",
    "gpt_8_3b",
    "gpt_20b",
    # cluster and systems
    "Cluster",
    "SystemRun",
    "Speedup",
    "cluster",
    "capture_size",
    "run_baseline",
    "run_system",
    "run_merak",
    "predict_speedup",
]

FP16 = 2  # bytes per element: both systems train in fp16 mixed precision, as in 2022


@dataclass(frozen=True, kw_only=True, slots=True)
class GPTSize:
    """A GPT-2-style model, its (dp, tp, pp) mesh and batch: ``microbatches`` of ``micro_batch``
    sequences of ``seq_len`` tokens per pipeline and step."""

    name: str
    layers: int
    hidden: int
    heads: int
    dp: int
    tp: int
    pp: int
    micro_batch: int
    microbatches: int
    paper_speedup: float | None = None
    vocab: int = 50257
    seq_len: int = 1024

    def __post_init__(self) -> None:
        for name in ("layers", "hidden", "heads", "dp", "tp", "pp", "micro_batch", "microbatches", "seq_len"):
            if getattr(self, name) < 1:
                raise ConfigError(f"GPTSize.{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden % self.heads or self.heads % self.tp:
            raise ConfigError(
                f"{self.name}: hidden {self.hidden}, heads {self.heads}, tp {self.tp} do not divide",
                hint="heads must divide hidden and tp must divide heads",
            )
        if self.pp > self.layers + 2:
            raise ConfigError(f"{self.name}: {self.pp} stages for {self.layers} layers")

    @property
    def world(self) -> int:
        return self.dp * self.tp * self.pp

    @property
    def params(self) -> int:
        """Parameters of GPT-2 blocks (``12h^2 + 13h`` each), embeddings (tied head) and final norm."""
        h = self.hidden
        return self.layers * (12 * h * h + 13 * h) + (self.vocab + self.seq_len) * h + 2 * h

    def mesh(self, dp: int, tp: int, pp: int) -> GPTSize:
        return dataclasses.replace(self, dp=dp, tp=tp, pp=pp)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "params": self.params, "world": self.world}


def gpt_1_5b() -> GPTSize:
    return GPTSize(
        name="1.5B",
        layers=48,
        hidden=1600,
        heads=25,
        dp=8,
        tp=1,
        pp=8,
        micro_batch=4,
        microbatches=16,
        paper_speedup=1.42,
    )


def gpt_2_5b() -> GPTSize:
    return GPTSize(
        name="2.5B",
        layers=54,
        hidden=1920,
        heads=20,
        dp=8,
        tp=2,
        pp=4,
        micro_batch=4,
        microbatches=16,
        paper_speedup=1.39,
    )


def gpt_8_3b() -> GPTSize:
    return GPTSize(
        name="8.3B",
        layers=72,
        hidden=3072,
        heads=32,
        dp=4,
        tp=4,
        pp=4,
        micro_batch=2,
        microbatches=16,
        paper_speedup=1.43,
    )


def gpt_20b() -> GPTSize:
    return GPTSize(
        name="20B",
        layers=44,
        hidden=6144,
        heads=64,
        dp=2,
        tp=4,
        pp=8,
        micro_batch=1,
        microbatches=32,
        paper_speedup=1.61,
    )


PAPER_SIZES: dict[str, Callable[[], GPTSize]] = {
    "1.5B": gpt_1_5b,
    "2.5B": gpt_2_5b,
    "8.3B": gpt_8_3b,
    "20B": gpt_20b,
}

# Sustained share of the fp16 peak in large-GPT training: V100 30 % (Megatron-LM 2019: 39 of
# 125 TFLOP/s on one GPU), A100 50 % (Narayanan et al. SC'21: 138-163 of 312 TFLOP/s);
# H100/H200 40 % [UNVERIFIED: MFU reported for fp16/bf16 GPT training without fp8].
_EFFICIENCY = {"V100": 0.30, "A100": 0.50, "H100": 0.40, "H200": 0.40}


@dataclass(frozen=True, kw_only=True, slots=True)
class Cluster:
    """GPUs and links: NVLink inside a node (``spec.interconnect_bandwidth`` per direction), an
    InfiniBand share per GPU between nodes; ``efficiency`` the sustained share of peak FLOP/s,
    ``memory_fraction`` of each GPU's memory usable by the step (the rest: context, workspace)."""

    spec: DeviceSpec
    gpus_per_node: int
    intra_bandwidth: float
    inter_bandwidth: float
    intra_latency: float
    inter_latency: float
    efficiency: float
    memory_fraction: float

    @property
    def memory_budget(self) -> int:
        return int(self.spec.memory_bytes * self.memory_fraction)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "spec": self.spec.name}


def cluster(
    device: str = "A100",
    *,
    gpus_per_node: int = 8,
    inter_bandwidth: float = 12.5e9,
    intra_latency: float = 5e-6,
    inter_latency: float = 10e-6,
    efficiency: float | None = None,
    memory_fraction: float = 0.9,
) -> Cluster:
    """A cluster of ``device`` GPUs. Default [UNVERIFIED for the paper's testbed]: 8 GPUs per node
    on NVLink, 100 Gb/s InfiniBand per GPU (12.5 GB/s) between nodes."""
    spec = known_spec(device)
    if efficiency is None:
        efficiency = _EFFICIENCY.get(spec.name, 0.4)
    if not 0 < efficiency <= 1 or not 0 < memory_fraction <= 1 or gpus_per_node < 1:
        raise ConfigError("efficiency and memory_fraction must be in (0, 1], gpus_per_node >= 1")
    return Cluster(
        spec=spec,
        gpus_per_node=gpus_per_node,
        intra_bandwidth=spec.interconnect_bandwidth,
        inter_bandwidth=inter_bandwidth,
        intra_latency=intra_latency,
        inter_latency=inter_latency,
        efficiency=efficiency,
        memory_fraction=memory_fraction,
    )


def capture_size(size: GPTSize, spec: DeviceSpec) -> tuple[list[Shard], list[ShardCost]]:
    """Merak's shards of ``size`` (built on the meta device, fp16) and their predicted costs on
    ``spec`` for one micro-batch. Tens of seconds for the paper's sizes."""
    from transformers import AutoModelForCausalLM, GPT2Config

    from merak.capture import capture
    from merak.costs import predict_costs
    from merak.shard import shard_graph

    config = GPT2Config(
        n_layer=size.layers,
        n_embd=size.hidden,
        n_head=size.heads,
        vocab_size=size.vocab,
        n_positions=size.seq_len,
    )
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float16)
    captured = capture(model, (size.micro_batch, size.seq_len))
    shards = shard_graph(captured)
    return shards, predict_costs(captured, shards, spec)


def _network(size: GPTSize, cl: Cluster, *, overlap: float) -> Network:
    """Ranks ordered tp fastest, then dp, then pp (Megatron's order); a node holds consecutive ranks."""
    if size.tp > cl.gpus_per_node:
        raise ConfigError(
            f"tp {size.tp} spans nodes of {cl.gpus_per_node} GPUs", hint="use tp <= gpus per node"
        )
    group = size.tp * size.dp  # ranks per stage
    node = cl.gpus_per_node
    boundaries = []
    for s in range(size.pp - 1):
        same = all(r // node == (r + group) // node for r in range(s * group, (s + 1) * group))
        boundaries.append(cl.intra_bandwidth if same else cl.inter_bandwidth)
    dp_inside = size.tp * size.dp <= node
    return Network(
        p2p_bandwidth=tuple(boundaries),
        p2p_latency=cl.inter_latency,
        tp=size.tp,
        tp_bandwidth=cl.intra_bandwidth,
        tp_latency=cl.intra_latency,
        tp_overlap=overlap,
        dp=size.dp,
        dp_bandwidth=cl.intra_bandwidth if dp_inside else cl.inter_bandwidth,
        dp_latency=cl.intra_latency if dp_inside else cl.inter_latency,
    )


def _leaf_activation_bytes(size: GPTSize, leaf: str) -> float:
    """Bytes one micro-batch's forward through ``leaf`` keeps for backward, per TP rank: Korthikanti
    et al. 2022 (fp16, eager attention, no sequence parallelism). Attention half: its layer norm,
    the QKV input and the dropout mask replicated (``5 sbh``), Q, K, V and the projection input
    split (``8 sbh / t``), scores, softmax and their dropout (``5 a s^2 b / t``); MLP half
    ``5 sbh + 16 sbh / t``; embeddings ``3 sbh``; final norm ``2 sbh``; the LM head's fp16 logits
    and the loss's fp32 softmax ``6 b s V / t``."""
    t, b, s, h, a = size.tp, size.micro_batch, size.seq_len, size.hidden, size.heads
    sbh = s * b * h
    if leaf.endswith(".attn"):
        return sbh * (5 + 8 / t) + 5 * a * s * s * b / t
    if leaf.endswith(".mlp"):
        return sbh * (5 + 16 / t)
    if leaf.endswith("wte"):
        return 3 * sbh
    if leaf.endswith("ln_f"):
        return 2 * sbh
    if leaf.endswith("lm_head"):
        return 6 * b * s * size.vocab / t
    return 0.0  # position embeddings: their output is summed into wte's


def _stage_costs(
    size: GPTSize,
    shards: Sequence[Shard],
    costs: Sequence[ShardCost],
    cl: Cluster,
    method: str,
    ratios: Sequence[float],
) -> list[StageCost]:
    """Per-rank stage costs of a partition under Megatron TP of degree ``size.tp``: compute and
    parameters split ``t`` ways, compute at ``cl.efficiency`` of peak, activations from
    :func:`_leaf_activation_bytes` (the captured ``activation_bytes`` count views of one tensor
    several times and miss the leaves' insides), each TP rank sending the whole stage output."""
    t, b, s, h = size.tp, size.micro_batch, size.seq_len, size.hidden
    # the time partition balances Merak's recompute too (stage_recompute_ratios(P, r0)[0] == r0)
    first = ratios[0] if method == "time" else None
    plans = assign_stages(costs, size.pp, method=method, recompute_ratio=first)  # type: ignore[arg-type]
    out = []
    for plan, base, ratio in zip(
        plans, stage_costs(plans, costs, param_dtype_bytes=FP16), ratios, strict=True
    ):
        leaves = [leaf for sh in shards[plan.first : plan.last + 1] for leaf in sh.leaves]
        # one all-reduce per row-parallel output (attention, MLP), one for the vocab-parallel embedding
        collectives = sum(leaf.endswith((".attn", ".mlp", "wte")) for leaf in leaves) if t > 1 else 0
        out.append(
            dataclasses.replace(
                base,
                forward_s=base.forward_s / (t * cl.efficiency),
                backward_s=base.backward_s / (t * cl.efficiency),
                recompute_ratio=ratio,
                activation_bytes=int(sum(_leaf_activation_bytes(size, leaf) for leaf in leaves)),
                params=base.params // t,
                tp_bytes=collectives * b * s * h * FP16,
                tp_collectives=collectives,
            )
        )
    return out


@dataclass(frozen=True, kw_only=True, slots=True)
class SystemRun:
    """One system's simulated step: its schedule, partition, recompute ratios, TP overlap, whether
    every stage fits the memory budget, and the simulation."""

    system: str
    kind: str
    method: str
    ratios: tuple[float, ...]
    tp_overlap: float
    fits: bool
    result: SimResult
    costs: tuple[StageCost, ...]

    def to_dict(self) -> dict:
        return {
            "system": self.system,
            "kind": self.kind,
            "partition": self.method,
            "recompute_ratios": list(self.ratios),
            "tp_overlap": self.tp_overlap,
            "fits": self.fits,
            "result": self.result.to_dict(timeline=False),
            "stage_costs": [dataclasses.asdict(c) for c in self.costs],
        }


def run_system(
    size: GPTSize,
    shards: Sequence[Shard],
    costs: Sequence[ShardCost],
    cl: Cluster,
    *,
    system: str,
    kind: str,
    method: str,
    ratios: Sequence[float],
    overlap: bool,
) -> SystemRun:
    """Simulate ``size`` under one system's choices: schedule ``kind``, partition ``method``
    (``merak.partition.METHODS``), per-stage recompute ``ratios``, and whether TP is sub-pipelined."""
    stage = _stage_costs(size, shards, costs, cl, method, ratios)
    frac = 0.0
    if overlap and size.tp > 1:
        net = _network(size, cl, overlap=0.0)
        frac = min(
            sub_pipeline_overlap(
                c.forward_s,
                ring_allreduce_s(
                    c.tp_bytes, net.tp, net.tp_bandwidth, net.tp_latency, count=c.tp_collectives
                ),
                c.tp_collectives,
            )
            for c in stage
            if c.tp_collectives
        )
    res = simulate(
        stage, kind, size.microbatches, network=_network(size, cl, overlap=frac), optimizer_shards=size.dp
    )
    fits = max(res.peak_bytes) <= cl.memory_budget
    return SystemRun(
        system=system,
        kind=kind,
        method=method,
        ratios=tuple(ratios),
        tp_overlap=frac,
        fits=fits,
        result=res,
        costs=tuple(stage),
    )


def run_baseline(
    size: GPTSize, shards: Sequence[Shard], costs: Sequence[ShardCost], cl: Cluster
) -> SystemRun:
    """Megatron-DeepSpeed style: 1F1B, parameter partition, full recomputation, no TP overlap."""
    return run_system(
        size,
        shards,
        costs,
        cl,
        system="baseline",
        kind="1f1b",
        method="parameters",
        ratios=[1.0] * size.pp,
        overlap=False,
    )


def run_merak(
    size: GPTSize,
    shards: Sequence[Shard],
    costs: Sequence[ShardCost],
    cl: Cluster,
    *,
    kind: str = "shifted-critical-path",
    method: str = "time",
    overlap: bool = True,
    first_ratios: Sequence[float] | None = None,
) -> SystemRun:
    """Merak: ``kind`` with stage-aware recomputation (the fastest fitting ``r0`` of ``first_ratios``,
    default ``0, 0.1, ..., 1``; if none fits, the leanest), ``method`` partition, TP overlap if
    ``overlap`` (the defaults are Merak's; the others serve ablations)."""
    candidates = list(first_ratios) if first_ratios is not None else [k / 10 for k in range(11)]
    runs = [
        run_system(
            size,
            shards,
            costs,
            cl,
            system="merak",
            kind=kind,
            method=method,
            ratios=stage_recompute_ratios(size.pp, r0, schedule=kind),
            overlap=overlap,
        )
        for r0 in candidates
    ]
    fitting = [r for r in runs if r.fits]
    if fitting:
        return min(fitting, key=lambda r: r.result.step_s)
    return min(runs, key=lambda r: max(r.result.peak_bytes))


@dataclass(frozen=True, kw_only=True, slots=True)
class Speedup:
    """Baseline and Merak on one size: the predicted speedup against the paper's."""

    size: GPTSize
    cluster: Cluster
    baseline: SystemRun
    merak: SystemRun

    @property
    def speedup(self) -> float:
        return self.baseline.result.step_s / self.merak.result.step_s

    def to_dict(self) -> dict:
        return {
            "size": self.size.to_dict(),
            "cluster": self.cluster.to_dict(),
            "speedup": self.speedup,
            "paper_speedup": self.size.paper_speedup,
            "baseline": self.baseline.to_dict(),
            "merak": self.merak.to_dict(),
        }


def predict_speedup(
    size: GPTSize,
    cl: Cluster,
    *,
    captured: tuple[Sequence[Shard], Sequence[ShardCost]] | None = None,
    kind: str = "shifted-critical-path",
) -> Speedup:
    """Simulate baseline and Merak for ``size`` on ``cl`` (capturing the model unless ``captured``
    gives its shards and costs, for the same micro-batch, from :func:`capture_size`)."""
    if size.world < 1:
        raise ConfigError("empty mesh")
    shards, costs = captured if captured is not None else capture_size(size, cl.spec)
    return Speedup(
        size=size,
        cluster=cl,
        baseline=run_baseline(size, shards, costs, cl),
        merak=run_merak(size, shards, costs, cl, kind=kind),
    )
