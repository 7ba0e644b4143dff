"""Batched, span-constrained greedy slot filling; the text's prefix is encoded once and its KV cache shared.

``shared_prefix=True`` (the default): one forward over ``Text: S`` whose KV cache is repeated for all
prompts of that text, then every prompt is prefilled and decoded in one batch (rows padded between
the prefix and their prompt, with explicit positions, so each row sees exactly prefix + its prompt).
``shared_prefix=False`` is the reference: each prompt alone, from scratch, one at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from promptie.backbone import Backbone
from promptie.grammar import SlotGrammar

__all__ = ["fill_slots", "next_token_logits"]


def _pick(logits: torch.Tensor, grammar: SlotGrammar, null_margin: float = 0.0) -> int:
    """Greedy over the tokens the grammar allows; at a slot's first step the null answer's first token
    scores ``null_margin`` lower (0: plain greedy)."""
    allowed = grammar.allowed()
    if len(allowed) == 1:
        return allowed[0]
    scores = logits.index_select(0, torch.tensor(allowed, device=logits.device))
    if null_margin:
        null = grammar.null_start()
        if null is not None:
            scores[allowed.index(null)] -= null_margin
    return allowed[int(scores.argmax())]


def _prefill_causal(bb: Backbone, text: str, prompts: Sequence[str]):
    """Logits at each prompt's last token, the batched cache, attention mask and next positions."""
    prefix = bb.prefix_ids(text)
    dev = bb.device
    out = bb.model(input_ids=torch.tensor([prefix], device=dev), use_cache=True)
    cache = bb.cache_of(out)
    cache.batch_repeat_interleave(len(prompts))
    suffixes = [bb.prompt_ids(p) for p in prompts]
    width = max(map(len, suffixes))
    p0 = len(prefix)
    ids, mask, pos = [], [], []
    for s in suffixes:
        pad = width - len(s)
        ids.append([bb.pad_id] * pad + s)
        mask.append([1] * p0 + [0] * pad + [1] * len(s))
        pos.append([p0] * pad + list(range(p0, p0 + len(s))))
    mask_t = torch.tensor(mask, device=dev)
    out = bb.model(input_ids=torch.tensor(ids, device=dev), attention_mask=mask_t,
                   position_ids=torch.tensor(pos, device=dev), **bb.with_cache(cache), use_cache=True)  # fmt: skip
    nxt = torch.tensor([p0 + len(s) for s in suffixes], device=dev)
    return out.logits[:, -1].float(), bb.cache_of(out), mask_t, nxt


def _decode_causal(bb: Backbone, text: str, prompts: Sequence[str], grammars: list[SlotGrammar], max_new: int,
                   margins: Sequence[float]):  # fmt: skip
    logits, cache, mask, nxt = _prefill_causal(bb, text, prompts)
    rows = list(range(len(prompts)))  # batch row -> prompt index
    for _ in range(max_new):
        tokens = []
        for r, i in enumerate(rows):
            t = _pick(logits[r], grammars[i], margins[i])
            grammars[i].advance(t)
            tokens.append(t)
        keep = [r for r, i in enumerate(rows) if not grammars[i].finished]
        if not keep:
            return
        if len(keep) < len(rows):
            cache.batch_select_indices(torch.tensor(keep, device=mask.device))
            rows, mask, nxt = [rows[r] for r in keep], mask[keep], nxt[keep]
            tokens = [tokens[r] for r in keep]
        mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
        out = bb.model(input_ids=torch.tensor(tokens, device=mask.device)[:, None], attention_mask=mask,
                       position_ids=nxt[:, None], **bb.with_cache(cache), use_cache=True)  # fmt: skip
        logits, cache, nxt = out.logits[:, -1].float(), bb.cache_of(out), nxt + 1


def _encode_seq2seq(bb: Backbone, text: str, prompts: Sequence[str]):
    srcs = [bb.source_ids(text, p) for p in prompts]
    width = max(map(len, srcs))
    dev = bb.device
    ids = torch.tensor([s + [bb.pad_id] * (width - len(s)) for s in srcs], device=dev)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in srcs], device=dev)
    return bb.model.get_encoder()(input_ids=ids, attention_mask=mask), mask


