"""Checkpoints: weights, Adam state and metadata round-trip; writes are atomic; loading never runs code; digests
checked on load, finite tensors, messages that name a checkpoint that exists."""

import json
import pickle
import shutil
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from slotlab import checkpoint
from slotlab.checkpoint import load_checkpoint, save_checkpoint
from slotlab.cli import main


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
    assert meta == {"state": {"step": 7, "best": 0.5}, "config": {"name": "x"}, "verified": True}
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


def _tensor_span(path, name):
    """(start, stop) byte offsets of tensor ``name``'s data in a safetensors file."""
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    a, b = header[name]["data_offsets"]
    return 8 + size + a, 8 + size + b


def _flip_exponent_bits(path, name, count=32):
    """Flip the top exponent bit of the first ``count`` float32 values of tensor ``name``, in place on disk."""
    raw = bytearray(path.read_bytes())
    start, stop = _tensor_span(path, name)
    for i in range(min(count, (stop - start) // 4)):
        raw[start + 4 * i + 3] ^= 0x40
    path.write_bytes(bytes(raw))


def _strip_digests(path, poison: str | None = None):
    """Rewrite ``path`` without digests (as older slotlab wrote it), optionally with a NaN in tensor ``poison``."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    meta.pop("digests", None)
    tensors = load_file(path)
    if poison:
        tensors[poison].view(-1)[0] = float("nan")
    save_file(tensors, str(path), metadata=meta)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("ckpt") / "run"
    assert main(["train", "--experiment", "tiny", "--workdir", str(run), "--no-progress"]) == 0
    return run


def _copy(run, tmp_path):
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def test_flipped_weight_bits_are_detected_and_named(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    best = run / "checkpoints" / "best.safetensors"
    name = "model.slot_attention.to_q.weight"
    _flip_exponent_bits(best, name)
    assert main(["eval", "--workdir", str(run), "--limit", "4"]) == 2
    err = capsys.readouterr().err
    assert str(best) in err and name in err and "digest" in err


def test_a_nan_weight_in_an_old_checkpoint_is_named_on_load(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    last = run / "checkpoints" / "last.safetensors"
    _strip_digests(last, poison="model.decoder.slot_proj.weight")
    assert main(["train", "--experiment", "tiny", "--workdir", str(run), "--no-progress", "--resume",
                 "--set", "train.steps=6"]) == 2
    err = capsys.readouterr().err
    assert str(last) in err and "model.decoder.slot_proj.weight" in err and "NaN" in err and "train.lr" not in err


def test_non_finite_loss_before_any_checkpoint_points_to_no_file(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--experiment", "tiny", "--workdir", str(run), "--no-progress", "--set", "train.lr=1e30",
                 "--set", "train.warmup_steps=0"]) == 1
    err = capsys.readouterr().err
    assert "No checkpoint was written yet" in err and "last.safetensors" not in err


def test_non_finite_loss_names_the_checkpoint_that_exists_with_its_step(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    assert main(["train", "--experiment", "tiny", "--workdir", str(run), "--no-progress", "--resume",
                 "--set", "train.steps=8", "--set", "train.lr=1e30", "--set", "train.warmup_steps=0"]) == 1
    err = capsys.readouterr().err
    assert f"{run / 'checkpoints' / 'last.safetensors'} (step 4" in err


def test_digests_round_trip_and_old_files_load_unverified(tmp_path):
    model = torch.nn.Linear(3, 2).to(torch.bfloat16)
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, state={"step": 1})
    assert load_checkpoint(path, torch.nn.Linear(3, 2).to(torch.bfloat16))["verified"] is True
    _strip_digests(path)
    assert load_checkpoint(path, torch.nn.Linear(3, 2).to(torch.bfloat16))["verified"] is False


class _FilePayload:
    """Unpickling this would create a file: the proof that a loader ran code from the file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_no_crafted_file_runs_code(trained, tmp_path, capsys):
    import numpy as np

    marker = tmp_path / "ran"
    run = _copy(trained, tmp_path)
    best = run / "checkpoints" / "best.safetensors"
    torch.save({"model": _FilePayload(marker)}, best)  # a pickle where a safetensors file belongs
    assert main(["eval", "--workdir", str(run)]) == 2
    assert "corrupt or not a slotlab checkpoint" in capsys.readouterr().err
    cache = tmp_path / "cache"
    assert main(["data", "generate", "tetrominoes", "--out", str(cache), "--num", "4"]) == 0
    with open(cache / "image.npy", "wb") as f:  # an object array: loading it would unpickle
        np.save(f, np.array([_FilePayload(marker)], dtype=object), allow_pickle=True)
    assert main(["eval", "--workdir", str(run), "--checkpoint", "last", "--data", f"cache:{cache}"]) == 2
    (run / "config.json").write_bytes(pickle.dumps(_FilePayload(marker)))
    assert main(["eval", "--workdir", str(run)]) == 2
    assert not marker.exists()
