"""Parity of every exact fast path of the autoencoder with the plain formulation (fast_paths.set_fast_paths)."""

import pytest
import torch

from slotlab.experiments import get_experiment
from slotlab.nn.fast_paths import recompose, set_fast_paths
from slotlab.nn.models import SlotAttentionAutoEncoder
from slotlab.nn.modules import BroadcastDecoder, BroadcastStem, Encoder, UpsampleBroadcastDecoder


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4) -> bool:
    """Equal to fp32 rounding, relative to the tensor's largest entry (a floor for gradients that are zero in
    exact arithmetic, e.g. norm_slots.bias: a shift shared by all slots cancels in the softmax over slots)."""
    return (a - b).abs().max().item() <= rtol * max(b.abs().max().item(), 1e-5)


def _grads(module: torch.nn.Module, *inputs: torch.Tensor) -> list[torch.Tensor]:
    params = [p for p in module.parameters() if p.grad is not None]
    return [p.grad.clone() for p in params] + [x.grad.clone() for x in inputs]


@pytest.mark.parametrize("res", [(35, 35), (8, 13)])
def test_stem_gather_gradients_equal_the_plain_stem(res):
    torch.manual_seed(0)
    stem = BroadcastStem(slot_dim=6, channels=5, resolution=res)
    slots = torch.randn(4, 6, requires_grad=True)
    weight = torch.randn(4, 5, *res)  # a fixed upstream gradient
    out = {}
    for name, fn in (("fast", stem.forward), ("plain", stem.plain)):
        stem.zero_grad()
        slots.grad = None
        y = fn(slots)
        (y * weight).sum().backward()
        out[name] = [y.detach()] + _grads(stem, slots)
    assert out["fast"][0].is_contiguous(memory_format=torch.channels_last)
    for fast, plain in zip(out["fast"], out["plain"], strict=True):
        assert _close(fast, plain)


def test_recompose_equals_softmax_and_sum_with_gradients():
    torch.manual_seed(0)
    out = torch.randn(2, 3, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    recon, masks = recompose(out)
    ref_masks = out[:, :, 3:].softmax(dim=1)
    ref_recon = (out[:, :, :3] * ref_masks).sum(dim=1)
    assert torch.allclose(recon, ref_recon) and torch.allclose(masks, ref_masks)
    assert torch.autograd.gradcheck(lambda x: recompose(x), (out,))  # both outputs' gradients
    assert torch.autograd.gradcheck(lambda x: recompose(x)[0], (out,))  # recon alone (masks unused)


def test_recompose_gradient_keeps_a_channels_last_layout():
    out = torch.randn(6, 4, 7, 7).contiguous(memory_format=torch.channels_last).requires_grad_()
    recon, _ = recompose(out.reshape(2, 3, 4, 7, 7))
    recon.sum().backward()
    assert out.grad.is_contiguous(memory_format=torch.channels_last)


def test_channels_last_encoder_equals_plain():
    torch.manual_seed(0)
    enc = Encoder((12, 12), channels=8, mlp_dim=8)
    image = torch.rand(3, 3, 12, 12, requires_grad=True)
    results = []
    for enabled in (True, False):
        set_fast_paths(enc, enabled)
        enc.zero_grad()
        image.grad = None
        y = enc(image)
        y.square().sum().backward()
        results.append([y.detach()] + _grads(enc, image))
    for fast, plain in zip(*results, strict=True):
        assert _close(fast, plain)


@pytest.mark.parametrize("kind", ["broadcast", "upsample"])
def test_fast_decoders_equal_plain_with_gradients(kind):
    torch.manual_seed(0)
    dec = BroadcastDecoder(8, (12, 12), channels=6, num_layers=3) if kind == "broadcast" else \
        UpsampleBroadcastDecoder(8, (16, 16), channels=6, broadcast=(4, 4))
    slots = torch.randn(2, 3, 8, requires_grad=True)
    results = []
    for enabled in (True, False):
        set_fast_paths(dec, enabled)
        dec.zero_grad()
        slots.grad = None
        y = dec(slots)
        y.square().sum().backward()
        results.append([y.detach()] + _grads(dec, slots))
    for fast, plain in zip(*results, strict=True):
        assert _close(fast, plain)


@pytest.mark.parametrize("preset", ["tetrominoes", "multi_dsprites"])
def test_autoencoder_training_step_fast_equals_plain(preset):
    """The whole model (fast attention, stem, channels-last, recomposition) against the plain formulation."""
    cfg = get_experiment(preset).model
    cfg.resolution, cfg.num_slots = 35, 3  # B*N = 2450: the fast attention path is taken
    torch.manual_seed(0)
    model = SlotAttentionAutoEncoder(cfg)
    image = torch.rand(2, 3, 35, 35) * 2 - 1
    slots = model.slot_attention.init_slots(2, 3).detach()
    results = []
    for enabled in (True, False):
        set_fast_paths(model, enabled)
        model.zero_grad()
        out = model(image, slots=slots)
        torch.nn.functional.mse_loss(out["recon"], image).backward()
        results.append([out["recon"].detach(), out["masks"].detach()] + _grads(model))
    assert len(results[0]) == len(results[1]) == 2 + sum(p.grad is not None for p in model.parameters())
    for fast, plain in zip(*results, strict=True):
        assert _close(fast, plain, rtol=1e-3)
