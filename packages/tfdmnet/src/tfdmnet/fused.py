"""An EML block's tail in one pass: two-branch BN, LeakyReLU and Gaussian dropout on interleaved floats.

The reference layers (:class:`~tfdmnet.layers.FreqBatchNorm`, :class:`~tfdmnet.layers.FreqLeakyReLU`,
:class:`~tfdmnet.layers.FreqDropout`) each split a spectrum into strided real and imaginary views,
work on each and rebuild a complex tensor: six passes over strided memory, each allocating. Here the
spectrum is read as its (re, im) floats (``view_as_real``, no copy; in the EML's frequency-major memory
order when it comes from an EML, so nothing is transposed); BN becomes one
per-(channel, part) affine map, LeakyReLU runs in place on its output, and the dropout noise (the
reference's two draws, in the reference's order) multiplies it. Same function, same running-statistics
updates, same random numbers: :class:`FreqBlock` uses it unless ``fused=False`` (tests compare both).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tfdmnet.layers import FreqBatchNorm, FreqDropout, FreqLeakyReLU

__all__ = ["FreqBNActDropoutFunction", "FreqBlock", "freq_bn_act_dropout"]


def _fusable(bn: FreqBatchNorm, act: nn.Module | None, drop: nn.Module | None) -> bool:
    branches = (bn.bn_re, bn.bn_im)
    return (
        all(b.affine and b.track_running_stats for b in branches)
        and (act is None or type(act) is FreqLeakyReLU)
        and (drop is None or (type(drop) is FreqDropout and drop.mode == "gaussian" and not drop.relu_noise))
    )


def _update_running(bn: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor, n: int) -> None:
    # BatchNorm2d's own update: running = (1 - m) running + m batch, with the unbiased batch variance;
    # momentum None is the cumulative average.
    bn.num_batches_tracked.add_(1)
    m = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    bn.running_mean.mul_(1 - m).add_(mean, alpha=m)
    bn.running_var.mul_(1 - m).add_(var * (n / (n - 1)), alpha=m)


def _wide(v: torch.Tensor, hw: int) -> torch.Tensor:
    # (C, 2) per-(channel, part) values -> the (C, HW * 2) pattern of an interleaved map's rows (hw = 1
    # for frequency-major rows: (C, 2) itself), so a broadcast runs over the leading rows only:
    # broadcasting (C, 1, 1, 2) over an innermost dim of 2 was 14x slower on CPU (10.6 vs 0.75 ms for
    # 256 x 16 x 14 x 14 complex, a one-off measurement).
    return v[:, None, :].expand(v.shape[0], hw, 2).reshape(v.shape[0], hw * 2)


def _per_part_sum(t: torch.Tensor, hw: int) -> torch.Tensor:
    # (rows, C, HW * 2) -> (C, 2) sums; two plain reductions (sum over dims (0, 2, 3) at once, or
    # var_mean, take 1.4x and 35x as long here).
    return t.reshape(t.shape[0], t.shape[1], hw, 2).sum(2).sum(0)


class FreqBNActDropoutFunction(torch.autograd.Function):
    """Training-mode two-branch BN (batch statistics), LeakyReLU and a dropout multiplier on
    interleaved ``(rows, C, HW * 2)`` floats (``HW = 1`` for frequency-major rows), with BatchNorm's analytic backward (two reductions and one
    pass) instead of autograd through every broadcast. Returns ``(y, mean, var)``, statistics ``(C, 2)``."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, slope, noise):
        n_all = x.shape[0] * x.shape[2] // 2
        hw = x.shape[2] // 2
        mean = _per_part_sum(x, hw) / n_all
        xhat = x - _wide(mean, hw)
        var = _per_part_sum(xhat * xhat, hw) / n_all
        invstd = torch.rsqrt(var + eps)
        xhat.mul_(_wide(invstd, hw))
        y = torch.addcmul(_wide(bias, hw), xhat, _wide(weight, hw))
        if slope is not None:
            F.leaky_relu(y, slope, inplace=True)
        act = y
        if noise is not None:
            y = y * noise
        ctx.save_for_backward(xhat, weight, invstd, act if slope is not None else None, noise)
        ctx.slope, ctx.hw = slope, hw
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, grad, _gmean, _gvar):
        xhat, weight, invstd, act, noise = ctx.saved_tensors
        hw = ctx.hw
        g = grad * noise if noise is not None else grad.clone()
        if act is not None:
            # LeakyReLU's own backward from its output (torch.where here is 20x slower on CPU).
            g = torch.ops.aten.leaky_relu_backward(g, act, ctx.slope, True)
        n_all = g.shape[0] * hw
        gbias = _per_part_sum(g, hw)
        gweight = _per_part_sum(g * xhat, hw)
        gx = None
        if ctx.needs_input_grad[0]:
            # dx = w / sigma * (g - mean(g) - xhat * mean(g * xhat)), per (channel, part).
            gx = torch.addcmul(g - _wide(gbias / n_all, hw), xhat, _wide(-gweight / n_all, hw))
            gx.mul_(_wide(weight * invstd, hw))
        return gx, gweight, gbias, None, None, None


