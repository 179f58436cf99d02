"""Checkpoints: weights, Adam state and metadata round-trip; writes are atomic; loading never runs code."""

import json
import pickle

import pytest
import torch

from slotlab import checkpoint
from slotlab.checkpoint import load_checkpoint, save_checkpoint


def model_and_adam(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(2):  # a non-empty Adam state (step, exp_avg, exp_avg_sq)
        optimizer.zero_grad()
        model(torch.randn(5, 3)).square().sum().backward()
        optimizer.step()
    return model, optimizer


def test_round_trip_of_weights_optimizer_and_metadata(tmp_path):
    model, optimizer = model_and_adam(0)
    path = tmp_path / "ck" / "last.safetensors"  # the directory is created
    save_checkpoint(path, model, optimizer, {"step": 7, "best": 0.5}, {"name": "x"})
    other, other_opt = model_and_adam(1)
    meta = load_checkpoint(path, other, other_opt)
    assert meta == {"state": {"step": 7, "best": 0.5}, "config": {"name": "x"}}
    for (name, a), b in zip(model.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    want, got = optimizer.state_dict(), other_opt.state_dict()
    assert json.loads(json.dumps(want["param_groups"])) == got["param_groups"]  # (tuples come back as lists)
    for index, fields in want["state"].items():
        for field, value in fields.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(got["state"][index][field])), (index, field)
    # the two optimizers now take the same next step
    x = torch.randn(5, 3)
    for m, o in ((model, optimizer), (other, other_opt)):
        o.zero_grad()
        m(x).square().sum().backward()
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters(), strict=True))


def test_weights_only_checkpoint_cannot_resume_and_wrong_model_is_named(tmp_path):
    model, optimizer = model_and_adam()
    save_checkpoint(tmp_path / "best.safetensors", model)
    with pytest.raises(ValueError, match="holds no optimizer state"):
        load_checkpoint(tmp_path / "best.safetensors", model, optimizer)
    with pytest.raises(ValueError, match="does not match the model"):
        load_checkpoint(tmp_path / "best.safetensors", torch.nn.Linear(3, 4))
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.safetensors", model)


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, _ = model_and_adam()
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, model, state={"step": 1})
    before = path.read_bytes()

    def dies_halfway(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", dies_halfway)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, state={"step": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]  # no temporary file left behind


class _Payload:
    def __reduce__(self):
        return (open, ("PWNED", "w"))


def test_loading_never_executes_code(tmp_path, monkeypatch):
    """A pickle (what torch.save writes) is refused as "not a slotlab checkpoint"; its code never runs."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"model.weight": _Payload()}))
    with pytest.raises(ValueError, match="corrupt or not a slotlab checkpoint"):
        load_checkpoint(path, torch.nn.Linear(3, 4))
    assert not (tmp_path / "PWNED").exists()
    path.write_bytes(b"\x00" * 7)
    with pytest.raises(ValueError, match="corrupt or not a slotlab checkpoint"):
        load_checkpoint(path)
