"""An AlphaFold2-style Evoformer block (Jumper et al. 2021, Suppl. Alg. 6-14), with optional chunking.

MSA representation ``m`` is [S, N, c_m] (S sequences, N residues), pair representation ``z`` is
[N, N, c_z]. Attention uses ``F.scaled_dot_product_attention`` with the pair bias as a float mask;
``chunk_size`` splits every attention and transition over rows (exact: rows are independent).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from delta.models import ModelCase
from delta.toolkit import Checkpointed, chunk_map
from effcore.errors import ConfigError

__all__ = ["EvoformerBlock", "EvoformerConfig", "EvoformerStack", "evoformer_case"]


@dataclass(kw_only=True, slots=True)
class EvoformerConfig:
    """Widths as in AlphaFold2's Evoformer, scaled down by default (c_m=256, c_z=128 in the paper)."""

    c_m: int = 32
    c_z: int = 16
    heads: int = 4
    head_dim: int = 8
    c_opm: int = 8  # outer-product-mean hidden width
    transition: int = 4  # transition expansion factor
    sequences: int = 8  # S: MSA rows
    blocks: int = 2

    def __post_init__(self) -> None:
        for name in ("c_m", "c_z", "heads", "head_dim", "c_opm", "transition", "sequences", "blocks"):
            if getattr(self, name) < 1:
                raise ConfigError(f"EvoformerConfig.{name} must be at least 1, got {getattr(self, name)}")


class _GatedAttention(nn.Module):
    """Gated multi-head self-attention over the last-but-one dim of [B, L, c], with an optional [H, L, L] bias."""

    def __init__(self, c: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.norm = nn.LayerNorm(c)
        self.qkv = nn.Linear(c, 3 * heads * head_dim, bias=False)
        self.gate = nn.Linear(c, heads * head_dim)
        self.out = nn.Linear(heads * head_dim, c)

    def _rows(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        b, length, _ = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        mask = None if bias is None else bias.unsqueeze(0).expand(b, -1, -1, -1)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, L, d]
        o = o.transpose(1, 2).reshape(b, length, -1) * torch.sigmoid(self.gate(x))
        return self.out(o)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None, chunk_size: int | None = None):
        x = self.norm(x)
        return chunk_map(self._rows, {"x": x}, dim=0, chunk_size=chunk_size, bias=bias)


