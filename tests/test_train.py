import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from slotlab.config import apply_overrides
from slotlab.experiments import get_experiment
from slotlab.train import NonFiniteLossError, lr_at, train


def tiny(*overrides):
    return apply_overrides(get_experiment("tiny"), list(overrides))


def test_lr_schedule_is_the_papers():
    cfg = get_experiment("tetrominoes").train
    assert lr_at(0, cfg) == 0.0
    assert lr_at(5_000, cfg) == pytest.approx(4e-4 * 0.5 * 0.5 ** 0.05)  # decay applies during warmup too
    assert lr_at(110_000, cfg) == pytest.approx(4e-4 * 0.5 ** 1.1)


def test_resume_replays_exactly(tmp_path):
    straight = train(tiny("train.steps=6"), tmp_path / "a", progress=False)
    train(tiny("train.steps=3", "train.checkpoint_every=3"), tmp_path / "b", progress=False)
    resumed = train(tiny("train.steps=6"), tmp_path / "b", resume=True, progress=False)
    assert straight["step"] == resumed["step"] == 6
    a = load_file(tmp_path / "a" / "checkpoints" / "last.safetensors")
    b = load_file(tmp_path / "b" / "checkpoints" / "last.safetensors")
    for key in a:
        if key.startswith("model."):
            assert torch.equal(a[key], b[key]), key
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert {"train", "val"} <= {r["kind"] for r in rows}
    assert (tmp_path / "a" / "tb").is_dir() and (tmp_path / "a" / "config.json").is_file()


def test_workdir_guards(tmp_path):
    train(tiny("train.steps=2"), tmp_path / "run", progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny("train.steps=2"), tmp_path / "run", progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(tiny(), tmp_path / "fresh", resume=True, progress=False)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises((PermissionError, OSError)):
        train(tiny(), blocker / "run", progress=False)


def test_a_new_run_never_overwrites_other_files(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.json").write_text('{"mine": 1}\n')
    (folder / ".notes.tmp").write_text("keep")  # the name pattern of an interrupted atomic write
    with pytest.raises(FileExistsError, match="not a slotlab run"):
        train(tiny("train.steps=1"), folder, progress=False)
    assert (folder / "config.json").read_text() == '{"mine": 1}\n' and (folder / ".notes.tmp").read_text() == "keep"
    assert sorted(p.name for p in folder.iterdir()) == [".notes.tmp", "config.json"]
    (tmp_path / "empty").mkdir()
    assert train(tiny("train.steps=1"), tmp_path / "empty", progress=False)["step"] == 1


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    train(tiny("train.steps=2", "train.checkpoint_every=2"), tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "checkpoints" / "last.safetensors").read_bytes()
    with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
        train(tiny("train.steps=6", "train.lr=1e30", "train.warmup_steps=0"), tmp_path / "run", resume=True,
              progress=False)
    assert (tmp_path / "run" / "checkpoints" / "last.safetensors").read_bytes() == before


def test_non_finite_weights_after_a_finite_loss_are_never_checkpointed(tmp_path, monkeypatch):
    train(tiny("train.steps=2", "train.checkpoint_every=2"), tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "checkpoints" / "last.safetensors").read_bytes()
    step = torch.optim.Adam.step

    def poisoning_step(self, *args, **kwargs):  # the update of step 4 (a checkpoint step) writes an Inf weight
        out = step(self, *args, **kwargs)
        if self.state[self.param_groups[0]["params"][0]]["step"] == 4:
            self.param_groups[0]["params"][0].data.view(-1)[0] = float("inf")
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", poisoning_step)
    with pytest.raises(NonFiniteLossError, match="weights became NaN or Inf by step 4"):
        train(tiny("train.steps=6", "train.checkpoint_every=2"), tmp_path / "run", resume=True, progress=False)
    assert (tmp_path / "run" / "checkpoints" / "last.safetensors").read_bytes() == before


def test_time_budget_stops_the_run(tmp_path):
    result = train(tiny("train.steps=100000", "train.max_minutes=0.002"), tmp_path / "run", progress=False)
    assert result["step"] < 100000 and result["train_seconds"] >= 0.12


@pytest.mark.slow
def test_train_kill_resume_eval_round_trip(tmp_path):
    """A real SIGKILL mid-run: the checkpoint on disk is whole, --resume finishes, eval reads the result."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "slotlab.cli", "train", "--experiment", "tiny", "--workdir", str(tmp_path / "run"),
           "--set", "train.steps=100000", "--set", "train.checkpoint_every=1", "--set", "train.eval_every=0",
           "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "run" / "checkpoints" / "last.safetensors"
    deadline = time.time() + 120
    while time.time() < deadline and not last.is_file():
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.is_file(), "no checkpoint was written before the kill"
    step_killed = json.loads(_metadata(last)["state"])["step"]
    assert step_killed >= 1
    resume = [sys.executable, "-m", "slotlab.cli", "train", "--experiment", "tiny", "--workdir",
              str(tmp_path / "run"), "--resume", "--set", f"train.steps={step_killed + 3}", "--no-progress"]
    done = subprocess.run(resume, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(_metadata(last)["state"])["step"] == step_killed + 3
    out = tmp_path / "m.json"
    ev = subprocess.run([sys.executable, "-m", "slotlab.cli", "eval", "--workdir", str(tmp_path / "run"),
                         "--json", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert ev.returncode == 0, ev.stderr
    metrics = json.loads(out.read_text())
    assert {"fg_ari", "ari", "mbo", "mse"} <= set(metrics) and 0 <= metrics["mbo"] <= 1


def _metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def test_training_does_not_import_tensorflow(tmp_path):
    """TensorBoard's writer would import all of TensorFlow when it is installed (~20 s); train() prevents it."""
    code = ("import sys; from slotlab.experiments import get_experiment; from slotlab.train import train; "
            f"train(get_experiment('tiny'), {str(tmp_path / 'run')!r}, progress=False); "
            "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'")
    env = {**os.environ, "SLOTLAB_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_train_device_is_resolved_or_rejected_clearly(monkeypatch):
    from slotlab.distributed import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    for bad in ("gpu0", "tpu", "cuda:x"):
        with pytest.raises(ValueError, match="train.device must be"):
            resolve_device(bad)


def test_num_threads_zero_respects_omp_num_threads_and_affinity(monkeypatch):
    from slotlab.train import available_cores, set_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        set_threads(0)
        assert torch.get_num_threads() == 1
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5})
        monkeypatch.setattr(os, "cpu_count", lambda: 64)
        assert available_cores() == 3
    finally:
        torch.set_num_threads(before)


def test_budgeted_progress_bar_counts_minutes_with_the_step_beside(tmp_path, capsys):
    train(tiny("train.steps=100000", "train.max_minutes=0.002", "train.eval_every=0"), tmp_path / "run")
    err = capsys.readouterr().err
    assert "0.002 min" in err and "step=" in err and "/100000" in err
    assert "100000 [" not in err  # no step-limit bar (and its hours-long ETA)
