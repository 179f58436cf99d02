"""--resume: overrides checked against the checkpoint before anything is written, data.json, old checkpoints,
metrics without repeats, Ctrl-C / SIGTERM."""

import json
import os
import signal

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from slotlab.cli import main


def _train(run, *args):
    return main(["train", "--experiment", "tiny", "--workdir", str(run), "--no-progress", *args])


def _files(run):
    return {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file() and "tb" not in p.parts}


def _metadata(path):
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def test_resume_refuses_a_shape_change_and_writes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(run) == 0
    before = _files(run)
    assert _train(run, "--resume", "--set", "model.slot_dim=32", "--set", "train.steps=6") == 2
    assert "cannot change model.slot_dim=32 (checkpoint: 16)" in capsys.readouterr().err
    assert _files(run) == before  # config.json untouched: eval and a plain --resume still work
    assert main(["eval", "--workdir", str(run), "--limit", "4"]) == 0
    assert _train(run, "--resume", "--set", "train.steps=6") == 0


def test_resume_meaning_change_needs_allow_change_and_is_recorded(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(run) == 0
    before = _files(run)
    assert _train(run, "--resume", "--set", "model.num_slots=2", "--set", "train.steps=6") == 2
    assert "--allow-change K" in capsys.readouterr().err and _files(run) == before
    assert _train(run, "--resume", "--set", "model.num_slots=2", "--set", "train.steps=6", "--allow-change", "K") == 0
    assert json.loads((run / "config.json").read_text())["model"]["num_slots"] == 2
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert history[-1]["event"] == "resume" and history[-1]["changes"]["model.num_slots"] == [4, 2]
    assert history[-1]["allowed"] == ["K"] and history[-1]["step"] == 4


def test_stale_data_json_never_switches_the_data(tmp_path, capsys):
    """A failed --data run left data.json behind; a later built-in run in that folder resumes on built-in data."""
    cache, run = tmp_path / "d", tmp_path / "run"
    assert main(["data", "generate", "tetrominoes", "--out", str(cache), "--num", "24", "--seed", "5"]) == 0
    # the --data run fails at its first step (a NaN loss), before any checkpoint
    assert _train(run, "--data", f"cache:{cache}", "--set", "train.lr=1e30", "--set", "train.warmup_steps=0") == 1
    assert _train(run) == 0  # a new run on the built-in data
    assert _train(run, "--resume", "--set", "train.steps=6") == 0
    assert json.loads((run / "data.json").read_text())["data"] is None
    assert json.loads(_metadata(run / "checkpoints" / "last.safetensors")["state"])["data"]["data"] is None
    # a data.json that disagrees with the checkpoint is an error naming both
    (run / "data.json").write_text(json.dumps({"data": f"cache:{cache}", "val_data": None}))
    capsys.readouterr()
    assert _train(run, "--resume", "--set", "train.steps=8") == 2
    assert "stale" in capsys.readouterr().err


def _to_old_layout(path):
    """Rewrite a checkpoint as the first slotlab versions wrote it: no digests, no data record."""
    meta = _metadata(path)
    meta.pop("digests")
    state = json.loads(meta["state"])
    state.pop("data", None)
    meta["state"] = json.dumps(state)
    save_file(load_file(path), str(path), metadata=meta)


def test_a_run_with_old_checkpoints_loads_evaluates_and_resumes(tmp_path, caplog):
    run = tmp_path / "run"
    assert _train(run) == 0
    for name in ("last", "best"):
        _to_old_layout(run / "checkpoints" / f"{name}.safetensors")
    for name in ("data.json", "history.jsonl"):
        (run / name).unlink()
    assert main(["eval", "--workdir", str(run), "--limit", "4"]) == 0
    assert "loaded unverified" in caplog.text
    assert _train(run, "--resume", "--set", "train.steps=6") == 0
    meta = _metadata(run / "checkpoints" / "last.safetensors")
    assert json.loads(meta["state"])["step"] == 6 and "digests" in meta  # rewritten in the new layout
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert history[-1]["checkpoint_verified"] is False


def test_metrics_have_one_row_per_kind_and_step_after_a_resume(tmp_path):
    run = tmp_path / "run"
    assert _train(run, "--set", "train.steps=2") == 0
    at_step_2 = (run / "checkpoints" / "last.safetensors").read_bytes()
    assert _train(run, "--resume", "--set", "train.steps=4") == 0
    # as if killed after logging steps 3 and 4 but before the checkpoint at 4, mid-way through a line
    (run / "checkpoints" / "last.safetensors").write_bytes(at_step_2)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"kind": "tra')
    assert _train(run, "--resume", "--set", "train.steps=4") == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["kind"], r["step"]) for r in rows]
    assert len(keys) == len(set(keys)) and ("train", 4) in keys and ("val", 4) in keys


def test_orphan_temporary_files_are_removed_at_the_next_start(tmp_path):
    run = tmp_path / "run"
    assert _train(run) == 0
    orphans = [run / "checkpoints" / ".last.safetensors.abc123.tmp", run / ".config.json.xyz.tmp"]
    for orphan in orphans:
        orphan.write_bytes(b"partial")
    assert _train(run, "--resume", "--set", "train.steps=6") == 0
    assert not any(o.exists() for o in orphans)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_writes_a_checkpoint_and_resume_is_bit_exact(tmp_path, monkeypatch, capsys, signum):
    import slotlab.train as train_module

    assert _train(tmp_path / "straight", "--set", "train.steps=6") == 0
    real_step = train_module.train_step
    calls = []

    def step_then_signal(*args, **kwargs):  # the signal arrives during step 3 (the last checkpoint is at step 2)
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signum)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", step_then_signal)
    run = tmp_path / "run"
    assert _train(run, "--set", "train.steps=6") == 128 + signum
    err = capsys.readouterr().err
    assert "stopped at step 3" in err and "--resume" in err and "Traceback" not in err
    last = run / "checkpoints" / "last.safetensors"
    assert json.loads(_metadata(last)["state"])["step"] == 3
    monkeypatch.setattr(train_module, "train_step", real_step)
    assert _train(run, "--resume", "--set", "train.steps=6") == 0
    a, b = load_file(tmp_path / "straight" / "checkpoints" / "last.safetensors"), load_file(last)
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("model."))
