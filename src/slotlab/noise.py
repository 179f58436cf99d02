"""Initial-slot noise seeded per image, so that a model's output for an image depends on the image alone.

Slot Attention draws its initial slots at random on every call (mu + sigma * noise, paper section 2). Drawn for a
whole batch from one generator, an image's noise depends on its position in the batch and on the batch size. Here
each image's noise comes from its own generator, seeded with a hash of (``seed``, the image's pixels quantised to
8 bits), so evaluation, ``slotlab segment`` and ``slotlab.load(...).segment`` give the same masks for the same
image whatever batch it is in, and on any device.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor, nn

from slotlab.nn.slot_attention import SlotAttention


def _item_seeds(items: Tensor, seed: int) -> list[int]:
    """One 63-bit seed per item (row of the first axis) of a CPU tensor: a keyed hash of its bytes."""
    key = str(int(seed)).encode()
    return [int.from_bytes(hashlib.blake2b(item.numpy().tobytes(), digest_size=8, key=key).digest(), "little")
            & (2**63 - 1) for item in items]


def image_seeds(images: Tensor, seed: int) -> list[int]:
    """One 63-bit seed per image of ``images`` (B, 3, H, W) in [-1, 1], from ``seed`` and its 8-bit pixels."""
    pixels = ((images.detach().float().cpu() + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)  # (B, 3, H, W)
    return _item_seeds(pixels, seed)


def feature_seeds(features: Tensor, seed: int) -> list[int]:
    """One 63-bit seed per item of ``features`` (B, ...), from ``seed`` and the item's values rounded to fp16 (so
    an fp16 feature cache and the same features computed in fp32 seed alike)."""
    return _item_seeds(features.detach().cpu().to(torch.float16).contiguous().view(torch.int16), seed)


def seeded_initial_slots(sa: SlotAttention, seeds: list[int], num_slots: int | None) -> Tensor:
    """(B, K, D) initial slots (:meth:`SlotAttention.init_slots`), each image's noise from its own seed."""
    K = num_slots or sa.num_slots
    with torch.no_grad():
        return torch.cat([sa.init_slots(1, K, generator=torch.Generator().manual_seed(s)) for s in seeds])


def seeded_forward(model: nn.Module, images: Tensor, seed: int, num_slots: int | None = None,
                   num_iters: int | None = None) -> dict[str, Tensor]:
    """``model(images)`` with each image's initial-slot noise seeded by :func:`image_seeds` (a batched forward for
    Slot Attention; one image at a time under its seed for other slot modules, e.g. the invariant one; one plain
    call for a model without ``slot_attention``)."""
    sa = getattr(model, "slot_attention", None)
    if sa is None:  # no slots to seed (e.g. a stand-in model in tests): one batched call
        return model(images, num_slots=num_slots, num_iters=num_iters)
    if getattr(sa, "slot_init", "random") == "farthest":  # initial slots from the image itself: no noise
        return model(images, num_slots=num_slots, num_iters=num_iters)
    seeds = image_seeds(images, seed)
    if isinstance(sa, SlotAttention):
        slots = seeded_initial_slots(sa, seeds, num_slots)
        return model(images, num_slots=num_slots, num_iters=num_iters, slots=slots)
    outputs = []
    for image, s in zip(images, seeds, strict=True):
        with torch.random.fork_rng(devices=[image.device] if image.device.type == "cuda" else []):
            torch.manual_seed(s)
            outputs.append(model(image[None], num_slots=num_slots, num_iters=num_iters))
    return {key: torch.cat([o[key] for o in outputs]) if isinstance(outputs[0][key], Tensor) else outputs[0][key]
            for key in outputs[0]}
