"""Merak's graph sharding: shards are contiguous, cover every node, and no skip connection crosses a cut."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from effcore.testing.tiny import tiny_model
from merak.capture import capture
from merak.shard import _tracked, floating_nodes, program_order, shard_graph

_CAPTURED: dict = {}


def _captured(family: str, layers: int):
    key = (family, layers)
    if key not in _CAPTURED:
        _CAPTURED[key] = capture(tiny_model(family, num_hidden_layers=layers), (1, 8))
    return _CAPTURED[key]


@given(
    family=st.sampled_from(["llama", "gpt2"]),
    layers=st.integers(1, 4),
    count=st.integers(1, 12),
    close_at=st.sampled_from(["clean", "farthest"]),
)
def test_shards_cover_the_graph_in_order_and_no_skip_crosses_a_cut(family, layers, count, close_at):
    captured = _captured(family, layers)
    shards = shard_graph(captured, count, close_at=close_at)
    order = [n.name for n in program_order(captured.graph)]
    assert [name for s in shards for name in s.nodes] == order, "contiguous, in program order, each once"
    home = {name: s.index for s in shards for name in s.nodes}
    last = {s.index: s.nodes[-1] for s in shards}
    differentiable = {r.name: r.differentiable for r in captured.nodes}
    for node in program_order(captured.graph):
        for arg in node.all_input_nodes:
            if arg.name not in home or _tracked(arg, differentiable, 5):
                continue
            gap = home[node.name] - home[arg.name]
            # a value read in a later shard must be the output that closed its own shard, one shard back
            assert gap == 0 or (gap == 1 and last[home[arg.name]] == arg.name), (node.name, arg.name)


def test_every_leaf_is_in_one_shard_and_every_weight_is_counted_where_it_is_used():
    captured = _captured("llama", 4)
    shards = shard_graph(captured)
    assert sorted(leaf for s in shards for leaf in s.leaves) == sorted(captured.leaves)
    floating = {n.name for n in floating_nodes(captured.graph)}
    assert sum(s.param_bytes for s in shards) == sum(
        r.param_bytes for r in captured.nodes if r.name not in floating
    )
    tied = capture(tiny_model("llama", num_hidden_layers=4, tie_word_embeddings=True), (1, 8))
    shards = shard_graph(tied)
    embedding = 128 * 64 * 4
    # the first shard's embedding and the last shard's head are one weight, held by both stages
    assert shards[0].param_bytes >= embedding and shards[-1].param_bytes >= embedding
    floating = {n.name for n in floating_nodes(tied.graph)}
    assert sum(s.param_bytes for s in shards) == embedding + sum(
        r.param_bytes for r in tied.nodes if r.name not in floating
    )


def test_a_four_layer_model_splits_between_blocks():
    shards = shard_graph(_captured("llama", 4))
    blocks = [sorted({leaf.split(".")[2] for leaf in s.leaves if ".layers." in leaf}) for s in shards]
    assert all(len(b) <= 1 for b in blocks[1:-1]), blocks  # inner shards hold one block each
    assert len(shards) >= 4


def test_bad_arguments_are_errors():
    from effcore.errors import ConfigError

    with pytest.raises(ConfigError, match="shard_count"):
        shard_graph(_captured("llama", 1), 0)
    with pytest.raises(ConfigError, match="close_at"):
        shard_graph(_captured("llama", 1), close_at="nearest")
