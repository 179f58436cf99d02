"""Mixed precision (``train.precision``): the forward in bf16 autocast, the numerically sensitive parts in fp32.

With ``precision="bf16"`` the training step's and the evaluation's forward run under
``torch.autocast(device_type, dtype=torch.bfloat16)``, the device type taken from the input. Autocast runs the
matrix products and convolutions (linear, bmm, conv, conv-transpose) in bf16; what else it does depends on the
device. On CPU it leaves softmax, LayerNorm, sums and element-wise ops in their input's dtype, so a softmax of
bf16 logits would be computed and returned in bf16 (measured: ``_softmax`` bf16 -> bf16); on CUDA softmax and
sums are promoted to fp32. slotlab therefore upcasts explicitly (:func:`fp32`) and turns autocast off
(:func:`full_precision`) where it matters, on both devices alike:

- the attention softmax over slots, the + eps, the renormalisation over the inputs and the weighted mean of the
  values (``SlotAttention.step``, ``InvariantSlotAttention``): bf16 has 8 significant bits, so + 1e-8 would
  vanish next to any attention value, and a weighted mean of N inputs in bf16 loses the small weights;
- the decoders' output before the mask softmax across slots and the recomposition (``models.py``), and the set
  predictor's logits before the sigmoid;
- the losses and all metrics: they read those fp32 outputs and are computed outside the autocast region.

What stays in bf16: the encoder's and decoders' convolutions, every Linear (k, v, q, the GRU's and MLPs'), the
logits product q k^T, LayerNorm on bf16 inputs (on CPU). The fp32 default is untouched: every helper here is a
no-op unless autocast is on. bf16 vs fp32 parity: tests/nn/test_precision.py, tolerances in docs/performance.md.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

PRECISIONS = ("fp32", "bf16")
_HALF = (torch.bfloat16, torch.float16)


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {PRECISIONS}, got {precision!r}")


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The context a forward runs in: bf16 autocast on ``device``'s type for "bf16", nothing for "fp32"."""
    check_precision(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def fp32(x: Tensor) -> Tensor:
    """``x`` in fp32 if autocast made it half precision; otherwise ``x`` itself (no copy, the default path)."""
    if x.dtype in _HALF and torch.is_autocast_enabled(x.device.type):
        return x.float()
    return x


def full_precision(x: Tensor) -> contextlib.AbstractContextManager:
    """Autocast off on ``x``'s device for the enclosed ops (which then run in their inputs' dtype, fp32 after
    :func:`fp32`); nothing at all when autocast is not on."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.autocast(x.device.type, enabled=False)
    return contextlib.nullcontext()
