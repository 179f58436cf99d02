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

``precision="auto"`` (the CPU presets' default) is bf16 only where the hardware runs it natively and fp32
everywhere else (:func:`resolve_precision`): on a CPU without native bf16 (AVX2 only, say) PyTorch emulates bf16
products and a training step runs about 12x slower than in fp32 (docs/performance.md).
"""

from __future__ import annotations

import contextlib
import functools

import torch
from torch import Tensor

PRECISIONS = ("auto", "fp32", "bf16")
_HALF = (torch.bfloat16, torch.float16)
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 CPU flags (/proc/cpuinfo) of native bf16 arithmetic


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {PRECISIONS}, got {precision!r}")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (Linux); empty where that file is absent or unreadable."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def resolve_precision(precision: str, device: torch.device | str) -> tuple[str, str]:
    """``precision`` with "auto" made concrete for ``device``, and the reason, for the log: ("bf16" | "fp32", why).

    "auto" is bf16 on a CUDA GPU where ``torch.cuda.is_bf16_supported()`` and on a CPU with one of
    :data:`NATIVE_BF16_CPU_FLAGS`; fp32 everywhere else. "fp32" and "bf16" are returned as they are."""
    check_precision(precision)
    if precision != "auto":
        return precision, f"train.precision={precision} as configured"
    device = torch.device(device)
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "auto: this GPU supports bf16 (torch.cuda.is_bf16_supported)"
        return "fp32", "auto: this GPU does not support bf16"
    if device.type == "cpu":
        native = sorted(set(NATIVE_BF16_CPU_FLAGS) & cpu_flags())
        if native:
            return "bf16", f"auto: the CPU runs bf16 natively ({', '.join(native)})"
        return "fp32", (f"auto: the CPU has no native bf16 (none of {', '.join(NATIVE_BF16_CPU_FLAGS)}); emulated "
                        "bf16 would be several times slower than fp32")
    return "fp32", f"auto: fp32 on a {device.type} device"


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The context a forward runs in: bf16 autocast on ``device``'s type for "bf16", nothing for "fp32"; "auto" as
    :func:`resolve_precision` decides for ``device``."""
    precision, _ = resolve_precision(precision, device)
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
