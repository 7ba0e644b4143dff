"""The allocmoe CLI end to end on tiny random MoEs, and its one-line errors."""

from __future__ import annotations

import json

import pytest
import torch

from allocmoe.alloc_l import FORMAT, model_fingerprint
from allocmoe.cli import app
from allocmoe.models import load_model
from effcore.testing.cli import cli_fails, cli_ok
from effcore.testing.tiny import tiny_model

TINY = ["-m", "tiny:qwen2_moe"]


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    path = tmp_path_factory.mktemp("p") / "prof.json"
    cli_ok(app, ["profile", *TINY, "-o", str(path), "--blocks", "2", "--block-size", "16", "--device", "cpu"])
    return path


@pytest.fixture(scope="module")
def top4(tmp_path_factory):
    """A tiny Qwen2-MoE checkpoint routing top-4 of 8 (so K_base = 2 leaves room to allocate), and a
    profile of it in which layer 0 is insensitive: without the K_base floor the DP would cut it to 1."""
    from transformers import Qwen2MoeForCausalLM

    folder = tmp_path_factory.mktemp("top4")
    config = tiny_model("qwen2_moe").config
    config.num_experts_per_tok = 4
    torch.manual_seed(0)
    Qwen2MoeForCausalLM(config).eval().save_pretrained(folder / "model")
    model = load_model(str(folder / "model"), device="cpu").model
    prof = {
        "format": FORMAT,
        "model_fingerprint": model_fingerprint(model),
        "calib_fingerprint": "c",
        "num_layers": 2,
        "k_orig": 4,
        "S": [[10.0, 10.0, 10.0, 10.0], [100.0, 50.0, 20.0, 10.0]],
        "meta": {"model": str(folder / "model")},
    }
    (folder / "prof.json").write_text(json.dumps(prof))
    return folder / "model", folder / "prof.json"


def test_profile_allocate_eval(profile, tmp_path):
    d = json.loads(profile.read_text())
    assert d["num_layers"] == 2 and all(v is not None for row in d["S"] for v in row)
    cli_ok(app, ["allocate", "-b", "3", "-p", str(profile), "-o", str(tmp_path / "a.json")])
    budget = json.loads((tmp_path / "a.json").read_text())["budget"]
    assert budget["total"] <= 3 and len(budget["k_layers"]) == 2
    out = tmp_path / "e.json"
    cli_ok(app, [
        "eval", *TINY, "-p", str(profile), "-b", "1/2", "--methods", "uniform,alloc_moe,top_p,lexi",
        "--blocks", "2", "--block-size", "16", "--calib-blocks", "1", "--device", "cpu", "-o", str(out),
    ])  # fmt: skip
    rows = json.loads(out.read_text())["rows"]
    assert [r["method"] for r in rows] == ["full", "uniform", "alloc_moe", "top_p", "lexi"]
    assert rows[1]["activations_per_token"] == pytest.approx(2.0)
    assert rows[1]["k_layers"] == [1, 1] and rows[1]["same_as_uniform"]
    assert rows[3]["K_l"] == "threshold" and not rows[3]["same_as_uniform"]
    # B = 2 of 4 on 2 layers: every method's allocation is 1,1; LExI (no pooling) is Uniform exactly
    assert rows[4]["k_layers"] == [1, 1] and rows[4]["same_as_uniform"]


