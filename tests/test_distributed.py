"""Data-parallel training under torchrun (slotlab.distributed): two CPU processes (Gloo) train the same weights as
one process on the whole batch; rank 0 alone writes."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from slotlab.config import apply_overrides
from slotlab.distributed import Distributed
from slotlab.experiments import get_experiment
from slotlab.train import train

# learned initial slots: no random draw, so two ranks and one process see the same slots; Adam with a large eps is
# close to SGD, so the weights compare the averaged gradients themselves rather than Adam's sign of tiny ones
SETTINGS = ["model.slot_init=learned", "train.steps=4", "train.batch_size=4", "train.log_every=2",
            "train.eval_every=4", "train.checkpoint_every=2", "train.device=cpu", "train.num_threads=1",
            "data.train_size=32", "data.val_size=8", "data.test_size=8", "train.adam_eps=1.0", "train.lr=0.05",
            "train.warmup_steps=0"]


def weights(workdir):
    return {k: v for k, v in load_file(str(workdir / "checkpoints" / "last.safetensors")).items()
            if k.startswith("model.")}


def test_two_processes_train_the_weights_of_one(tmp_path):
    settings = SETTINGS + [f"data.cache_dir={tmp_path / 'cache'}"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "slotlab",
           "train", "--experiment", "tiny", "--workdir", str(tmp_path / "ddp")]
    for kv in settings:
        cmd += ["--set", kv]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]

    for name, steps in (("one", 4), ("start", 0)):
        cfg = get_experiment("tiny")
        apply_overrides(cfg, settings + [f"train.steps={steps}"])
        train(cfg, tmp_path / name, progress=False)
    ddp, one, start = weights(tmp_path / "ddp"), weights(tmp_path / "one"), weights(tmp_path / "start")
    moved = max((one[k] - start[k]).abs().max().item() for k in one)
    gap = max((one[k] - ddp[k]).abs().max().item() for k in one)
    assert moved > 1e-2  # training changed the weights ...
    assert gap < 1e-5, gap  # ... and two ranks on half-batches changed them as one process on the whole batch

    rows = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in rows] == [("train", 2), ("train", 4), ("val", 4)]  # rank 0 only


def test_global_batch_must_divide_by_the_processes(tmp_path, monkeypatch):
    import slotlab.train

    monkeypatch.setattr(slotlab.train, "setup", lambda spec: Distributed(torch.device("cpu"), rank=0, world_size=2))
    cfg = get_experiment("tiny")
    apply_overrides(cfg, SETTINGS + ["train.batch_size=3", f"data.cache_dir={tmp_path / 'cache'}"])
    with pytest.raises(ValueError, match="must divide by the 2 processes"):
        train(cfg, tmp_path / "run", progress=False)
