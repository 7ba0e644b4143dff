"""GenTKGQA's temporal encoders: filtered ranking, learning on a structured KG, KG-bound checkpoints, the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from effcore.errors import ConfigError
from effcore.testing.cli import cli_fails, cli_ok
from tkgqa.cli import app
from tkgqa.gen.gnn import GnnConfig
from tkgqa.gen.pretrain import (
    evaluate_links,
    filtered_ranks,
    load_encoder,
    pretrain,
    save_encoder,
    split_facts,
)
from tkgqa.store import TemporalKG, day_to_iso, iso_to_day

CPU = torch.device("cpu")


def structured_kg(n_ent: int = 40, n_rel: int = 4, per_pair: int = 3, seed: int = 0) -> TemporalKG:
    """Each relation maps entity e to a fixed tail, on several days: held-out facts are predictable."""
    rng = np.random.default_rng(seed)
    base = iso_to_day("2014-01-01")
    quads = set()
    for r in range(n_rel):
        for e in range(n_ent):
            t = (e * (r + 2) + r + 1) % n_ent
            for d in rng.choice(60, size=per_pair, replace=False).tolist():
                quads.add((f"E{e}", f"R{r}", f"E{t}", day_to_iso(base + d)))
    return TemporalKG.from_quads(sorted(quads), source="structured", digest=f"structured-{seed}")


def test_filtered_ranks_hand_case():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7, 0.2], [1.0, 1.0, 1.0, 1.0, 1.0]])
    target = torch.tensor([2, 0])
    # row 0: entities 1 and 3 score higher; 1 is another true answer (filtered out), so rank 2 not 3
    # row 1: all tie; with nothing filtered the expected rank under random tie-breaking is 1 + 4/2
    ranks = filtered_ranks(scores, target, [np.array([1, 2]), np.array([], np.int64)])
    assert ranks.tolist() == [2.0, 3.0]
    assert filtered_ranks(scores[:1], target[:1], [np.array([], np.int64)]).tolist() == [3.0]


def test_split_facts_is_a_seeded_partition():
    train, held = split_facts(100, 0.1, seed=3)
    assert len(held) == 10 and sorted(np.concatenate([train, held]).tolist()) == list(range(100))
    assert np.array_equal(split_facts(100, 0.1, seed=3)[1], held)


@pytest.mark.parametrize("encoder,layers", [("tgnn", 1), ("distmult", 0)])
def test_training_beats_random_mrr_on_a_structured_kg(encoder, layers):
    kg = structured_kg()
    cfg = GnnConfig(encoder=encoder, layers=layers, dim=32, epochs=40, batch=256, lr=0.02, holdout=0.1)
    enc = pretrain(kg, cfg, device=CPU)
    _, held = split_facts(len(kg), cfg.holdout, cfg.seed)
    m = evaluate_links(enc, kg, held, device=CPU)
    random_mrr = float(np.sum(1 / np.arange(1, 41)) / 40)  # expected MRR of a uniformly random ranking
    assert m.mrr > 4 * random_mrr, (m, random_mrr)
    assert m.hits10 >= m.hits3 >= m.hits1


def test_checkpoint_roundtrip_and_other_kg_is_an_error(tmp_path):
    kg = structured_kg()
    cfg = GnnConfig(dim=16, epochs=2, batch=256)
    enc = pretrain(kg, cfg, device=CPU)
    path = tmp_path / "enc.pt"
    save_encoder(enc, path)
    back = load_encoder(path, kg)
    assert torch.equal(back.entity_table(kg), enc.entity_table(kg))
    with pytest.raises(ConfigError, match="trained on another KG"):
        load_encoder(path, structured_kg(seed=1))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not a tkgqa encoder checkpoint"):
        load_encoder(tmp_path / "junk.pt", kg)


def test_cli_gen_pretrain_writes_metrics_and_checkpoint(tmp_path):
    kg = structured_kg()
    tsv = tmp_path / "kg.tsv"
    tsv.write_text("".join(f"{f.head}\t{f.relation}\t{f.tail}\t{f.date}\n" for f in kg.facts(range(len(kg)))))
    out, ckpt = tmp_path / "p.json", tmp_path / "enc.pt"
    res = cli_ok(app, ["gen-pretrain", "--kg", str(tsv), "--epochs", "1", "--dim", "8", "--eval-facts", "10",
                       "--checkpoint", str(ckpt), "--out", str(out)])  # fmt: skip
    assert "distmult" in res.output and ckpt.is_file()
    import json

    payload = json.loads(out.read_text())
    assert set(payload) == {"tgnn", "distmult", "meta"} and payload["tgnn"]["metrics"]["queries"] == 20


@pytest.mark.parametrize(
    "args,match",
    [
        (["--epochs", "0"], "epochs must be >= 1"),
        (["--layers", "0"], "--layers must be 1..3"),
        (["--dim", "7"], "dim must be even"),
        (["--max-minutes", "0"], "--max-minutes must be > 0"),
        (["--checkpoint", "enc.bin"], "--checkpoint"),
        (["--kg", "no_such.tsv"], "neither 'multitq', 'icews14' nor an existing TSV"),
    ],
)
def test_cli_gen_pretrain_bad_options_fail_before_loading(args, match):
    cli_fails(app, ["gen-pretrain", *args], match)


def test_cli_gen_pretrain_on_a_kg_without_timestamps_is_a_clear_error(tmp_path):
    tsv = tmp_path / "static.tsv"
    tsv.write_text("A\tr\tB\nB\tr\tC\n")
    cli_fails(
        app,
        ["gen-pretrain", "--kg", str(tsv)],
        "expected 4 tab-separated fields (head, relation, tail, date)",
    )


@pytest.mark.parametrize("encoder,layers", [("tgnn", 0), ("tgnn", 4), ("distmult", 1)])
def test_gnn_config_rejects_layers_that_do_not_fit_the_encoder(encoder, layers):
    with pytest.raises(ConfigError, match=f"layers must be in .* for {encoder}"):
        GnnConfig(encoder=encoder, layers=layers)
