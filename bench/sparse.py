"""Sparse execution of gated convolutions at inference: compute only the channels the gates keep open.

A gated model's `forward` always runs densely and multiplies by its gates (the MAC counters need that).
Its `forward_sparse` (inference only) instead reads the gates first and, per sample,
- runs a gated convolution over its active OUTPUT channels only (the weight rows of the open gates),
- runs the next convolution over those channels as its INPUT channels only (the weight columns),
- skips a residual branch whose block gate is closed.
The result equals the masked dense forward to floating-point tolerance (tests/test_sparse.py).

Every conv of a sparse path is followed by its eval-mode BatchNorm, which is folded into the conv's
weight and bias once (`fold`), so slicing a conv slices its BN too: one `index_select` per sliced side
and one `conv2d` per conv. The folded parameters are cached on the model (`sparse_cache`) by
`prepare(model)`; call it again after changing the weights (a forward_sparse builds it when missing, and
again when the model has moved to another device or dtype).
Folding is also a speed-up of its own, independent of sparsity: `bench perf gated` therefore also times
the sparse path with every gate open, to separate the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class FoldedConv:
    """A conv (groups = 1) with the eval-mode BatchNorm that follows it folded into weight and bias."""

    weight: Tensor  # [out, in, kh, kw]
    bias: Tensor  # [out]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        kh, kw = self.weight.shape[2:]
        return tuple(
            (s + 2 * p - d * (k - 1) - 1) // st + 1
            for s, p, d, k, st in zip((h, w), self.padding, self.dilation, (kh, kw), self.stride, strict=True)
        )


@torch.no_grad()
def fold(conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None) -> FoldedConv:
    """`bn(conv(x))` in eval mode as one conv: w' = w · γ/σ, b' = β + (b − μ) · γ/σ."""
    if conv.groups != 1:
        raise ValueError("sparse execution supports ungrouped convolutions only")
    if isinstance(conv.padding, str):
        raise ValueError("sparse execution needs numeric conv padding")
    weight = conv.weight.detach().clone()
    bias = conv.bias.detach().clone() if conv.bias is not None else weight.new_zeros(weight.shape[0])
    if bn is not None:
        scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        weight = weight * scale[:, None, None, None]
        bias = bn.bias.detach() + (bias - bn.running_mean) * scale
    return FoldedConv(
        weight.contiguous(), bias.contiguous(), tuple(conv.stride), tuple(conv.padding), tuple(conv.dilation)
    )


def fold_block(block: nn.Module, n: int) -> dict[str, FoldedConv]:
    """`conv1`..`conv{n}` of a residual block, each with its `bn{k}` folded in."""
    return {f"conv{k}": fold(getattr(block, f"conv{k}"), getattr(block, f"bn{k}")) for k in range(1, n + 1)}


def active(gate: Tensor | None) -> Tensor | None:
    """Indices of the open gates of one sample's gate row [channels]; None when every gate is open."""
    if gate is None:
        return None
    idx = gate.nonzero().flatten()
    return None if idx.numel() == gate.numel() else idx


def conv(f: FoldedConv, x: Tensor, out_idx: Tensor | None = None, in_idx: Tensor | None = None) -> Tensor:
    """The folded conv over output channels `out_idx` of input `x`, whose channels are `in_idx` of the
    conv's input (None: all). Returns [batch, len(out_idx), H', W']."""
    weight, bias = f.weight, f.bias
    if out_idx is not None:
        weight, bias = weight.index_select(0, out_idx), bias.index_select(0, out_idx)
    if in_idx is not None:
        if in_idx.numel() == 0:  # every input channel is zero: the output is the bias alone
            h, w = f.out_size(*x.shape[2:])
            return bias.view(1, -1, 1, 1).expand(x.shape[0], -1, h, w).contiguous()
        weight = weight.index_select(1, in_idx)
    if weight.shape[0] == 0:
        return x.new_zeros(x.shape[0], 0, *f.out_size(*x.shape[2:]))
    return F.conv2d(x, weight, bias, f.stride, f.padding, f.dilation)


def scatter_add(base: Tensor, idx: Tensor | None, values: Tensor) -> Tensor:
    """`base` with `values` added at channels `idx` (None: at every channel)."""
    if idx is None:
        return base + values
    return base.index_add(1, idx, values)


def per_sample(model: nn.Module, x: Tensor, one) -> Tensor:
    """Run `one(x_i, folded)` (a batch-1 sparse forward of the eval-mode `model`, with its folded
    parameters) for every sample and stack the outputs."""
    check_inference(model)
    folded = cache_of(model)
    if x.shape[0] == 1:
        return one(x, folded)
    return torch.cat([one(x[i : i + 1], folded) for i in range(x.shape[0])])


def forward_blocks(model: nn.Module, x: Tensor, before=None) -> Tensor:
    """Sparse inference of a ResNet of this repository's skeletons (`baselines`), one sample at a time:
    `before(x)` if given (GaterNet: its gater hands the blocks their gates), the stem, each block's
    `forward_sparse` with its folded parameters, then the head."""

    def one(x: Tensor, folded: dict) -> Tensor:
        if before is not None:
            before(x)
        x = model.forward_stem(x)
        for stage in model.stages():
            for block in stage:
                x = block.forward_sparse(x, folded[id(block)])
        return model.forward_head(x)

    return per_sample(model, x, one)


def _placement(model: nn.Module) -> tuple[torch.device, torch.dtype] | None:
    """The device and dtype of the model's first parameter: where its folded copies must live."""
    for p in model.parameters():
        return p.device, p.dtype
    return None


def prepare(model: nn.Module) -> dict:
    """Fold and cache the parameters of `model`'s sparse path: each block's `sparse_parameters()`, by
    the block's id (on the model's device and in its dtype, as they are now)."""
    cache = {id(m): m.sparse_parameters() for m in model.modules() if hasattr(m, "sparse_parameters")}
    model.sparse_cache = cache
    model.sparse_cache_placement = _placement(model)
    return cache


def cache_of(model: nn.Module) -> dict:
    """The folded parameters; folded again when missing or when the model has moved to another device or
    dtype since (`model.to("cuda")` after `prepare` would leave the cache on the CPU)."""
    cache = getattr(model, "sparse_cache", None)
    if cache is None or getattr(model, "sparse_cache_placement", None) != _placement(model):
        return prepare(model)
    return cache


def check_inference(model: nn.Module) -> None:
    if model.training:
        raise RuntimeError("forward_sparse is an inference path: call model.eval() first")
