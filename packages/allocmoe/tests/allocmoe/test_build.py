"""Upcycling a dense Llama into a Qwen2-MoE: exact mapping, partition invariants, recipe hash, cached build."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import fields, replace

import pytest
import torch

from allocmoe import build
from allocmoe.build import BuildRecipe, convert_layer, load_moe, partition_neurons, upcycle_config
from effcore.errors import AssetError, ConfigError
from effcore.testing.tiny import tiny_model


def _upcycle_exact(recipe: BuildRecipe):
    from transformers import Qwen2MoeForCausalLM

    dense = tiny_model("llama")
    config = upcycle_config(dense.config, recipe)
    moe = Qwen2MoeForCausalLM(config).eval()
    with torch.no_grad():
        moe.model.embed_tokens.weight.copy_(dense.model.embed_tokens.weight)
        moe.model.norm.weight.copy_(dense.model.norm.weight)
        moe.lm_head.weight.copy_(dense.lm_head.weight)
    x = torch.randn(256, dense.config.hidden_size, generator=torch.Generator().manual_seed(0))
    for dl, ml in zip(dense.model.layers, moe.model.layers, strict=True):
        part = partition_neurons(dl.mlp, x, shared_size=recipe.shared_size, num_experts=recipe.num_experts)
        convert_layer(dl, ml, part, scale=recipe.scale)
        ml.mlp.gate.weight.data.zero_()
    return dense, moe


def test_upcycle_with_all_experts_and_zero_router_reproduces_dense_logits():
    recipe = BuildRecipe(num_experts=4, top_k=4, shared_size=32)  # p = 1/4, c = 4: routed sum is exact
    dense, moe = _upcycle_exact(recipe)
    ids = torch.randint(0, 128, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = dense(input_ids=ids).logits, moe(input_ids=ids).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0, msg="upcycled logits differ from dense logits")


def test_upcycle_config_copies_dense_fields_and_sizes_experts():
    dense = tiny_model("llama")
    cfg = upcycle_config(dense.config, BuildRecipe(num_experts=4, top_k=2, shared_size=32))
    assert cfg.model_type == "qwen2_moe"
    for name in (
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
    ):
        assert getattr(cfg, name) == getattr(dense.config, name), name
    assert (cfg.moe_intermediate_size, cfg.shared_expert_intermediate_size) == (24, 32)
    assert cfg.norm_topk_prob is False and cfg.mlp_only_layers == [] and cfg.decoder_sparse_step == 1
    with pytest.raises(ConfigError, match="equal experts"):
        upcycle_config(dense.config, BuildRecipe(num_experts=5, top_k=2, shared_size=32))


@pytest.mark.parametrize(("shared", "experts"), [(0, 8), (32, 4), (64, 16)])
def test_partition_covers_every_neuron_once_in_equal_experts_with_top_shared(shared, experts):
    mlp = tiny_model("llama").model.layers[0].mlp
    x = torch.randn(200, 64, generator=torch.Generator().manual_seed(2))
    part = partition_neurons(mlp, x, shared_size=shared, num_experts=experts)
    inter = mlp.gate_proj.weight.shape[0]
    assert part.experts.shape == (experts, (inter - shared) // experts), "experts not of equal size"
    every = torch.cat([part.shared, part.experts.reshape(-1)])
    assert torch.equal(torch.sort(every).values, torch.arange(inter)), "some neuron missing or repeated"
    if shared:
        top = torch.topk(part.importance, shared).indices
        assert set(part.shared.tolist()) == set(top.tolist()), "shared expert is not the top-S by importance"


def test_recipe_hash_changes_with_every_parameter_and_source():
    base = BuildRecipe()
    seen = {base.hash()}
    for f in fields(BuildRecipe):
        value = getattr(base, f.name)
        if isinstance(value, bool):
            new = not value
        elif f.name == "source":
            new = "other"
        elif value is None:
            new = 2.5
        elif f.name == "top_k":
            new = value + 1
        else:
            new = value * 2 if value else 1
        h = replace(base, **{f.name: new}).hash()
        assert h not in seen, f"hash ignores {f.name}"
        seen.add(h)
    assert base.hash("abc") != base.hash("abd")
    assert base.hash() == BuildRecipe().hash()


def test_recipe_rejects_out_of_range_values():
    with pytest.raises(ConfigError, match="top_k"):
        BuildRecipe(num_experts=4, top_k=5)
    with pytest.raises(ConfigError, match="router_steps"):
        BuildRecipe(router_steps=-1)


def test_tiny_build_caches_and_reloads_with_identical_logits(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFML_CACHE", str(tmp_path))
    gen = torch.Generator().manual_seed(3)
    monkeypatch.setattr(build, "_source_sha256", lambda name: "tiny-sha")
    monkeypatch.setattr(build, "_load_source", lambda name: (tiny_model("llama"), None))
    monkeypatch.setattr(
        build, "_build_blocks", lambda tok, r, d: torch.randint(0, 128, (6, 32), generator=gen)
    )
    monkeypatch.setattr(
        build, "_eval_blocks", lambda tok, r, d: torch.randint(0, 128, (2, 32), generator=gen)
    )
    recipe = BuildRecipe(
        num_experts=4, top_k=2, shared_size=32, router_steps=5, router_batch=64, kmeans_tokens=64, e2e_steps=2,
        e2e_batch=2,
    )  # fmt: skip
    built = []
    real_upcycle = build.upcycle

    def keep(*args, **kwargs):
        built.append(real_upcycle(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(build, "upcycle", keep)
    stages: set[str] = set()
    path = build.build_moe(recipe, progress=lambda stage, done, total: stages.add(stage))
    assert path.name == f"smollm2-moe-{recipe.hash('tiny-sha')}" and path.parent == tmp_path / "allocmoe"
    assert {"data", "convert", "e2e", "write"} <= stages
    report = json.loads((path / "build.json").read_text())
    assert len(report["layers"]) == 2 and len(report["expert_load"]) == 2
    assert report["quality"]["moe_full_budget"]["perplexity"] > 1
    assert report["cpu_s"] > 0 and len(report["load_average"]) == 3, "the report cannot judge its wall time"
    load = report["expert_load"][0]["load"]
    assert len(load) == 4 and abs(sum(load) - 1) < 1e-3

    model, tok = load_moe(path)
    assert tok is None and model.config.num_experts == 4
    ids = torch.randint(0, 128, (2, 16), generator=gen)
    with torch.no_grad():
        want, got = built[0][0](input_ids=ids).logits, model(input_ids=ids).logits
    torch.testing.assert_close(got, want, atol=0, rtol=0, msg="reloaded MoE differs from the built one")
    # a second call finds the cache; a truncated file triggers a rebuild
    stamp = (path / "build.json").stat().st_mtime_ns
    assert build.build_moe(recipe) == path and (path / "build.json").stat().st_mtime_ns == stamp
    assert len(built) == 1
    weights = next(path.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(AssetError, match="truncated"):
        load_moe(path)
    assert build.build_moe(recipe) == path and (path / "build.json").stat().st_mtime_ns != stamp
    assert len(built) == 2


def test_a_recipe_that_trains_experts_with_load_balancing_is_deterministic_under_its_seed(
    tmp_path, monkeypatch
):
    gen = torch.Generator().manual_seed(5)
    build_ids = torch.randint(0, 128, (6, 32), generator=gen)
    monkeypatch.setattr(build, "_source_sha256", lambda name: "tiny-sha")
    monkeypatch.setattr(build, "_load_source", lambda name: (tiny_model("llama"), None))
    monkeypatch.setattr(build, "_build_blocks", lambda tok, r, d: build_ids.clone())
    monkeypatch.setattr(build, "_eval_blocks", lambda tok, r, d: build_ids[:2].clone())
    recipe = BuildRecipe(
        num_experts=4, top_k=2, shared_size=32, router_steps=3, router_batch=64, kmeans_tokens=64, e2e_steps=3,
        e2e_batch=2, e2e_expert_lr=1e-2, e2e_aux_weight=0.5,
    )  # fmt: skip
    frozen = dataclasses.replace(recipe, e2e_expert_lr=None, e2e_aux_weight=0.0)
    weights = []
    for i, r in enumerate((recipe, recipe, frozen)):
        monkeypatch.setenv("EFFML_CACHE", str(tmp_path / str(i)))
        model, _ = load_moe(build.build_moe(r))
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), f"{k} differs between two builds with one seed"
    changed = [k for k in weights[0] if not torch.equal(weights[0][k], weights[2][k])]
    assert any("experts.gate_up_proj" in k for k in changed) and any("shared_expert" in k for k in changed)
    assert not any("self_attn" in k or "embed" in k for k in changed), changed


def test_recipes_added_after_0_1_keep_the_0_1_hashes():
    ci = build.named_recipe("ci")
    assert ci.hash("x") == "8de4c36c03ff"  # the 0.1 ci recipe's name: its cached builds stay valid
    assert build.named_recipe("ci-experts").hash("x") != ci.hash("x")
    assert build.named_recipe("ci-experts").e2e_expert_lr and build.named_recipe("experts").e2e_aux_weight > 0
    with pytest.raises(ConfigError, match="e2e_expert_lr must be > 0"):
        BuildRecipe(e2e_expert_lr=0.0)


def test_load_moe_without_a_build_names_the_build_command(tmp_path, monkeypatch):
    with pytest.raises(AssetError, match="allocmoe build-model"):
        load_moe(tmp_path / "missing")
    monkeypatch.setenv("EFFML_CACHE", str(tmp_path))
    monkeypatch.setattr(build, "_source_sha256", lambda name: "tiny-sha")
    with pytest.raises(AssetError, match="allocmoe build-model --recipe ci"):
        load_moe(recipe_name="ci")


def test_ci_recipe_is_the_same_architecture_at_lower_cost():
    full, ci = build.named_recipe("full"), build.named_recipe("ci")
    assert full == BuildRecipe()
    for name in ("source", "num_experts", "top_k", "shared_size", "block_size", "router_lr", "rank_weight"):
        assert getattr(ci, name) == getattr(full, name), name
    for name in ("build_blocks", "router_steps", "e2e_steps", "eval_blocks"):
        assert getattr(ci, name) < getattr(full, name), name
    assert ci.hash() != full.hash()
    with pytest.raises(ConfigError, match="unknown build recipe 'nope'"):
        build.named_recipe("nope")


def test_ensure_built_prefers_a_cached_full_build_and_builds_ci_otherwise(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFML_CACHE", str(tmp_path))
    gen = torch.Generator().manual_seed(4)
    monkeypatch.setattr(build, "_source_sha256", lambda name: "tiny-sha")
    monkeypatch.setattr(build, "_load_source", lambda name: (tiny_model("llama"), None))
    monkeypatch.setattr(
        build, "_build_blocks", lambda tok, r, d: torch.randint(0, 128, (3, 16), generator=gen)
    )
    monkeypatch.setattr(
        build, "_eval_blocks", lambda tok, r, d: torch.randint(0, 128, (1, 16), generator=gen)
    )
    tiny = dict(num_experts=4, top_k=2, shared_size=32, router_steps=2, router_batch=32, kmeans_tokens=32)
    monkeypatch.setitem(build.RECIPES, "full", lambda: BuildRecipe(**tiny, e2e_steps=1, e2e_batch=1))
    monkeypatch.setitem(build.RECIPES, "ci", lambda: BuildRecipe(**tiny, e2e_steps=0))
    assert build.built_recipe() is None
    name, path = build.ensure_built()
    assert name == "ci" and path == build.moe_path(build.named_recipe("ci"))
    assert build.built_recipe() == "ci" and build.built_recipe(("full",)) is None
    build.build_moe(build.named_recipe("full"))
    assert build.ensure_built() == ("full", build.moe_path(build.named_recipe("full")))
    model, _ = load_moe(recipe_name="ci")
    assert model.config.num_experts == 4


def test_router_training_runs_on_one_thread_and_restores_the_thread_count(monkeypatch):
    from allocmoe import _upcycle

    seen = []
    real = _upcycle._routing_weights

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        if len(seen) == 3:
            raise RuntimeError("stop")
        return real(*args, **kwargs)

    monkeypatch.setattr(_upcycle, "_routing_weights", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = torch.randn(64, 8, generator=torch.Generator().manual_seed(5))
        ys = torch.randn(64, 4, 8, generator=torch.Generator().manual_seed(6))
        stats = _upcycle.ExpertStats(gram=ys @ ys.transpose(1, 2), dense_sq=ys.sum(1).pow(2).sum(-1))
        with pytest.raises(RuntimeError, match="stop"):
            _upcycle.train_router(
                torch.nn.Linear(8, 4, bias=False), x, stats, top_k=2, scale=2.0, steps=5, batch=16, lr=1e-2,
                rank_weight=0.5, generator=torch.Generator().manual_seed(7),
            )  # fmt: skip
        assert seen == [1, 1, 1], "the router steps ran on more than one thread"
        assert torch.get_num_threads() == 2, "the caller's thread count was not restored"
    finally:
        torch.set_num_threads(before)