def freq_bn_act_dropout(
    x: torch.Tensor, bn: FreqBatchNorm, act: FreqLeakyReLU | None = None, drop: FreqDropout | None = None
) -> torch.Tensor:
    """``drop(act(bn(x)))`` for a complex ``(N, C, H, W')`` spectrum, in one pass over its floats.

    Falls back to the three modules one after another where the fused form does not apply (a BN
    without affine or running statistics, another nonlinearity, exact dropout, ``relu_noise``, or a
    single value per channel, where ``BatchNorm2d`` raises its own error).
    """
    n, c, h, wf = x.shape
    if not _fusable(bn, act, drop) or (bn.training and n * h * wf < 2):
        for module in (bn, act, drop):
            x = module(x) if module is not None else x
        return x
    # Two layouts, no transpose: the EML hands over a frequency-major view (the (H, W', N, C) memory
    # of its batched GEMM), read as (H W' N, C, 2) rows with the per-channel pattern innermost, which the
    # next EML reads back without a copy; any other map is made contiguous, read as (N, C, H W' 2).
    x = x.resolve_conj()  # the authors' convention hands over a lazily conjugated view
    freq_major = x.permute(2, 3, 0, 1).is_contiguous()
    if freq_major:
        hw, x3 = 1, torch.view_as_real(x.permute(2, 3, 0, 1)).reshape(h * wf * n, c, 2)
    else:
        hw, x3 = h * wf, torch.view_as_real(x.contiguous()).reshape(n, c, h * wf * 2)
    re, im = bn.bn_re, bn.bn_im
    weight = torch.stack([re.weight, im.weight], -1)
    bias = torch.stack([re.bias, im.bias], -1)
    eps = torch.tensor([re.eps, im.eps], dtype=x3.dtype, device=x3.device)
    slope = act.negative_slope if act is not None else None
    noise = None
    if drop is not None and drop.training and drop.p:
        # The reference's draws, in its order: the real part's noise, then the imaginary part's, each
        # laid out contiguously as for the contiguous map LeakyReLU hands the reference dropout (the
        # EML's output is a permuted view, and randn_like would follow its strides).
        plane = {"dtype": x3.dtype, "device": x3.device}
        noise = torch.stack([torch.randn(x.shape, **plane), torch.randn(x.shape, **plane)], -1)
        if freq_major:
            noise = noise.permute(2, 3, 0, 1, 4).contiguous()
        noise = noise.reshape(x3.shape).mul_(drop.p / 2).add_(1)
    if bn.training:
        y, mean, var = FreqBNActDropoutFunction.apply(x3, weight, bias, eps, slope, noise)
        with torch.no_grad():
            _update_running(re, mean[:, 0], var[:, 0], n * h * wf)
            _update_running(im, mean[:, 1], var[:, 1], n * h * wf)
    else:
        mean = torch.stack([re.running_mean, im.running_mean], -1)
        var = torch.stack([re.running_var, im.running_var], -1)
        scale = weight * torch.rsqrt(var + eps)
        # In place after addcmul: its backward needs its inputs, not its output.
        y = torch.addcmul(_wide(bias - mean * scale, hw), x3, _wide(scale, hw))
        if slope is not None:
            y = F.leaky_relu(y, slope, inplace=True)
        if noise is not None:
            y = y * noise
    if freq_major:
        return torch.view_as_complex(y.reshape(h, wf, n, c, 2)).permute(2, 3, 0, 1)
    return torch.view_as_complex(y.reshape(n, c, h, wf, 2))


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
