"""A causal LM (SmolLM2-135M, or any HF Llama-style model) as a delta model: blocks, token batches, next-token loss."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from delta.models import ModelCase
from effcore.errors import ConfigError

__all__ = ["HeadLoss", "lm_case", "smollm2_case"]


class HeadLoss(nn.Module):
    """The LM head and the next-token cross-entropy as one block.

    The logits and the loss's log-softmax (batch x length x vocabulary floats: the largest tensors of an
    LM step) are saved inside it, so a policy can release them; saved outside every block they would be
    kept whatever the budget."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        logits = self.head(hidden)
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())


def lm_case(name: str, model: nn.Module, sequences: torch.Tensor, *, device: torch.device) -> ModelCase:
    """A Llama-style ``...ForCausalLM`` trained on rows of ``sequences`` ``[N, seq_len]`` (token ids).

    Blocks: the embeddings, each decoder layer, the final norm (the base model applies it), then
    :class:`HeadLoss`; the loss is HF's own (``labels=ids``) without its logits outside a block. A batch of ``n`` is ``n`` rows
    drawn without replacement; the KV cache is off (a training step)."""
    if sequences.ndim != 2 or sequences.shape[0] < 1 or sequences.shape[1] < 2:
        raise ConfigError(f"{name}: need token sequences [N >= 1, length >= 2], got {tuple(sequences.shape)}")
    model.train()
    head = HeadLoss(model.lm_head)
    blocks = [("embed", model.model.embed_tokens)]
    blocks += [(f"layers.{i}", layer) for i, layer in enumerate(model.model.layers)]
    blocks += [("norm", model.model.norm), ("head+loss", head)]

    def loss(m: nn.Module, ids: torch.Tensor) -> torch.Tensor:
        return head(m.model(input_ids=ids, use_cache=False).last_hidden_state, ids)

    def make_batch(n: int, gen: torch.Generator) -> tuple[torch.Tensor]:
        if n > sequences.shape[0]:
            raise ConfigError(
                f"batch {n} needs more sequences than the corpus holds ({sequences.shape[0]})",
                hint="use a smaller batch or a shorter --seq-len",
            )
        idx = torch.randperm(sequences.shape[0], generator=gen)[:n]
        return (sequences[idx].to(device),)

    return ModelCase(
        name=name, model=model, make_batch=make_batch, loss=loss, unit="sequences", blocks=blocks
    )


def smollm2_case(*, seq_len: int, device: torch.device) -> ModelCase:
    """SmolLM2-135M (the bundled weights, fp32) on WikiText-2 validation text cut into ``seq_len`` tokens.

    The data payload holds WikiText-2's validation and test splits only: validation stands in for train.
    ``seq_len`` is checked by :func:`delta.models.check_options` (``build_model`` calls it first)."""
    from effcore.assets import load_causal_lm, load_text, quiet_transformers
    from effcore.lm import token_blocks

    model, tokenizer = load_causal_lm("smollm2", dtype=torch.float32, device=device)
    with quiet_transformers():  # the whole text is one call: longer than the model's context, on purpose
        ids = torch.tensor(tokenizer(load_text("wikitext2", "valid"))["input_ids"])
    return lm_case("smollm2", model, token_blocks(ids, block_size=seq_len), device=device)