def test_eval_sweeps_k_base_and_reports_load_preservation(top4, tmp_path):
    model, prof = top4
    out = tmp_path / "e.json"
    cli_ok(app, [
        "eval", "-m", str(model), "-p", str(prof), "-b", "4,6", "--methods", "uniform,alloc_moe",
        "--k-base", "0,1,2", "--blocks", "2", "--block-size", "16", "-o", str(out),
    ])  # fmt: skip
    d = json.loads(out.read_text())
    rows = d["rows"]
    pooled = [(r["B"], r["k_base"]) for r in rows if r["method"] == "alloc_moe"]
    assert pooled == [(4, 0), (4, 1), (4, 2), (6, 0), (6, 1), (6, 2)]  # uniform once per budget
    assert [r["B"] for r in rows if r["method"] == "uniform"] == [4, 6]
    for r in rows:
        if r["method"] == "alloc_moe":
            assert min(r["k_layers"]) >= max(1, r["k_base"]), r
    assert rows[0]["method"] == "full" and rows[0]["load_spearman"] == pytest.approx(1.0)
    assert rows[0]["load_js"] == pytest.approx(0.0, abs=1e-12)
    assert all(0.0 <= r["load_js"] <= 1.0 and -1.0 <= r["load_spearman"] <= 1.0 for r in rows)
    assert len(d["expert_load"]) == len(rows) and all(len(v) == 2 for v in d["expert_load"].values())


def test_eval_says_when_a_method_is_the_uniform_computation(profile):
    res = cli_ok(app, [
        "eval", *TINY, "-b", "1/2", "--methods", "uniform,lexi", "--blocks", "1", "--block-size", "16",
    ])  # fmt: skip
    assert "same allocation as Uniform (so the same computation): lexi at B=2" in res.output


def test_allocate_eval_and_bench_honour_a_k_base_floor_above_one(top4, tmp_path):
    model, prof = top4
    res = cli_ok(
        app, ["allocate", "-b", "5", "-p", str(prof), "--k-base", "2", "-o", str(tmp_path / "a.json")]
    )
    assert json.loads((tmp_path / "a.json").read_text())["budget"]["k_layers"] == [2, 3], res.output
    out = tmp_path / "e.json"
    cli_ok(app, [
        "eval", "-m", str(model), "-p", str(prof), "-b", "5", "--methods", "alloc_moe", "--k-base", "2",
        "--blocks", "1", "--block-size", "16", "-o", str(out),
    ])  # fmt: skip
    row = json.loads(out.read_text())["rows"][1]
    assert row["k_layers"] == [2, 3] and row["activations_per_token"] == pytest.approx(5.0)
    cli_ok(app, [
        "bench", "-m", str(model), "-p", str(prof), "-b", "5", "--k-base", "2", "--batch", "1,2",
        "--prompt-len", "8", "--new-tokens", "1", "--repeats", "1", "--device", "cpu", "-o", str(out),
    ])  # fmt: skip
    rows = json.loads(out.read_text())["rows"]
    ours = [r for r in rows if r["config"] == "allocmoe-B=5"]
    assert [r["batch"] for r in ours] == [1, 2] and all(r["activations_per_token"] == 5.0 for r in ours)
    assert all(r["prefill_of_ideal"] > 0 and r["decode_of_ideal"] > 0 for r in ours)


def test_against_ideal_is_our_speedup_over_the_uniform_ones():
    from allocmoe.bench import against_ideal

    rows = [
        {"config": c, "batch": 1, "prefill_ms": p, "decode_ms_per_token": d}
        for c, p, d in (("full", 100.0, 10.0), ("ours", 80.0, 8.0), ("uni", 50.0, 5.0))
    ]
    against_ideal(rows, full="full", ours="ours", ideal="uni")
    assert rows[1]["prefill_vs_full"] == pytest.approx(1.25) and rows[2]["prefill_vs_full"] == 2.0
    assert rows[1]["prefill_of_ideal"] == pytest.approx(0.625) and rows[1][
        "decode_of_ideal"
    ] == pytest.approx(0.625)
    assert "prefill_of_ideal" not in rows[2]


def test_allocate_with_lexi_uses_the_profiles_model_and_checks_it(top4, tmp_path):
    _, prof = top4
    cli_ok(app, ["allocate", "-b", "5", "-p", str(prof), "--lexi", "-o", str(tmp_path / "a.json")])
    lexi = json.loads((tmp_path / "a.json").read_text())["lexi"]
    assert sum(lexi["k_layers"]) <= 5 and "same_as_uniform" in lexi


