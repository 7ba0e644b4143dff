"""Module profiles: FLOPs and bytes equal the analytic counts; row times add up to the whole model's."""

from __future__ import annotations

import statistics
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from effcore.errors import ConfigError
from effcore.profiling import (
    ModuleProfile,
    decoder_layer_cost,
    linear_cost,
    profile_decoder,
    profile_modules,
    time_model,
)
from effcore.testing.tiny import tiny_config, tiny_model

FP32 = 4
VOCAB = tiny_config("llama").vocab_size


@pytest.fixture
def one_thread() -> Iterator[None]:
    # With two OpenMP threads on a 2-core machine shared with other processes, one preempted worker
    # stalls every parallel op and single steps take 10-100x longer; timing tests run single-threaded.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_llama() -> nn.Module:
    return tiny_model("llama")


def token_ids(batch: int, seq: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seq))


def by_name(rows: list[ModuleProfile]) -> dict[str, ModuleProfile]:
    return {r.name: r for r in rows}


def test_profile_modules_counts_flops_params_and_saved_activations_of_an_mlp() -> None:
    batch, d_in, hidden, d_out = 8, 16, 32, 4
    model = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))
    x = torch.randn(batch, d_in)
    rows = by_name(profile_modules(model, x, warmup=1, repeats=3))
    assert list(rows) == ["0", "1", "2", "other"]
    first = linear_cost(tokens=batch, in_features=d_in, out_features=hidden, input_grad=False)
    last = linear_cost(tokens=batch, in_features=hidden, out_features=d_out)
    assert (rows["0"].forward_flops, rows["0"].backward_flops) == (
        first.fwd_matmul_flops,
        first.bwd_matmul_flops,
    )
    assert (rows["2"].forward_flops, rows["2"].backward_flops) == (
        last.fwd_matmul_flops,
        last.bwd_matmul_flops,
    )
    assert rows["1"].forward_flops == 0 and rows["other"].forward_flops == 0
    assert rows["0"].param_bytes == (d_in * hidden + hidden) * FP32
    assert rows["2"].param_bytes == (hidden * d_out + d_out) * FP32
    # Saved for backward: x by the first Linear; the ReLU output by ReLU, and again (the same
    # storage, counted once, by the first saver) by the second Linear.
    assert [rows[n].activation_bytes for n in "012"] == [batch * d_in * FP32, batch * hidden * FP32, 0]
    assert all(r.forward_ns >= 0 and r.backward_ns is not None and r.calls == 1 for r in rows.values())


def test_nested_rows_include_their_selected_children(tiny_llama: nn.Module) -> None:
    rows = by_name(
        profile_modules(
            tiny_llama, {"input_ids": token_ids(1, 8)}, modules=["model.layers.0", "model.layers.0.mlp"],
            warmup=0, repeats=1, backward=False,
        )
    )  # fmt: skip
    layer, mlp, other = rows["model.layers.0"], rows["model.layers.0.mlp"], rows["other"]
    assert layer.forward_flops > mlp.forward_flops > 0
    assert layer.activation_bytes > mlp.activation_bytes > 0
    assert layer.forward_ns >= mlp.forward_ns
    assert other.forward_flops > 0, "layer 1 and lm_head are outside the selection"
    assert layer.backward_ns is None and layer.backward_flops is None