def _decode_seq2seq(bb: Backbone, text: str, prompts: Sequence[str], grammars: list[SlotGrammar], max_new: int,
                    margins: Sequence[float]):  # fmt: skip
    enc, mask = _encode_seq2seq(bb, text, prompts)
    start = bb.model.config.decoder_start_token_id
    tokens = [start] * len(prompts)
    cache = None
    for _ in range(max_new):
        out = bb.model(encoder_outputs=enc, attention_mask=mask, **bb.with_cache(cache), use_cache=True,
                       decoder_input_ids=torch.tensor(tokens, device=mask.device)[:, None])  # fmt: skip
        cache, logits = bb.cache_of(out), out.logits[:, -1].float()
        tokens = []
        for i, g in enumerate(grammars):
            if g.finished:
                tokens.append(bb.pad_id)
                continue
            t = _pick(logits[i], g, margins[i])
            g.advance(t)
            tokens.append(t)
        if all(g.finished for g in grammars):
            return


def fill_slots(
    bb: Backbone,
    text: str,
    prompts: Sequence[str],
    grammars: list[SlotGrammar],
    *,
    shared_prefix: bool = True,
    max_new_tokens: int = 64,
    null_margins: Sequence[float] | None = None,
) -> list[list[list[str]]]:
    """Fill every prompt's slots for ``text``; returns per prompt, per slot, the answer spans.

    ``null_margins[i]`` is subtracted from the null answer's logit at each of prompt i's slots' first
    step (default 0 for all: plain greedy).
    """
    if not prompts:
        return []
    margins = list(null_margins) if null_margins is not None else [0.0] * len(prompts)
    if len(margins) != len(prompts):
        raise ValueError(f"{len(margins)} null margins for {len(prompts)} prompts")
    decode = _decode_seq2seq if bb.kind == "seq2seq" else _decode_causal
    with torch.inference_mode():
        if shared_prefix:
            decode(bb, text, prompts, grammars, max_new_tokens, margins)
        else:
            for p, g, m in zip(prompts, grammars, margins, strict=True):
                _decode_alone(bb, text, p, g, max_new_tokens, m)
    return [g.answers() for g in grammars]


def _decode_alone(bb: Backbone, text: str, prompt: str, g: SlotGrammar, max_new: int, margin: float) -> None:
    """No prefix reuse, no batching: the whole input from scratch, then token by token."""
    if bb.kind == "seq2seq":
        _decode_seq2seq(bb, text, [prompt], [g], max_new, [margin])
        return
    ids = torch.tensor([bb.prefix_ids(text) + bb.prompt_ids(prompt)], device=bb.device)
    out = bb.model(input_ids=ids, use_cache=True)
    for _ in range(max_new):
        t = _pick(out.logits[0, -1].float(), g, margin)
        g.advance(t)
        if g.finished:
            return
        out = bb.model(input_ids=torch.tensor([[t]], device=bb.device), **bb.with_cache(bb.cache_of(out)),
                       use_cache=True)  # fmt: skip


def next_token_logits(
    bb: Backbone, text: str, prompts: Sequence[str], *, shared_prefix: bool = True
) -> torch.Tensor:
    """``[len(prompts), vocab]`` logits of the first generated token after each prompt (no grad)."""
    with torch.inference_mode():
        if bb.kind == "seq2seq":
            enc, mask = _encode_seq2seq(bb, text, prompts)
            start = torch.full((len(prompts), 1), bb.model.config.decoder_start_token_id, device=mask.device)
            return (
                bb.model(encoder_outputs=enc, attention_mask=mask, decoder_input_ids=start)
                .logits[:, -1]
                .float()
            )
        if shared_prefix:
            return _prefill_causal(bb, text, prompts)[0]
        rows = []
        for p in prompts:
            ids = torch.tensor([bb.prefix_ids(text) + bb.prompt_ids(p)], device=bb.device)
            rows.append(bb.model(input_ids=ids).logits[0, -1].float())
        return torch.stack(rows)
