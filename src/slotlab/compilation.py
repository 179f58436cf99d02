"""``train.compile``: torch.compile the model's convolutional parts, with a clean fallback to eager.

What is compiled: the ``encoder``, the ``decoder`` and the set predictor's ``head``, each on its own (dynamo traces
each as one graph, no graph break), and on a GPU also Slot Attention. On the CPU Slot Attention stays eager: its
fast path is a ``torch.autograd.Function`` whose forward records small autograd graphs from detached leaves and
whose backward calls ``torch.autograd.grad``; dynamo breaks the graph there six times (``torch._dynamo.explain``),
and the plain path, which compiles, is slower compiled than the fast path is eager on the CPU
(docs/performance.md). On CUDA the balance flips (the iterations are many small kernels that inductor fuses), so
there Slot Attention is compiled with its plain path (``fast = False``; same mathematics). The model's own forward
(mask softmax, recomposition) stays eager.

Each compiled part replaces the module's ``forward`` attribute, so parameter names, ``state_dict`` and checkpoints
are unchanged. Compilation is lazy: it happens on the first call, again for a new input shape or grad mode, and the
backward's on the first backward. If it fails (no C++ compiler for inductor, an unsupported op), one warning is
logged and every compiled part runs eagerly from then on. :func:`compile_model` takes a warm-up step (one forward
and backward, RNG forked, gradients cleared) so that a failure in the backward's compilation also falls back there,
not in the training loop. Compiled and eager agree to fp32 rounding (tests/test_compilation.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

COMPILED_PARTS = ("encoder", "decoder", "head")


class CompiledParts:
    """The compiled parts of one model, which fall back to eager together, with a single warning."""

    def __init__(self) -> None:
        self.failed = False
        self.names: list[str] = []
        self.restore: tuple | None = None  # (slot attention, its fast flag) to put back when falling back

    def fall_back(self, where: str, err: BaseException) -> None:
        if not self.failed:
            first_line = (str(err).strip().splitlines() or [""])[0][:200]
            log.warning("torch.compile failed in %s (%s: %s); running the model eagerly", where,
                        type(err).__name__, first_line)
        self.failed = True
        if self.restore is not None:  # eager again: Slot Attention's own (fast) path
            module, fast = self.restore
            module.fast = fast


class CompiledForward:
    """A module's forward through ``torch.compile``; eager once any part of the group has failed to compile."""

    def __init__(self, module: nn.Module, name: str, group: CompiledParts, mode: str = "default") -> None:
        self.name, self.group = name, group
        self.eager = module.forward
        self.compiled = None
        try:
            self.compiled = torch.compile(self.eager, mode=mode)
        except Exception as err:  # e.g. torch.compile unsupported on this Python or platform
            group.fall_back(name, err)

    def __call__(self, *args, **kwargs):
        if self.group.failed or self.compiled is None:
            return self.eager(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as err:
            out = self.eager(*args, **kwargs)  # an error of the input itself is raised here, as without compile
            self.group.fall_back(self.name, err)
            return out


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_model(model: nn.Module, warmup: Callable[[], Tensor] | None = None,
                  attention: bool | None = None, mode: str = "default") -> CompiledParts:
    """Compile ``model``'s encoder, decoder and head in place (those it has), and its ``slot_attention`` when
    ``attention`` is true (default: when the model is on a GPU), with the plain path; return the group
    (``.names``, ``.failed``). ``mode`` is torch.compile's (``train.compile_mode``; "reduce-overhead" adds CUDA
    graphs).

    ``warmup`` returns the loss of one forward; it is run once with its backward, in a forked RNG and with the
    gradients cleared after, so that compiler failures (forward or backward) surface and fall back here.
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"train.compile_mode must be one of {COMPILE_MODES}, got {mode!r}")
    group = CompiledParts()
    if attention is None:
        attention = any(p.is_cuda for p in model.parameters())
    parts = COMPILED_PARTS + (("slot_attention",) if attention else ())
    if attention and isinstance(getattr(getattr(model, "slot_attention", None), "fast", None), bool):
        group.restore = (model.slot_attention, model.slot_attention.fast)  # put back if compilation fails
        model.slot_attention.fast = False  # the plain path: one graph that inductor fuses (no autograd.Function)
    for name in parts:
        part = getattr(model, name, None)
        if isinstance(part, nn.Module):
            part.forward = CompiledForward(part, name, group, mode)
            group.names.append(name)
    if warmup is not None and group.names and not group.failed:
        cuda = sorted({p.device.index or 0 for p in model.parameters() if p.is_cuda})
        with torch.random.fork_rng(devices=cuda):
            try:
                if cuda:
                    torch.compiler.cudagraph_mark_step_begin()
                warmup().backward()
            except Exception as err:
                group.fall_back("the warm-up step", err)
        model.zero_grad(set_to_none=True)
    return group
