"""An EML block's tail in one pass: two-branch BN, LeakyReLU and Gaussian dropout on interleaved floats.

The reference layers (:class:`~tfdmnet.layers.FreqBatchNorm`, :class:`~tfdmnet.layers.FreqLeakyReLU`,
:class:`~tfdmnet.layers.FreqDropout`) each split a spectrum into strided real and imaginary views,
work on each and rebuild a complex tensor: six passes over strided memory, each allocating. Here the
spectrum is read once as ``(N, C, H, W', 2)`` floats (``view_as_real``, no copy); BN becomes one
per-(channel, part) affine map, LeakyReLU runs in place on its output, and the dropout noise (the
reference's two draws, in the reference's order) multiplies it. Same function, same running-statistics
updates, same random numbers: :class:`FreqBlock` uses it unless ``fused=False`` (tests compare both).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tfdmnet.layers import FreqBatchNorm, FreqDropout, FreqLeakyReLU

__all__ = ["FreqBlock", "freq_bn_act_dropout"]


def _fusable(bn: FreqBatchNorm, act: nn.Module | None, drop: nn.Module | None) -> bool:
    branches = (bn.bn_re, bn.bn_im)
    return (
        all(b.affine and b.track_running_stats for b in branches)
        and (act is None or type(act) is FreqLeakyReLU)
        and (drop is None or (type(drop) is FreqDropout and drop.mode == "gaussian" and not drop.relu_noise))
    )


def _update_running(bn: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor, n: int) -> float:
    # BatchNorm2d's own update: running = (1 - m) running + m batch, with the unbiased batch variance;
    # momentum None is the cumulative average.
    bn.num_batches_tracked.add_(1)
    m = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    bn.running_mean.mul_(1 - m).add_(mean, alpha=m)
    bn.running_var.mul_(1 - m).add_(var * (n / (n - 1)), alpha=m)
    return m


def freq_bn_act_dropout(
    x: torch.Tensor, bn: FreqBatchNorm, act: FreqLeakyReLU | None = None, drop: FreqDropout | None = None
) -> torch.Tensor:
    """``drop(act(bn(x)))`` for a complex ``(N, C, H, W')`` spectrum, in one pass over its floats.

    Falls back to the three modules one after another where the fused form does not apply (a BN
    without affine or running statistics, another nonlinearity, exact dropout, ``relu_noise``, or a
    single value per channel, where ``BatchNorm2d`` raises its own error).
    """
    n = x.shape[0] * x.shape[2] * x.shape[3]
    if not _fusable(bn, act, drop) or (bn.training and n < 2):
        for module in (bn, act, drop):
            x = module(x) if module is not None else x
        return x
    xr = torch.view_as_real(x.contiguous())  # (N, C, H, W', 2): real and imaginary parts side by side
    re, im = bn.bn_re, bn.bn_im
    weight = torch.stack([re.weight, im.weight], -1)
    bias = torch.stack([re.bias, im.bias], -1)
    if bn.training:
        var, mean = torch.var_mean(xr, dim=(0, 2, 3), correction=0)  # (C, 2)
        with torch.no_grad():
            _update_running(re, mean[:, 0], var[:, 0], n)
            _update_running(im, mean[:, 1], var[:, 1], n)
    else:
        mean = torch.stack([re.running_mean, im.running_mean], -1)
        var = torch.stack([re.running_var, im.running_var], -1)
    eps = torch.tensor([re.eps, im.eps], dtype=xr.dtype, device=xr.device)
    scale = weight * torch.rsqrt(var + eps)
    shift = bias - mean * scale
    y = torch.addcmul(shift[:, None, None, :], xr, scale[:, None, None, :])
    if act is not None:
        # In place: addcmul's backward needs its inputs, not its output.
        y = F.leaky_relu(y, act.negative_slope, inplace=True)
    if drop is not None and drop.training and drop.p:
        # The reference's draws, in its order: the real part's noise, then the imaginary part's, each
        # laid out contiguously as for the contiguous map LeakyReLU hands the reference dropout (the
        # EML's output is a permuted view, and randn_like would follow its strides).
        plane = {"dtype": xr.dtype, "device": xr.device}
        noise = torch.stack([torch.randn(x.shape, **plane), torch.randn(x.shape, **plane)], -1)
        y = y * noise.mul_(drop.p / 2).add_(1)
    return torch.view_as_complex(y)


class FreqBlock(nn.Sequential):
    """``EML -> FreqBatchNorm -> nonlinearity (-> FreqDropout)``: an ``nn.Sequential`` (same children,
    same state dict) whose tail runs fused by :func:`freq_bn_act_dropout`; ``fused=False`` runs the
    reference layers one by one."""

    def __init__(self, *modules: nn.Module, fused: bool = True) -> None:
        super().__init__(*modules)
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fused or len(self) < 2 or not isinstance(self[1], FreqBatchNorm):
            return super().forward(x)
        rest = list(self)[2:]
        act = rest.pop(0) if rest and not isinstance(rest[0], FreqDropout) else None
        drop = rest.pop(0) if rest else None
        return freq_bn_act_dropout(self[0](x), self[1], act, drop)

    def extra_repr(self) -> str:
        return f"fused={self.fused}"