def test_profile_decoder_flops_equal_the_analytic_decoder_layer_and_head(tiny_llama: nn.Module) -> None:
    batch, seq = 2, 16
    rows = by_name(profile_decoder(tiny_llama, token_ids(batch, seq), warmup=0, repeats=2, backward=True))
    names = [
        "model.embed_tokens",
        "model.rotary_emb",
        "model.layers.0",
        "model.layers.1",
        "model.norm",
        "lm_head",
    ]
    assert list(rows) == [*names, "other"]
    layer = decoder_layer_cost(
        batch=batch, seq_len=seq, hidden=64, num_heads=4, num_kv_heads=2, intermediate=128
    )
    head = linear_cost(tokens=batch * seq, in_features=64, out_features=VOCAB)
    for name in ("model.layers.0", "model.layers.1"):
        assert (rows[name].forward_flops, rows[name].backward_flops) == (
            layer.fwd_matmul_flops,
            layer.bwd_matmul_flops,
        )
    assert (rows["lm_head"].forward_flops, rows["lm_head"].backward_flops) == (
        head.fwd_matmul_flops,
        head.bwd_matmul_flops,
    )
    assert rows["other"].forward_flops == 0 and rows["other"].backward_flops == 0
    n_params = sum(p.numel() for p in tiny_llama.parameters())
    assert sum(r.param_bytes for r in rows.values()) == n_params * FP32, "every parameter counted once"
    assert rows["model.embed_tokens"].backward_ns > 0, "embedding backward ends at its weight gradient"
    assert rows["model.rotary_emb"].backward_ns == 0, "no gradient flows through the rotary tables"
    assert tiny_llama.model.embed_tokens.weight.grad is None, "profiling leaves no gradients behind"


def test_profile_decoder_rows_add_up_to_the_whole_model_forward_time(
    tiny_llama: nn.Module, one_thread: None
) -> None:
    ids = token_ids(2, 64)
    inputs = {"input_ids": ids}
    # Paired rounds: each hooked profile is measured right after a hook-free whole-model timing, so
    # load from other processes hits both alike; the bound is the full 10 %.
    ratios = []
    for _ in range(16):
        whole = time_model(tiny_llama, inputs, warmup=3, repeats=20).forward_ns
        rows = profile_decoder(tiny_llama, ids, warmup=3, repeats=20)
        ratios.append(sum(r.forward_ns for r in rows) / whole)
    ratio = statistics.median(ratios)
    assert abs(ratio - 1.0) < 0.10, (
        f"rows sum / whole model = {ratio:.3f}; rounds: {[round(r, 3) for r in ratios]}"
    )
    assert rows[-1].name == "other" and rows[-1].forward_ns >= 0
    assert all(r.backward_ns is None for r in rows), "forward-only profile"


def test_profiling_restores_every_forward_it_instruments() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    patched = model[2].forward  # an accelerate-style instance-level forward must survive
    model[2].forward = patched
    profile_modules(model, torch.randn(2, 3), warmup=0, repeats=1)
    assert "forward" not in model[0].__dict__ and "forward" not in model[1].__dict__
    assert model[2].__dict__["forward"] is patched
    assert not any(m._forward_hooks or m._backward_hooks or m._backward_pre_hooks for m in model)
    assert not any(p._post_accumulate_grad_hooks for p in model.parameters())


def test_rows_serialise_to_flat_dicts(tiny_llama: nn.Module) -> None:
    rows = profile_decoder(tiny_llama, token_ids(1, 4), warmup=0, repeats=1)
    first = rows[0].to_dict()
    assert set(first) == set(ModuleProfile.__dataclass_fields__)
    assert all(isinstance(v, (int, str, type(None))) for v in first.values())


def test_profiling_rejects_models_and_modules_it_cannot_profile() -> None:
    with pytest.raises(ConfigError, match="not a HF causal LM"):
        profile_decoder(nn.Linear(2, 2), token_ids(1, 2))
    with pytest.raises(ConfigError, match="no submodule 'nope'"):
        profile_modules(nn.Sequential(nn.Linear(2, 2)), torch.randn(1, 2), modules=["nope"])
    with pytest.raises(ConfigError, match="repeats"):
        time_model(nn.Linear(2, 2), torch.randn(1, 2), repeats=0)


class _ReluInPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.first(x)
        y.relu_()  # changes `first`'s output after it returned
        return self.second(y)


def test_an_output_changed_in_place_is_named_in_one_config_error() -> None:
    model, x = _ReluInPlace(), torch.randn(2, 4)
    with pytest.raises(ConfigError, match="output of module 'first' is modified in place") as info:
        profile_modules(model, x, warmup=0, repeats=1)
    assert "backward=False" in info.value.hint
    rows = profile_modules(model, x, warmup=0, repeats=1, backward=False)  # forward-only still works
    assert [r.name for r in rows] == ["first", "second", "other"]
    assert not model.first._backward_hooks and not model.second._backward_hooks  # none left behind
