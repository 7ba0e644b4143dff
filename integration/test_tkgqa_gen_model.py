"""GenTKGQA stage 2 on real data and the real LM: SmolLM2 with knowledge tokens, a GNN bound to its KG.

Only a missing data directory skips; an environment without the SmolLM2 wheel (effcore[models]) fails.
"""

from __future__ import annotations

import pytest
import torch

from effcore.assets import data_dir
from effcore.errors import DataNotFoundError
from effcore.testing.cli import cli_fails, cli_ok

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def root():
    try:
        return data_dir()
    except DataNotFoundError as err:
        pytest.skip(str(err))


def test_smollm2_zero_projection_is_the_plain_lm_and_a_nonzero_one_changes_it():
    from effcore.assets import load_causal_lm
    from tkgqa.gen.model import GenTKGQA, add_lora, instruction

    lm, tok = load_causal_lm("smollm2")
    model = GenTKGQA(add_lora(lm), tok, 64).eval()
    prompt = instruction(
        "Who visited China on 8 May 2013?", "1. Barack Obama | Make a visit | China | 2013-05-08"
    )
    batch = model.encode([prompt])
    feats = torch.randn(1, 5, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = model.lm(input_ids=batch.ids, attention_mask=batch.mask).logits
        torch.nn.init.zeros_(model.proj.weight)
        torch.nn.init.zeros_(model.proj.bias)
        assert torch.equal(model.logits(batch, feats), plain)
        torch.nn.init.normal_(model.proj.weight, std=0.05)
        assert (model.logits(batch, feats) - plain).abs().max() > 1e-2


def test_icews14_questions_are_supported_and_a_gnn_refuses_another_kg(root, tmp_path):
    from tkgqa.cli import app
    from tkgqa.gen.questions import generate_questions
    from tkgqa.loaders import load_icews14
    from tkgqa.names import kg_to_answer

    kg = load_icews14(root)
    for g in generate_questions(kg, 60, seed=3):
        facts = kg.facts(g.rows)
        named = {kg_to_answer(x) for f in facts for x in (f.head, f.tail)} | {f.date[:4] for f in facts}
        assert set(g.question.answers) <= named, g.question.question
    ckpt = tmp_path / "gnn.pt"
    cli_ok(app, ["gen-pretrain", "--kg", "icews14", "--data-dir", str(root), "--max-minutes", "0.2", "--epochs", "1",
                 "--no-baseline", "--eval-facts", "50", "--checkpoint", str(ckpt)])  # fmt: skip
    gen = tmp_path / "gen.pt"
    gen.write_bytes(b"x")
    cli_fails(app, ["gen-ask", "Who visited China?", "--kg", "multitq", "--data-dir", str(root), "--gnn", str(ckpt),
                    "--generator", str(gen)], "was trained on another KG")  # fmt: skip