@pytest.fixture(scope="module")
def with_tokenizer(tmp_path_factory):
    """A tiny Qwen2-MoE (2 layers, top-2 of 4) with a word-level tokenizer, and a profile of it that
    says top-1 scores better than top-2 in both layers (so "at most B" would spend less than full)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(128)} | {"[UNK]": 128}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]")
    folder = tmp_path_factory.mktemp("tok") / "m"
    tiny_model("qwen2_moe").save_pretrained(folder)
    tok.save_pretrained(folder)
    assert isinstance(AutoTokenizer.from_pretrained(folder), PreTrainedTokenizerFast)
    model = load_model(str(folder), device="cpu").model
    prof = {
        "format": FORMAT, "model_fingerprint": model_fingerprint(model), "calib_fingerprint": "c",
        "num_layers": 2, "k_orig": 2, "S": [[5.0, 9.0], [5.0, 9.0]], "meta": {},
    }  # fmt: skip
    (folder.parent / "prof.json").write_text(json.dumps(prof))
    return folder, folder.parent / "prof.json"


def test_generate_runs_on_the_chosen_device(with_tokenizer, tmp_path):
    folder, _ = with_tokenizer
    out = tmp_path / "g.json"
    cli_ok(app, ["generate", "w1 w2 w3", "-m", str(folder), "--max-new-tokens", "3", "-b", "1/2",
                 "--device", "cpu", "-o", str(out)])  # fmt: skip
    d = json.loads(out.read_text())
    assert d["device"] == "cpu" and d["budget"]["total"] == 2 and d["spent"] == pytest.approx(2.0)


def test_generate_samples_and_streams_under_a_budget_through_transformers_generate(with_tokenizer, tmp_path):
    folder, prof = with_tokenizer
    texts = []
    for i in range(2):
        out = tmp_path / f"g{i}.json"
        res = cli_ok(app, ["generate", "w1 w2 w3", "-m", str(folder), "--max-new-tokens", "6", "-b", "3",
                           "-p", str(prof), "--sample", "--temperature", "1.5", "--top-p", "0.9", "--stream",
                           "--seed", "3", "-o", str(out)])  # fmt: skip
        d = json.loads(out.read_text())
        assert d["spent"] == pytest.approx(2.0) and d["completion"].strip() in res.output
        texts.append(d["completion"])
    assert texts[0] == texts[1] and len(texts[0].split()) == 6  # seeded sampling is reproducible


def test_generate_at_full_budget_is_the_unmodified_model(with_tokenizer, tmp_path):
    from transformers import AutoTokenizer

    from allocmoe.adapters import find_moe_layers
    from allocmoe.runtime import budgeted

    folder, prof = with_tokenizer
    out = tmp_path / "g.json"
    res = cli_ok(app, ["generate", "w1 w2 w3", "-m", str(folder), "--max-new-tokens", "4", "-b", "full",
                       "-p", str(prof), "--device", "cpu", "-o", str(out)])  # fmt: skip
    d = json.loads(out.read_text())
    assert d["budget"] is None and d["B"] == 4 and d["spent"] == 4.0, d
    assert "full: the unmodified model" in res.output
    model = load_model(str(folder), device="cpu").model
    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok("w1 w2 w3", return_tensors="pt")
    plain = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert d["completion"] == tok.decode(plain[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    # the library agrees: at B = full no budget is applied, and the profile's DP is not consulted
    from allocmoe.alloc_l import SensitivityProfile
    from allocmoe.baselines import serving_policy

    p = SensitivityProfile.load(prof)
    assert p.allocate(3, k_base=None).k_layers == (1, 1)  # at most B: the noisy profile spends 2 of 3
    assert serving_policy(4, num_layers=2, k_orig=2, profile=p) is None
    full = p.allocate(4, k_base=1)
    with torch.inference_mode():
        ref = model(**ids).logits
        with budgeted(model, full) as stats:
            got = model(**ids).logits
    assert stats.activations_per_token == pytest.approx(4.0) and len(find_moe_layers(model)) == 2
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_exact_budget_spends_exactly_b_and_every_table_states_the_spent_budget(with_tokenizer, tmp_path):
    # the fixture's noisy table, for tiny:qwen2_moe (which evaluates on random tokens)
    d = json.loads(with_tokenizer[1].read_text())
    d["model_fingerprint"] = model_fingerprint(load_model("tiny:qwen2_moe", device="cpu").model)
    prof = tmp_path / "prof.json"
    prof.write_text(json.dumps(d))
    for exact, spent in ((False, 2), (True, 3)):
        flag = ["--exact-budget"] if exact else []
        res = cli_ok(app, ["allocate", "-b", "3", "-p", str(prof), *flag, "-o", str(tmp_path / "a.json")])
        a = json.loads((tmp_path / "a.json").read_text())
        assert a["spent"] == spent and a["exact_budget"] is exact, a
        assert (
            f"Alloc-L spends {spent}" in res.output and ("exactly B" if exact else "at most B") in res.output
        )
        out = tmp_path / "e.json"
        cli_ok(app, ["eval", *TINY, "-p", str(prof), "-b", "3", "--methods", "alloc_l", *flag,
                     "--blocks", "1", "--block-size", "16", "-o", str(out)])  # fmt: skip
        row = json.loads(out.read_text())["rows"][1]
        assert row["activations_per_token"] == pytest.approx(spent), row


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["allocate", "-b", "1"], "outside 2..4"),
        (["allocate", "-b", "5"], "outside 2..4"),
        (["allocate", "-b", "half"], "cannot read budget"),
        (["allocate", "-b", "2", "--k-base", "-1"], "--k-base must be >= 0"),
        (["allocate", "-b", "2", "-m", "tiny:olmoe"], "made for model"),
        (["eval", *TINY, "--methods", "nope"], "unknown methods"),
        (["eval", *TINY, "--methods", "alloc_moe", "-b", "1/2"], "needs a sensitivity profile"),
        (["eval", *TINY, "--methods", "uniform", "--scope", "sequence"], "--scope applies only to"),
        (["eval", *TINY, "--methods", "alloc_t", "--scope", "batch"], "not one of: forward, sequence"),
        (["eval", *TINY, "--methods", "uniform", "--calib-blocks", "2"], "--calib-blocks applies only"),
        (["eval", *TINY, "--methods", "uniform,lexi", "-p", "p.json"], "--profile applies only"),
        (["eval", *TINY, "--methods", "uniform", "-b", "1/2,x"], "cannot read budget 'x'"),
        (["eval", *TINY, "--blocks", "0"], "--blocks must be >= 1"),
        (["eval", *TINY, "--block-size", "1"], "--block-size must be >= 2"),
        (["eval", *TINY, "--batch-size", "0"], "--batch-size must be >= 1"),
        (["eval", *TINY, "--methods", "top_p", "--calib-blocks", "0"], "--calib-blocks must be >= 1"),
        (["profile", *TINY, "--blocks", "-3"], "--blocks must be >= 1"),
        (["profile", *TINY, "--block-size", "0"], "--block-size must be >= 2"),
        (["profile", *TINY, "--batch-size", "0"], "--batch-size must be >= 1"),
        (["profile", *TINY, "-o", "prof.txt"], "unsupported extension '.txt'"),
        (["profile", *TINY, "--device", "cuda:7"], "cuda"),
        (["profile", *TINY, "--device", "gpu0"], "unknown device 'gpu0'"),
        (["profile", "-m", "/nonexistent/model"], "neither 'smollm2-moe[:recipe]'"),
        (["profile", "-m", "smollm2-moe:nope"], "unknown build recipe 'nope'"),
        (["profile", "-m", "tiny:llama", "-o", "x.json"], "no MoE block allocmoe can drive"),
        (["bench", "-m", "shape:nope"], "unknown model shape"),
        (["bench", *TINY, "--batch", "0"], "--batch needs positive integers"),
        (["bench", *TINY, "--repeats", "0"], "--repeats must be >= 1"),
        (["bench", *TINY, "--new-tokens", "0"], "--new-tokens must be >= 1"),
        (["bench", *TINY, "--prompt-len", "0"], "--prompt-len must be >= 1"),
        (["bench", *TINY, "--out", "bench.txt"], "unsupported extension"),
        (["generate", "hi", *TINY, "--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
        (["generate", "  ", *TINY], "the prompt is empty"),
        (["generate", "hi", *TINY, "--out", "g.csv"], "unsupported extension '.csv'"),
        (["generate", "hi", *TINY], "has no tokenizer"),
        (["build-model", "--recipe", "nope"], "unknown build recipe 'nope'"),
        (["eval", *TINY, "--methods", "uniform", "--exact-budget"], "--exact-budget applies only to"),
        (["eval", *TINY, "--methods", "uniform", "--k-base", "0,1"], "a --k-base sweep applies only"),
        (["eval", *TINY, "--k-base", "1,-1"], "--k-base must be integers >= 0"),
        (["eval", *TINY, "--engine", "vllm"], "--engine 'vllm' is not one of: allocmoe, hf"),
        (["bench", *TINY, "-b", "full"], "bench compares a budget below full"),
        (["bench", *TINY, "--exact-budget"], "--exact-budget applies only with --profile"),
        (
            ["generate", "hi", *TINY, "--temperature", "0.7"],
            "--temperature and --top-p apply only with --sample",
        ),
        (["generate", "hi", *TINY, "--sample", "--top-p", "0"], "--top-p must be in (0, 1]"),
        (["generate", "hi", *TINY, "--sample", "--temperature", "0"], "--temperature must be > 0"),
        (["generate", "hi", *TINY, "--exact-budget"], "--exact-budget applies only with --profile"),
        (["profile", *TINY, "--engine", "x"], "--engine 'x' is not one of"),
        (["build-model", "--top-k", "0"], "BuildRecipe.top_k must be >= 1"),
        (["build-model", "--out", "b.csv"], "unsupported extension '.csv'"),
    ],
)
def test_bad_input_is_one_clear_line(profile, args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if args[0] == "allocate":
        args = [*args, "-p", str(profile)]
    cli_fails(app, args, message)


def test_a_bad_out_path_fails_before_any_work(tmp_path, monkeypatch):
    import allocmoe.models

    def boom(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(allocmoe.models, "load_model", boom)
    (tmp_path / "file").write_text("")
    cli_fails(app, ["profile", *TINY, "-o", str(tmp_path / "file" / "p.json")], "is a file, not a folder")
    (tmp_path / "dir.json").mkdir()
    cli_fails(app, ["eval", *TINY, "-o", str(tmp_path / "dir.json")], "is a directory")


def test_malformed_checkpoint_config_is_one_line(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    cli_fails(app, ["profile", "-m", str(folder), "-o", str(tmp_path / "p.json")], "is not valid JSON")
    (folder / "config.json").write_text(json.dumps({"model_type": "no-such-family"}))
    cli_fails(
        app, ["profile", "-m", str(folder), "-o", str(tmp_path / "p.json")], "cannot load the checkpoint"
    )


def test_profile_whose_table_does_not_match_its_layer_count_is_named(profile, tmp_path):
    d = json.loads(profile.read_text())
    d["S"] = d["S"][:1]
    bad = tmp_path / "short.json"
    bad.write_text(json.dumps(d))
    cli_fails(app, ["allocate", "-b", "2", "-p", str(bad)], "its table has 1 rows but num_layers is 2")


def test_profile_of_another_model_is_refused(profile):
    cli_fails(
        app, ["eval", "-m", "tiny:olmoe", "-p", str(profile), "--methods", "alloc_moe"], "made for model"
    )
