"""train.compile (slotlab.compilation): compiled parts match eager; any compiler failure falls back, one warning."""

import logging
import shutil

import pytest
import torch
from torch import nn

from slotlab.compilation import compile_model
from slotlab.config import ModelConfig, apply_overrides
from slotlab.experiments import get_experiment
from slotlab.tasks import build_model
from slotlab.train import train

SMALL = ModelConfig(resolution=16, decoder="broadcast", num_slots=3, slot_dim=16, mlp_hidden_dim=32,
                    encoder_channels=8, encoder_mlp_dim=8, decoder_channels=8, decoder_layers=2)


def forward_backward(model, image, seed=0):
    """Outputs and every parameter's gradient of one step (the same initial slots for a given seed)."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    out = model(image)
    (out["recon"].square().mean() + out["masks"][:, 0].mean()).backward()
    return out, {name: p.grad.clone() for name, p in model.named_parameters()}


def failing_compile(fn, **kwargs):
    def compiled(*args, **kw):
        raise RuntimeError("InductorError: no working C++ compiler found\nmore detail")
    return compiled


def warnings_of(caplog):
    return [r for r in caplog.records if r.name == "slotlab.compilation" and r.levelno == logging.WARNING]


def test_compile_failure_falls_back_to_eager_with_one_warning(monkeypatch, caplog):
    torch.manual_seed(0)
    model = build_model(SMALL)
    image = torch.rand(2, 3, 16, 16) * 2 - 1
    want, want_grads = forward_backward(model, image)
    monkeypatch.setattr(torch, "compile", failing_compile)
    group = compile_model(model)
    assert group.names == ["encoder", "decoder"] and not group.failed
    for _ in range(2):
        got, got_grads = forward_backward(model, image)
        assert torch.equal(got["recon"], want["recon"])
        assert all(torch.equal(got_grads[name], g) for name, g in want_grads.items())
    assert group.failed
    messages = [r.getMessage() for r in warnings_of(caplog)]
    assert len(messages) == 1 and "no working C++ compiler" in messages[0] and "more detail" not in messages[0]
    assert set(model.state_dict()) == set(build_model(SMALL).state_dict())  # checkpoints keep their names


def test_failures_at_compile_call_or_in_the_warmup_fall_back(monkeypatch, caplog):
    def unsupported(fn, **kwargs):
        raise RuntimeError("torch.compile is not supported on this platform")

    monkeypatch.setattr(torch, "compile", unsupported)
    assert compile_model(build_model(SMALL)).failed
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)  # "compiles", but the first backward fails

    def warmup():
        raise RuntimeError("backward compilation failed")

    model = build_model(SMALL)
    assert compile_model(model, warmup).failed
    assert all(p.grad is None for p in model.parameters())
    assert len(warnings_of(caplog)) == 2  # one per model


def test_an_input_error_is_raised_as_without_compile(monkeypatch):
    monkeypatch.setattr(torch, "compile", failing_compile)
    holder = nn.Module()
    holder.encoder = nn.Linear(3, 2)
    group = compile_model(holder)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        holder.encoder(torch.randn(4, 5))
    assert not group.failed  # eager failed too: the input's fault, not the compiler's


def test_train_with_compile_runs_through_a_compiler_failure(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(torch, "compile", failing_compile)
    cfg = apply_overrides(get_experiment("tiny"), ["train.steps=2", "train.compile=true"])
    assert train(cfg, tmp_path / "run", progress=False)["step"] == 2
    assert len(warnings_of(caplog)) == 1


@pytest.mark.slow  # about 30 s of compilation with a cold inductor cache, 5 s warm
@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
                    reason="torch.compile's inductor backend needs a C++ compiler on CPU; none on PATH")
@pytest.mark.parametrize("attention", [False, True], ids=["parts", "parts+slot_attention"])
def test_compiled_matches_eager(attention):
    import torch._dynamo
    import torch._inductor.config

    if not torch._dynamo.is_dynamo_supported():
        pytest.skip("torch.compile (dynamo) is not supported on this Python / platform")
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = build_model(SMALL)
    image = torch.rand(2, 3, 16, 16) * 2 - 1
    want, want_grads = forward_backward(model, image)
    # compile_threads=1: no worker pool for a test; fallback_random: compiled Slot Attention draws its initial-slot
    # noise with eager's RNG (inductor has its own otherwise), so that both see the same initial slots
    with torch._inductor.config.patch(compile_threads=1, fallback_random=True):
        group = compile_model(model, attention=attention)  # attention=True: what a GPU gets (plain path compiled)
        got, got_grads = forward_backward(model, image)
        if attention:  # a new batch size (evaluation's) recompiles with a symbolic batch: must not fall back
            forward_backward(model, torch.rand(3, 3, 16, 16) * 2 - 1)
    torch._dynamo.reset()
    assert not group.failed, "compilation fell back to eager"
    assert ("slot_attention" in group.names) == attention and model.slot_attention.fast == (not attention)
    for key in ("recon", "masks", "slots"):
        assert (got[key] - want[key]).abs().max() <= 1e-5 * want[key].abs().max() + 1e-6, key
    for name, g in want_grads.items():
        assert (got_grads[name] - g).abs().max() <= 1e-4 * g.abs().max() + 1e-6, name
