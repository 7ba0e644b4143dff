"""Analytic FLOP counts agree exactly with FlopCounterMode's matmul FLOPs; byte counts behave."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, note
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from effcore.errors import ConfigError
from effcore.profiling import OpCost, attention_cost, decoder_layer_cost, linear_cost, mlp_cost

dims = st.integers(min_value=1, max_value=13)


def counted(run: Callable[[], torch.Tensor]) -> tuple[int, int]:
    """(forward, backward) FLOPs FlopCounterMode sees for ``run()`` and the backward of its sum."""
    counter = FlopCounterMode(display=False)
    with counter:
        out = run()
        fwd = counter.get_total_flops()
        out.sum().backward()
    return fwd, counter.get_total_flops() - fwd


def tensor(*shape: int, seed: int, grad: bool = True) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).requires_grad_(grad)


@given(
    tokens=dims, fin=dims, fout=dims, bias=st.booleans(), input_grad=st.booleans(), seed=st.integers(0, 99)
)
def test_linear_matmul_flops_equal_flop_counter(
    tokens: int, fin: int, fout: int, bias: bool, input_grad: bool, seed: int
) -> None:
    layer = nn.Linear(fin, fout, bias=bias)
    x = tensor(tokens, fin, seed=seed, grad=input_grad)
    fwd, bwd = counted(lambda: layer(x))
    cost = linear_cost(tokens=tokens, in_features=fin, out_features=fout, bias=bias, input_grad=input_grad)
    assert (cost.fwd_matmul_flops, cost.bwd_matmul_flops) == (fwd, bwd)
    assert cost.fwd_other_flops == (tokens * fout if bias else 0), "bias adds one FLOP per output"


attention_shapes = st.fixed_dictionaries(
    {
        "batch": st.integers(1, 3),
        "kv_heads": st.integers(1, 3),
        "group": st.integers(1, 3),
        "seq": st.integers(1, 17),
        "head_dim": st.sampled_from([1, 4, 8, 13]),
        "causal": st.booleans(),
        "seed": st.integers(0, 99),
    }
)


def qkv(s: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    note(s)
    heads = s["kv_heads"] * s["group"]
    q = tensor(s["batch"], heads, s["seq"], s["head_dim"], seed=s["seed"])
    k = tensor(s["batch"], s["kv_heads"], s["seq"], s["head_dim"], seed=s["seed"] + 1)
    v = tensor(s["batch"], s["kv_heads"], s["seq"], s["head_dim"], seed=s["seed"] + 2)
    return q, k, v


def cost_of(s: dict, impl: str) -> OpCost:
    return attention_cost(
        batch=s["batch"], seq_len=s["seq"], num_heads=s["kv_heads"] * s["group"], num_kv_heads=s["kv_heads"],
        head_dim=s["head_dim"], causal=s["causal"], impl=impl,
    )  # fmt: skip


@given(s=attention_shapes)
def test_flash_attention_matmul_flops_equal_flop_counter_on_sdpa(s: dict) -> None:
    q, k, v = qkv(s)
    fwd, bwd = counted(
        lambda: F.scaled_dot_product_attention(q, k, v, is_causal=s["causal"], enable_gqa=True)
    )
    cost = cost_of(s, "flash")
    assert (cost.fwd_matmul_flops, cost.bwd_matmul_flops) == (fwd, bwd)


def eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
    if causal:
        mask = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool).tril()
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1) @ v


@given(s=attention_shapes)
def test_materialized_attention_matmul_flops_equal_flop_counter_on_eager_attention(s: dict) -> None:
    q, k, v = qkv(s)
    fwd, bwd = counted(lambda: eager_attention(q, k, v, s["causal"]))
    cost = cost_of(s, "materialized")
    assert (cost.fwd_matmul_flops, cost.bwd_matmul_flops) == (fwd, bwd)


@given(seq=st.integers(1, 64), extra_keys=st.integers(0, 8))
def test_skip_masked_counts_only_the_causal_scores(seq: int, extra_keys: int) -> None:
    common = dict(batch=1, seq_len=seq, kv_len=seq + extra_keys, num_heads=1, head_dim=1)
    full = attention_cost(**common, causal=True)
    skipped = attention_cost(**common, causal=True, skip_masked=True)
    visible = sum(extra_keys + i + 1 for i in range(seq))
    assert skipped.fwd_matmul_flops == 4 * visible, "two matmuls, 2 FLOPs per visible score"
    assert full.fwd_matmul_flops == 4 * seq * (seq + extra_keys)


def test_flash_attention_moves_fewer_bytes_than_materialized_scores() -> None:
    common = dict(batch=2, seq_len=1024, num_heads=8, num_kv_heads=2, head_dim=64)
    flash, eager = attention_cost(**common, impl="flash"), attention_cost(**common, impl="materialized")
    assert flash.fwd_bytes < eager.fwd_bytes and flash.bwd_bytes < eager.bwd_bytes
    assert flash.bwd_matmul_flops * 4 == eager.bwd_matmul_flops * 5, "flash backward recomputes Q K^T"


class _MLP(nn.Module):
    def __init__(self, hidden: int, inter: int, gated: bool) -> None:
        super().__init__()
        self.gated = gated
        self.up = nn.Linear(hidden, inter, bias=False)
        self.gate = nn.Linear(hidden, inter, bias=False) if gated else None
        self.down = nn.Linear(inter, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.gate(x)) * self.up(x) if self.gate is not None else F.gelu(self.up(x))
        return self.down(h)


@given(tokens=dims, hidden=dims, inter=dims, gated=st.booleans(), seed=st.integers(0, 99))
def test_mlp_matmul_flops_equal_flop_counter(
    tokens: int, hidden: int, inter: int, gated: bool, seed: int
) -> None:
    x = tensor(tokens, hidden, seed=seed)
    fwd, bwd = counted(lambda: _MLP(hidden, inter, gated)(x))
    cost = mlp_cost(tokens=tokens, hidden=hidden, intermediate=inter, gated=gated)
    assert (cost.fwd_matmul_flops, cost.bwd_matmul_flops) == (fwd, bwd)


@pytest.mark.parametrize(("attn_implementation", "impl"), [("sdpa", "flash"), ("eager", "materialized")])
def test_decoder_layer_matmul_flops_equal_flop_counter_on_tiny_llama(
    attn_implementation: str, impl: str
) -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=256, attn_implementation=attn_implementation,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(cfg)
    batch, seq = 2, 24
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(0))
    fwd, bwd = counted(lambda: model(ids, use_cache=False).logits)
    layer = decoder_layer_cost(
        batch=batch, seq_len=seq, hidden=64, num_heads=4, num_kv_heads=2, intermediate=128, attn_impl=impl
    )
    head = linear_cost(tokens=batch * seq, in_features=64, out_features=cfg.vocab_size)
    assert 2 * layer.fwd_matmul_flops + head.fwd_matmul_flops == fwd, "forward"
    assert 2 * layer.bwd_matmul_flops + head.bwd_matmul_flops == bwd, "backward"


@given(dtype_bytes=st.sampled_from([1, 2, 4]), tokens=dims, hidden=dims, inter=dims)
def test_block_bytes_scale_with_dtype_bytes_and_flops_do_not(
    dtype_bytes: int, tokens: int, hidden: int, inter: int
) -> None:
    one = mlp_cost(tokens=tokens, hidden=hidden, intermediate=inter, dtype_bytes=1)
    this = mlp_cost(tokens=tokens, hidden=hidden, intermediate=inter, dtype_bytes=dtype_bytes)
    assert (this.fwd_bytes, this.bwd_bytes) == (one.fwd_bytes * dtype_bytes, one.bwd_bytes * dtype_bytes)
    assert (this.fwd_flops, this.bwd_flops) == (one.fwd_flops, one.bwd_flops)


def test_op_costs_add_fieldwise_and_convert_to_records() -> None:
    a = linear_cost(tokens=4, in_features=3, out_features=5, bias=True)
    b = linear_cost(tokens=4, in_features=5, out_features=3)
    total = a + b
    assert total.fwd_flops == a.fwd_flops + b.fwd_flops and total.bwd_bytes == a.bwd_bytes + b.bwd_bytes
    rec = total.forward(time_ns=7)
    assert (rec.time_ns, rec.flops, rec.bytes) == (7, total.fwd_flops, total.fwd_bytes)
    assert total.to_dict()["fwd_matmul_flops"] == total.fwd_matmul_flops


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(num_heads=6, num_kv_heads=4), "multiple of num_kv_heads"),
        (dict(num_heads=4, kv_len=3), "shorter than seq_len"),
        (dict(num_heads=4, impl="paged"), "unknown attention impl"),
        (dict(num_heads=0), "num_heads must be a positive int"),
    ],
)
def test_attention_cost_rejects_inconsistent_shapes(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        attention_cost(batch=1, seq_len=8, head_dim=4, **kwargs)
