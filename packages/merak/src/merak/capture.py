"""Capture an unmodified HF causal LM as a proxy graph: glue ops plus calls to the model's own modules.

``torch.export`` (fx symbolic tracing fails on transformers 5 decoder layers) traces the model once
on one input shape, keeping the call signature of every *leaf* module (by default each block's
attention and MLP, the embeddings, the final norm and the LM head); the traced bodies of the leaves
are then swapped back for the original eager modules. The result is Merak's "proxy" representation:
a flat ``fx.GraphModule`` whose ``call_module`` nodes are the user's modules (same parameter objects,
so tensor parallelism and checkpoints act on them) and whose other nodes are the glue between them
(residual adds, in-block norms, masks, rotary tables). A model on the meta device captures and
profiles without allocating its weights.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import fx, nn

from effcore.errors import EffmlError
from effcore.profiling.graph import NodeProfile, profile_graph

__all__ = ["CaptureError", "CapturedModel", "capture", "default_leaves", "find_blocks"]

PREFIX = "hf."  # the wrapper's attribute: graph targets read "hf.<fqn in the user's model>"


class CaptureError(EffmlError):
    """The model could not be captured (the message names the node or module that failed)."""


class _LogitsOf(nn.Module):
    """``input_ids -> logits`` of a HF causal LM (no cache), the function the pipeline splits."""

    def __init__(self, hf: nn.Module) -> None:
        super().__init__()
        self.hf = hf

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.hf(input_ids=input_ids, use_cache=False).logits


@dataclass(kw_only=True)
class CapturedModel:
    """A model's proxy graph, its leaves, the example shape it was traced on and per-node costs."""

    model: nn.Module
    graph: fx.GraphModule
    leaves: tuple[str, ...]
    blocks: str
    input_shape: tuple[int, int]
    nodes: list[NodeProfile]
    program: torch.export.ExportedProgram  # the traced program before the swap (leaves' insides)

    def leaf_of(self, node: fx.Node) -> str | None:
        """The user-model FQN of the leaf a ``call_module`` node calls (None for glue)."""
        if node.op != "call_module" or not str(node.target).startswith(PREFIX):
            return None
        return str(node.target)[len(PREFIX) :]


def find_blocks(model: nn.Module) -> str:
    """The FQN of the model's repeated block list: the longest ``nn.ModuleList`` of one module class."""
    best, size = "", 0
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > size and len({type(m) for m in mod}) == 1:
            best, size = name, len(mod)
    if not size:
        raise CaptureError(
            f"{type(model).__name__} has no list of repeated blocks (an nn.ModuleList of one class)",
            hint="pass leaves=[...] naming the modules to keep whole",
        )
    return best


def _has_matmul_weights(mod: nn.Module) -> bool:
    # nn.Linear, and HF's Conv1D (GPT-2's transposed linear): a weight that is a 2-D matrix
    return any(
        isinstance(m, nn.Linear) or (type(m).__name__ == "Conv1D" and m.weight.dim() == 2)
        for m in mod.modules()
    )


def default_leaves(model: nn.Module) -> list[str]:
    """Merak's leaf granularity: each block's children that hold matrices (attention, MLP), and every
    module outside the blocks that holds parameters directly (embeddings, final norm, LM head).

    In-block norms stay glue: their few parameters travel with the graph, and the swap of a module
    whose input is also the residual is not supported by ``torch.export``.
    """
    blocks = find_blocks(model)
    leaves = [
        f"{blocks}.{i}.{child}"
        for i, block in enumerate(model.get_submodule(blocks))
        for child, mod in block.named_children()
        if _has_matmul_weights(mod)
    ]
    inside = f"{blocks}."
    for name, mod in model.named_modules():
        outside = name and not name.startswith(inside) and name != blocks
        if outside and any(p is not None for p in mod._parameters.values()):
            leaves.append(name)
    return leaves


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    executing = [ln.strip() for ln in text if ln.strip().startswith("While executing")]
    head = text[0] if text else type(err).__name__
    return f"{head} ({executing[0]})" if executing else head


def capture(
    model: nn.Module,
    input_shape: tuple[int, int],
    *,
    leaves: Sequence[str] | None = None,
    vocab_size: int | None = None,
) -> CapturedModel:
    """Capture ``model`` (a HF causal LM, on any device including meta) for inputs of ``input_shape``
    (micro-batch, sequence length). Raises :class:`CaptureError` naming what failed."""
    from torch.export._swap import _swap_modules  # private: pinned by torch<2.16, tested on capture

    batch, seq = input_shape
    if batch < 1 or seq < 1:
        raise CaptureError(f"input shape must be positive, got {input_shape}")
    config = getattr(model, "config", None)
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if isinstance(limit, int) and seq > limit:
        raise CaptureError(
            f"sequence length {seq} exceeds the model's {limit} positions", hint=f"use at most {limit}"
        )
    blocks = find_blocks(model)
    names = list(leaves) if leaves is not None else default_leaves(model)
    for name in names:
        try:
            model.get_submodule(name)
        except AttributeError:
            raise CaptureError(f"{type(model).__name__} has no module {name!r} to keep as a leaf") from None
    vocab = vocab_size or getattr(getattr(model, "config", None), "vocab_size", None) or 2
    device = next(model.parameters()).device
    ids = torch.randint(0, vocab, (batch, seq), device="cpu").to(device)
    wrapper = _LogitsOf(model)
    try:
        program = torch.export.export(
            wrapper, (ids,), strict=False, preserve_module_call_signature=tuple(PREFIX + n for n in names)
        )
        with warnings.catch_warnings():  # the swap's pytree specs are attached after this warning fires
            warnings.filterwarnings("ignore", message="Attempted to insert a get_attr Node")
            graph = _swap_modules(program, {PREFIX + n: wrapper.get_submodule(PREFIX + n) for n in names})
    except Exception as err:  # torch.export raises many types; the user needs the first line
        raise CaptureError(
            f"torch.export could not capture {type(model).__name__}: {_first_line(err)}",
            hint="pass leaves=[...] to keep the failing module whole, or fix the model's forward",
        ) from err
    try:
        nodes = profile_graph(graph, ids)
    except Exception as err:
        raise CaptureError(
            f"the captured graph of {type(model).__name__} does not run: {_first_line(err)}",
            hint="drop the module named there from leaves=[...]",
        ) from err
    return CapturedModel(
        model=model,
        graph=graph,
        leaves=tuple(names),
        blocks=blocks,
        input_shape=(batch, seq),
        nodes=nodes,
        program=program,
    )
