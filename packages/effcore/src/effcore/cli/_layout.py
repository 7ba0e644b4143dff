"""``effcore layout``: what a layout costs per rank and what switching to another one moves."""

from __future__ import annotations

from typing import Annotated

import typer

from effcore.cli._common import OutOpt, console, int_list, render_table, write_out
from effcore.errors import ConfigError


def _pairs(text: str, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"{what} entry {item!r} is not NAME=VALUE", hint=f"e.g. {what} dp=2,tp=4")
        out[key.strip()] = value.strip()
    return out


def layout(
    dims: Annotated[str, typer.Option(help="Tensor dim names, comma-separated.")] = "batch,seq,hidden",
    shape: Annotated[
        str, typer.Option(help="Tensor shape, comma-separated, one size per dim.")
    ] = "8,4096,4096",
    mesh: Annotated[str, typer.Option(help="Device mesh as NAME=SIZE pairs, e.g. dp=2,tp=4.")] = "dp=2,tp=4",
    shard: Annotated[
        str, typer.Option(help="Source layout: MESH_DIM=TENSOR_DIM pairs; unnamed dims replicate.")
    ] = "",
    partial: Annotated[
        str, typer.Option(help="Source mesh dims holding partial sums, comma-separated.")
    ] = "",
    to: Annotated[
        str | None, typer.Option(help="Target layout MESH_DIM=TENSOR_DIM pairs ('' = replicate everywhere).")
    ] = None,
    dtype: Annotated[str, typer.Option(help="Element type: float32, bfloat16, float16, ...")] = "bfloat16",
    device_type: Annotated[
        str, typer.Option(help="'cuda' (all-to-all available) or 'cpu' (DTensor replaces it by all-gather).")
    ] = "cuda",
    out: OutOpt = None,
) -> None:
    """Bytes per rank of a layout and, with --to, the collectives DTensor runs to switch layouts.

    Example: the Megatron sequence-parallel -> tensor-parallel switch of an activation:
    [bold]effcore layout --mesh tp=4 --shard tp=seq --to tp=hidden[/]
    """
    import torch

    from effcore.layout import TensorLayout, redistribute_plan

    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ConfigError(f"unknown dtype {dtype!r}", hint="use float32, bfloat16 or float16")
    if device_type not in {"cuda", "cpu"}:
        raise ConfigError(f"--device-type must be 'cuda' or 'cpu', got {device_type!r}")
    names = tuple(d.strip() for d in dims.split(","))
    mesh_sizes = {k: int(v) for k, v in _pairs(mesh, "--mesh").items() if v.isdigit()}
    if len(mesh_sizes) != len(_pairs(mesh, "--mesh")):
        raise ConfigError(f"--mesh {mesh!r} needs integer sizes", hint="e.g. --mesh dp=2,tp=4")
    common = dict(dims=names, shape=tuple(int_list(shape, "--shape")), mesh=mesh_sizes, dtype=torch_dtype)
    partial_dims = [p.strip() for p in partial.split(",") if p.strip()]
    src = TensorLayout.build(**common, shard=_pairs(shard, "--shard"), partial=partial_dims)
    layouts = [("source", src)]
    if to is not None:
        layouts.append(("target", TensorLayout.build(**common, shard=_pairs(to, "--to"))))
    rows = [
        {
            "layout": role,
            "placements": str(lay).rsplit(" as ", 1)[-1],
            "local shape": "x".join(map(str, lay.local_shape())),
            "MiB per rank": lay.bytes_per_rank() / 2**20,
            "replication": lay.replication_factor(),
        }
        for role, lay in layouts
    ]
    console.print(render_table("layouts", rows))
    payload: dict = {"layouts": rows}
    if to is not None:
        steps = redistribute_plan(src, layouts[1][1], device_type=device_type)
        plan = [
            {
                "step": i,
                "collective": s.collective,
                "mesh dim": s.mesh_dim,
                "group": s.group_size,
                "MiB sent per rank": s.bytes_per_rank / 2**20,
            }
            for i, s in enumerate(steps)
        ]
        console.print(render_table(f"redistribution plan ({device_type})", plan))
        total = sum(s.bytes_per_rank for s in steps)
        console.print(f"total sent per rank: {total / 2**20:.2f} MiB")
        payload |= {"plan": plan, "bytes_per_rank": total}
    write_out(out, payload, rows=rows)
