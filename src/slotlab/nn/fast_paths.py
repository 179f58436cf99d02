"""Exact fast paths of the autoencoder's convolutional parts, and one switch for every fast path.

- :func:`broadcast_gather`: the fast decoder stem's last step, written straight into channels-last (NHWC) memory,
  with a backward that is one small GEMM instead of a scatter-add over every pixel.
- :func:`recompose`: the alpha masks (softmax over the K slots of the mask logits) and the recomposed image
  sum_k masks_k * rgb_k in one autograd node: the backward writes the gradient of the decoder's (B, K, 4, H, W)
  output in that output's own memory layout, instead of two zero-filled slice gradients added together.
- :func:`set_fast_paths`: every exact fast path on or off (off = the plain formulation, the parity reference).

None of these changes the mathematics; outputs agree with the plain path to fp32 rounding (tests/nn/test_fast_paths.py).
Glossary: B batch, K slots, C channels, H, W image size, P = H * W pixels, R pixel classes of the stem.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

# The attributes that switch an exact fast path, by module: SlotAttention.fast, BroadcastDecoder.fast_stem,
# Encoder / BroadcastDecoder.channels_last, SlotAttentionAutoEncoder.fused_recompose.
FAST_SWITCHES = ("fast", "fast_stem", "channels_last", "fused_recompose")


def set_fast_paths(model: nn.Module, enabled: bool) -> nn.Module:
    """Turn every exact fast path of ``model`` (and its submodules) on or off; off is the plain formulation."""
    for module in model.modules():
        for name in FAST_SWITCHES:
            if isinstance(getattr(module, name, None), bool):
                setattr(module, name, enabled)
    return model


class _BroadcastGather(torch.autograd.Function):
    """out[b, :, y, x] = per_class[b, pixel_class[y * W + x]] + pos[:, y, x], in channels-last memory."""

    @staticmethod
    def forward(ctx, per_class: Tensor, pos: Tensor, pixel_class: Tensor, one_hot: Tensor,
                size: tuple[int, int]) -> Tensor:
        BK, _, C = per_class.shape
        out = torch.empty(BK, C, *size, dtype=per_class.dtype, device=per_class.device,
                          memory_format=torch.channels_last)
        flat = out.permute(0, 2, 3, 1).view(BK, -1, C)  # (B*K, P, C), a view of out's NHWC memory
        torch.index_select(per_class, 1, pixel_class, out=flat)
        flat.add_(pos.permute(0, 2, 3, 1).reshape(1, -1, C))  # + (1, P, C)
        ctx.save_for_backward(one_hot)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        (one_hot,) = ctx.saved_tensors  # (P, R)
        BK, C, H, W = grad.shape
        flat = grad.permute(0, 2, 3, 1).reshape(BK, H * W, C)  # (B*K, P, C), a view when grad is NHWC
        grad_per_class = torch.matmul(one_hot.t().to(grad.dtype), flat)  # (B*K, R, C): sum over each class
        grad_pos = flat.sum(0).t().reshape(1, C, H, W)  # (1, C, H, W)
        return grad_per_class, grad_pos, None, None, None


def broadcast_gather(per_class: Tensor, pos: Tensor, pixel_class: Tensor, one_hot: Tensor) -> Tensor:
    """Per-class vectors (B*K, R, C) + a shared map pos (1, C, H, W) -> (B*K, C, H, W) in NHWC memory.

    ``pixel_class`` (P,) gives each pixel's class, ``one_hot`` (P, R) the same as a matrix (used by the backward).
    """
    return _BroadcastGather.apply(per_class, pos, pixel_class, one_hot, tuple(pos.shape[-2:]))


class _Recompose(torch.autograd.Function):
    @staticmethod
    def forward(ctx, out: Tensor) -> tuple[Tensor, Tensor]:
        rgb, logits = out[:, :, :3], out[:, :, 3:]  # (B, K, 3, H, W), (B, K, 1, H, W): views
        masks = torch.softmax(logits, dim=1)  # (B, K, 1, H, W)
        recon = (rgb * masks).sum(dim=1)  # (B, 3, H, W)
        ctx.save_for_backward(out, masks)
        return recon, masks

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_recon: Tensor | None, grad_masks: Tensor | None) -> Tensor:
        out, masks = ctx.saved_tensors
        grad = torch.empty_like(out)  # the decoder output's strides, so its conv's backward needs no reorder
        if grad_recon is None:
            grad[:, :, :3] = 0
            dm = torch.zeros_like(masks)
        else:
            g = grad_recon.unsqueeze(1)  # (B, 1, 3, H, W)
            torch.mul(g, masks, out=grad[:, :, :3])  # d rgb_k = g * masks_k
            dm = (out[:, :, :3] * g).sum(dim=2, keepdim=True)  # (B, K, 1, H, W): d loss / d masks_k
        if grad_masks is not None:
            dm = dm + grad_masks
        # softmax backward over K: d logits_k = masks_k * (dm_k - sum_j masks_j dm_j)
        torch.mul(masks, dm - (dm * masks).sum(dim=1, keepdim=True), out=grad[:, :, 3:])
        return grad


def recompose(out: Tensor) -> tuple[Tensor, Tensor]:
    """Decoder output (B, K, 4, H, W) (RGB and mask logit per slot) -> recon (B, 3, H, W), masks (B, K, 1, H, W).

    masks = softmax over K of the logits; recon = sum_k masks_k * rgb_k. Exactly the paper's recomposition.
    """
    return _Recompose.apply(out)
