"""The generator: virtual knowledge tokens reach the LM only through ``proj`` (zero proj = the plain LM)."""

from __future__ import annotations

import pytest
import torch

from effcore.errors import ConfigError
from tkgqa.gen.gnn import GnnConfig
from tkgqa.gen.model import MARKERS, GenTKGQA, SubgraphFeatures, add_lora, facts_text, instruction
from tkgqa.gen.pretrain import pretrain


@pytest.fixture(scope="module")
def encoder(bench):
    return pretrain(bench.store, GnnConfig(dim=16, epochs=1, batch=512), device=torch.device("cpu"))


def _inputs(bench, encoder):
    rows = [0, 5, 9]
    feats = SubgraphFeatures(encoder, bench.store)(rows)
    prompt = instruction("Who visited China on 8 May 2013?", facts_text(bench.store, rows))
    return prompt, feats


def test_marker_positions_point_at_each_marker(tiny_lm, bench, encoder):
    lm, tok = tiny_lm
    model = GenTKGQA(lm, tok, encoder.cfg.dim)
    prompt, _ = _inputs(bench, encoder)
    batch = model.encode([prompt])
    for k, m in enumerate(MARKERS):
        assert tok.decode(batch.ids[0, batch.markers[0, k]]) == m[-1]  # byte-level: the marker's last byte
    assert tok.decode(batch.ids[0, batch.markers[0, 0] - 4 : batch.markers[0, 0] + 1]) == "[SUB]"


@pytest.mark.parametrize("lora", [False, True])
def test_zero_projection_gives_the_plain_lm_output_and_a_nonzero_one_changes_it(
    tiny_lm, bench, encoder, lora
):
    lm, tok = tiny_lm
    if lora:
        import copy

        lm = add_lora(copy.deepcopy(lm)).eval()
    model = GenTKGQA(lm, tok, encoder.cfg.dim).eval()
    prompt, feats = _inputs(bench, encoder)
    batch = model.encode([prompt, prompt + " Be brief."], ["China", "Iraq"])
    with torch.no_grad():
        plain = lm(input_ids=batch.ids, attention_mask=batch.mask).logits
        torch.nn.init.zeros_(model.proj.weight)
        assert torch.equal(model.logits(batch, torch.stack([feats, feats])), plain)
        torch.nn.init.normal_(model.proj.weight, std=0.5)
        fused = model.logits(batch, torch.stack([feats, feats]))
    first = int(batch.markers[0, 0])
    assert torch.equal(fused[:, :first], plain[:, :first])  # causal: nothing before the first marker moves
    assert (fused[:, first:] - plain[:, first:]).abs().max() > 1e-3


def test_features_ablations_and_empty_subgraph(bench, encoder):
    full = SubgraphFeatures(encoder, bench.store)([1, 2])
    assert full.shape == (5, 16)
    no_time = SubgraphFeatures(encoder, bench.store, time=False)([1, 2])
    assert torch.equal(no_time[:3], full[:3]) and not no_time[3:].any()
    no_gnn = SubgraphFeatures(encoder, bench.store, gnn=False)([1, 2])
    assert not torch.allclose(no_gnn[0], full[0]) and torch.equal(no_gnn[1], full[1])
    with pytest.raises(ConfigError, match="the subgraph is empty"):
        SubgraphFeatures(encoder, bench.store)([])


def test_answer_labels_cover_only_the_answer(tiny_lm, bench, encoder):
    lm, tok = tiny_lm
    model = GenTKGQA(lm, tok, encoder.cfg.dim)
    prompt, _ = _inputs(bench, encoder)
    batch = model.encode([prompt], ["China"])
    kept = batch.labels[0][batch.labels[0] != -100]
    assert tok.decode(kept) == "China" + tok.eos_token
