"""Token blocks and perplexity."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from effcore.errors import ConfigError
from effcore.lm import perplexity, token_blocks
from effcore.testing.tiny import tiny_model


class _Uniform(torch.nn.Module):
    """A 'model' whose logits are all equal: perplexity must be exactly the vocabulary size."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids):
        return type("Out", (), {"logits": torch.zeros(*input_ids.shape, self.vocab)})()


@given(n=st.integers(1, 500), block=st.integers(2, 64))
def test_token_blocks_never_exceed_the_text_and_drop_only_the_tail(n, block):
    ids = torch.arange(n)
    if n < block:
        with pytest.raises(ConfigError, match="fewer than one block"):
            token_blocks(ids, block_size=block)
        return
    blocks = token_blocks(ids, block_size=block)
    assert blocks.shape == (n // block, block)
    assert torch.equal(blocks.reshape(-1), ids[: blocks.numel()])


@given(vocab=st.integers(2, 300))
def test_perplexity_of_uniform_logits_is_the_vocab_size(vocab):
    blocks = torch.randint(0, vocab, (3, 8), generator=torch.Generator().manual_seed(vocab))
    result = perplexity(_Uniform(vocab), blocks, batch_size=2)
    assert math.isclose(result.perplexity, vocab, rel_tol=1e-5)
    assert result.tokens == 3 * 7


def test_perplexity_matches_the_models_own_loss():
    model = tiny_model("llama")
    blocks = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(0))
    ours = perplexity(model, blocks, batch_size=3)
    with torch.no_grad():
        hf_loss = model(input_ids=blocks, labels=blocks).loss
    assert math.isclose(ours.nll, float(hf_loss), rel_tol=1e-5)