class _Transition(nn.Module):
    def __init__(self, c: int, factor: int) -> None:
        super().__init__()
        self.norm, self.up, self.down = nn.LayerNorm(c), nn.Linear(c, factor * c), nn.Linear(factor * c, c)

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.relu(self.up(self.norm(x))))

    def forward(self, x: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        return chunk_map(self._rows, {"x": x}, dim=0, chunk_size=chunk_size)


class _OuterProductMean(nn.Module):
    def __init__(self, c_m: int, c_z: int, c: int) -> None:
        super().__init__()
        self.norm, self.a, self.b = nn.LayerNorm(c_m), nn.Linear(c_m, c), nn.Linear(c_m, c)
        self.out = nn.Linear(c * c, c_z)

    def _rows(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # a: [S, n_i, c], b: [S, N, c] -> [n_i, N, c*c], mean over the S sequences
        outer = torch.einsum("sic,sjd->ijcd", a, b) / a.shape[0]
        return self.out(outer.flatten(-2))

    def forward(self, m: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        m = self.norm(m)
        return chunk_map(self._rows, {"a": self.a(m)}, dim=1, chunk_size=chunk_size, out_dim=0, b=self.b(m))


class _TriangleMultiplication(nn.Module):
    """Outgoing: z_ij += sum_k a_ik b_jk; incoming: z_ij += sum_k a_ki b_kj (gated, normalised)."""

    def __init__(self, c_z: int, outgoing: bool) -> None:
        super().__init__()
        self.outgoing = outgoing
        self.norm_in, self.norm_out = nn.LayerNorm(c_z), nn.LayerNorm(c_z)
        self.proj, self.gate = nn.Linear(c_z, 2 * c_z), nn.Linear(c_z, 2 * c_z)
        self.out, self.out_gate = nn.Linear(c_z, c_z), nn.Linear(c_z, c_z)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = self.norm_in(z)
        a, b = (self.proj(z) * torch.sigmoid(self.gate(z))).chunk(2, dim=-1)
        eq = "ikc,jkc->ijc" if self.outgoing else "kic,kjc->ijc"
        return torch.sigmoid(self.out_gate(z)) * self.out(self.norm_out(torch.einsum(eq, a, b)))


class _TriangleAttention(nn.Module):
    """Starting node: rows of z attend within the row, biased by z; ending node: the same on z transposed."""

    def __init__(self, c_z: int, heads: int, head_dim: int, starting: bool) -> None:
        super().__init__()
        self.starting = starting
        self.norm = nn.LayerNorm(c_z)
        self.bias = nn.Linear(c_z, heads, bias=False)
        self.attn = _GatedAttention(c_z, heads, head_dim)

    def forward(self, z: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        z = z if self.starting else z.transpose(0, 1)
        bias = self.bias(self.norm(z)).permute(2, 0, 1)  # [H, N, N]
        out = self.attn(z, bias, chunk_size)
        return out if self.starting else out.transpose(0, 1)


class EvoformerBlock(nn.Module):
    """One Evoformer block: MSA row attention with pair bias, column attention, transition, outer-product
    mean, triangle multiplicative updates (outgoing, incoming), triangle attention (start, end), pair transition."""

    def __init__(self, cfg: EvoformerConfig, chunk_size: int | None = None) -> None:
        super().__init__()
        self.chunk_size = chunk_size
        self.pair_norm = nn.LayerNorm(cfg.c_z)
        self.pair_bias = nn.Linear(cfg.c_z, cfg.heads, bias=False)
        self.row_attn = _GatedAttention(cfg.c_m, cfg.heads, cfg.head_dim)
        self.col_attn = _GatedAttention(cfg.c_m, cfg.heads, cfg.head_dim)
        self.msa_transition = _Transition(cfg.c_m, cfg.transition)
        self.opm = _OuterProductMean(cfg.c_m, cfg.c_z, cfg.c_opm)
        self.tri_out = _TriangleMultiplication(cfg.c_z, outgoing=True)
        self.tri_in = _TriangleMultiplication(cfg.c_z, outgoing=False)
        self.tri_start = _TriangleAttention(cfg.c_z, cfg.heads, cfg.head_dim, starting=True)
        self.tri_end = _TriangleAttention(cfg.c_z, cfg.heads, cfg.head_dim, starting=False)
        self.pair_transition = _Transition(cfg.c_z, cfg.transition)

    def forward(self, m: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.chunk_size
        bias = self.pair_bias(self.pair_norm(z)).permute(2, 0, 1)  # [H, N, N]
        m = m + self.row_attn(m, bias, c)
        m = m + self.col_attn(m.transpose(0, 1), None, c).transpose(0, 1)
        m = m + self.msa_transition(m, c)
        z = z + self.opm(m, c)
        z = z + self.tri_out(z)
        z = z + self.tri_in(z)
        z = z + self.tri_start(z, c)
        z = z + self.tri_end(z, c)
        z = z + self.pair_transition(z, c)
        return m, z


class EvoformerStack(nn.Module):
    """``cfg.blocks`` Evoformer blocks; ``chunk_size`` chunks them, ``checkpoint`` wraps each in
    ``torch.utils.checkpoint`` (with a :mod:`delta.toolkit` policy name)."""

    def __init__(self, cfg: EvoformerConfig, *, chunk_size: int | None = None, checkpoint: str | None = None,
                 seed: int = 0) -> None:  # fmt: skip
        super().__init__()
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            blocks = [EvoformerBlock(cfg, chunk_size) for _ in range(cfg.blocks)]
        finally:
            torch.random.set_rng_state(state)
        self.blocks = nn.ModuleList(Checkpointed(b, checkpoint) if checkpoint else b for b in blocks)
        self.cfg = cfg

    def forward(self, m: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for block in self.blocks:
            m, z = block(m, z)
        return m, z

    def inputs(self, residues: int, generator: torch.Generator, device: torch.device | None = None):
        """Random MSA and pair representations for ``residues`` residues."""
        cfg = self.cfg
        m = torch.randn(cfg.sequences, residues, cfg.c_m, generator=generator)
        z = torch.randn(residues, residues, cfg.c_z, generator=generator)
        return m.to(device or "cpu"), z.to(device or "cpu")


def evoformer_loss(model: nn.Module, m: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """A synthetic objective over both outputs (the benchmarks measure memory and time, not accuracy)."""
    m_out, z_out = model(m, z)
    return m_out.square().mean() + z_out.square().mean()


def evoformer_case(device: torch.device, cfg: EvoformerConfig | None = None, **kwargs) -> ModelCase:
    """The Evoformer stack as a :class:`ModelCase`: the batch size is the number of residues N."""
    stack = EvoformerStack(cfg or EvoformerConfig(), **kwargs).to(device)
    return ModelCase(name="evoformer", model=stack, unit="residues", loss=evoformer_loss,
                     make_batch=lambda n, g: stack.inputs(n, g, device))  # fmt: skip
