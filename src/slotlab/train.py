"""Training loop for both tasks (object discovery, set prediction): reads top to bottom (build, then a loop: lr,
step, log, eval, checkpoint). What differs between the tasks (model, data, loss, metrics) comes from ``tasks.py``.

A run directory holds::

    config.json                  the resolved ExperimentConfig
    metrics.jsonl                one JSON object per line: {"kind": "train" | "val", "step", "train_seconds", ...}
    tb/                          TensorBoard event files (the same scalars)
    checkpoints/last.safetensors the latest state (weights, Adam state, step, RNG), written atomically
    checkpoints/best.safetensors the weights with the best validation score so far (the task's select_metric)

``--resume`` continues from ``last.safetensors`` with the same data order, RNG and time budget, so a killed run
loses at most ``checkpoint_every`` steps.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
import types
from pathlib import Path

import torch
from tqdm import tqdm

from slotlab.checkpoint import load_checkpoint, save_checkpoint
from slotlab.compilation import compile_model
from slotlab.config import ExperimentConfig
from slotlab.distributed import setup
from slotlab.nn.models import set_step
from slotlab.nn.precision import autocast, check_precision, resolve_precision
from slotlab.tasks import get_task

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or Inf; the last good checkpoint is kept."""


def lr_at(step: int, cfg) -> float:
    """The paper's schedule: linear warmup from 0, times a continuous exponential decay applied from step 0."""
    warmup = min(1.0, step / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0
    return cfg.lr * warmup * cfg.decay_rate ** (step / cfg.decay_steps)


def batch_indices(step: int, seed: int, batch_size: int, num_items: int) -> torch.Tensor:
    """Scene indices of the batch at ``step``: a function of (seed, step) only, so resuming replays the order."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randint(num_items, (batch_size,), generator=g)


def to_device(batch: dict, device: torch.device) -> dict:
    """Every tensor of ``batch`` on ``device`` (a no-op on the CPU)."""
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def forward_loss(model: torch.nn.Module, task, batch: dict, precision: str) -> torch.Tensor:
    """The task's training loss of ``batch`` (on the model's device): the forward under bf16 autocast for
    ``precision="bf16"`` (precision.py), the outputs and the loss in fp32 either way."""
    with autocast(precision, batch[task.input_key].device):
        out = task.forward(model, batch)
    return task.loss(out, batch)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, task, batch: dict, precision: str,
               grad_clip: float = 0.0) -> torch.Tensor:
    """One optimisation step on ``batch`` (already on the model's device): :func:`forward_loss`, backward, optional
    gradient clipping, the optimizer's update. Returns the detached loss; no device sync (the caller checks it is
    finite)."""
    if batch[task.input_key].is_cuda:  # a new step for CUDA graphs (train.compile_mode="reduce-overhead"); else a no-op
        torch.compiler.cudagraph_mark_step_begin()
    loss = forward_loss(model, task, batch, precision)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.detach()


def set_threads(num_threads: int) -> None:
    torch.set_num_threads(num_threads if num_threads > 0 else max(1, os.cpu_count() or 1))


def prepare_workdir(workdir: Path, cfg: ExperimentConfig, resume: bool) -> Path | None:
    """Create the run directory; return the checkpoint to resume from (or None). Refuse to clobber a run."""
    last = workdir / "checkpoints" / "last.safetensors"
    if resume:
        if not last.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {last}; start a new run without --resume")
        return last
    if last.is_file():
        raise FileExistsError(f"{workdir} already holds a run ({last}); pass --resume or choose a new --workdir")
    try:
        (workdir / "checkpoints").mkdir(parents=True, exist_ok=True)
        probe = workdir / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise PermissionError(f"cannot write to workdir {workdir}: {err}") from err
    cfg.save(workdir / "config.json")
    return None


def train(cfg: ExperimentConfig, workdir: str | Path, *, resume: bool = False, progress: bool = True,
          splits: dict | None = None) -> dict:
    """Train ``cfg`` in ``workdir``; return the final validation metrics (with ``step`` and ``train_seconds``)."""
    workdir = Path(workdir)
    tc = cfg.train
    check_precision(tc.precision)
    dist = setup(tc.device)  # one process, or this rank of a torchrun job (distributed.py)
    try:
        return _train(cfg, workdir, resume, progress, splits, dist)
    finally:
        dist.close()


def _train(cfg: ExperimentConfig, workdir: Path, resume: bool, progress: bool, splits: dict | None, dist) -> dict:
    tc = cfg.train
    if tc.batch_size % dist.world_size:
        raise ValueError(f"train.batch_size={tc.batch_size} (the global batch) must divide by the "
                         f"{dist.world_size} processes")
    if dist.main:
        resume_from = prepare_workdir(workdir, cfg, resume)
    dist.barrier()
    if not dist.main:
        resume_from = workdir / "checkpoints" / "last.safetensors" if resume else None
    set_threads(tc.num_threads)
    log.info("precision: %s (%s)", *resolve_precision(tc.precision, dist.device))
    torch.manual_seed(tc.seed)  # the same initial weights on every rank

    # ---- build -------------------------------------------------------------------------------------------------
    task = get_task(cfg)
    if splits is None:  # under torchrun rank 0 generates (and caches) the built-in data first, the others read it
        if dist.main:
            splits = task.splits(cfg)
        dist.barrier()
        if not dist.main:
            splits = task.splits(cfg)
    train_set, val_set = splits["train"], splits["val"]
    if train_set.resolution != cfg.model.resolution:
        raise ValueError(f"data is {train_set.resolution}px but model.resolution={cfg.model.resolution}")
    device = dist.device
    model = task.build_model(cfg).to(device)
    if device.type == "cuda":  # no per-step device sync: data are uint8 scenes, and a NaN shows in the loss check
        model.check_finite = False
    # fused Adam on a GPU: one kernel for every parameter (same update rule)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.0, eps=tc.adam_eps, fused=device.type == "cuda")
    step, train_seconds, best = 0, 0.0, -math.inf
    if resume_from is not None:
        meta = load_checkpoint(resume_from, model, optimizer)
        for group in optimizer.param_groups:  # the checkpoint's groups may come from another device
            group["fused"] = device.type == "cuda"
        state = meta["state"]
        step, train_seconds, best = state["step"], state["train_seconds"], state.get("best", -math.inf)
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(torch.tensor(state["cuda_rng"], dtype=torch.uint8), device)
        log.info("resumed from %s at step %d (%.1f min trained)", resume_from, step, train_seconds / 60)
    if dist.rank > 0:  # each rank its own initial-slot noise, a function of (seed, rank, step)
        torch.manual_seed(tc.seed * 1_000_003 + dist.rank * 7_919 + step)

    def my_batch(step: int) -> dict:
        """This rank's share of the batch at ``step`` (the whole batch on one process), on the device."""
        index = batch_indices(step, tc.seed, tc.batch_size, len(train_set))[dist.rank::dist.world_size]
        return to_device(task.batch(train_set, index), device)

    if tc.compile:  # encoder, decoder, head; a warm-up step surfaces compiler failures (compilation.py)
        compile_model(model, lambda: forward_loss(model, task, my_batch(step), tc.precision), mode=tc.compile_mode)
    stepper = model  # what the training step calls: the model, or its DDP wrapper averaging gradients over ranks
    if dist.enabled:  # static_graph: the same parameters take part every step (some never: e.g. the unused slot
        #               distribution of a learned slot init), which DDP then handles without a per-step search
        stepper = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, static_graph=True)

    # TensorBoard imports all of TensorFlow when it is installed (seconds, and GBs of address space) just to write
    # event files; the marker module "tensorboard.compat.notf" makes it use its own small TF stub instead.
    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
    from torch.utils.tensorboard import SummaryWriter

    # rank 0 alone logs, evaluates and writes checkpoints; the other ranks only train
    writer = SummaryWriter(str(workdir / "tb")) if dist.main else None
    metrics_file = open(workdir / "metrics.jsonl", "a") if dist.main else None

    def record(kind: str, values: dict) -> None:
        if not dist.main:
            return
        row = {"kind": kind, "step": step, "train_seconds": round(train_seconds, 3), **values}
        metrics_file.write(json.dumps(row) + "\n")
        metrics_file.flush()
        for key, value in values.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                writer.add_scalar(f"{kind}/{key}", value, step)

    def check_weights() -> None:
        """The loss check covers the forward; a finite loss can still come with non-finite gradients and weights."""
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
            raise NonFiniteLossError(
                f"the weights became NaN or Inf by step {step}; stopped before using or writing them. The last "
                f"good checkpoint is kept at {workdir / 'checkpoints' / 'last.safetensors'} (try a lower train.lr "
                "or train.grad_clip)")

    def checkpoint(name: str, with_optimizer: bool) -> None:
        if not dist.main:
            return
        check_weights()
        state = {"step": step, "train_seconds": train_seconds, "best": best,
                 "torch_rng": torch.get_rng_state().tolist()}
        if device.type == "cuda":  # the initial-slot noise is drawn on the GPU
            state["cuda_rng"] = torch.cuda.get_rng_state(device).tolist()
        save_checkpoint(workdir / "checkpoints" / f"{name}.safetensors", model,
                        optimizer if with_optimizer else None, state, cfg.to_dict())

    def validate() -> dict:
        nonlocal best, last_eval_step
        last_eval_step = step
        if not dist.main:  # the others wait for rank 0's evaluation, outside their timed steps
            dist.barrier()
            return {}
        check_weights()
        result = task.evaluate(model, val_set, batch_size=max(tc.batch_size, 32), seed=tc.seed,
                               precision=tc.precision)
        record("val", result)
        bar.write(f"step {step:6d}  {train_seconds / 60:5.1f} min  val {task.format(result)}")
        if result[task.select_metric] > best:
            best = result[task.select_metric]
            checkpoint("best", with_optimizer=False)
        if tc.report_test:  # logged for learning curves only; the checkpoint is chosen on validation above
            record("test", task.evaluate(model, splits["test"], batch_size=max(tc.batch_size, 32), seed=tc.seed,
                                         precision=tc.precision))
        dist.barrier()
        return result

    # ---- loop --------------------------------------------------------------------------------------------------
    budget = tc.max_minutes * 60 if tc.max_minutes > 0 else math.inf
    next_eval_time = (train_seconds // (tc.eval_every_minutes * 60) + 1) * tc.eval_every_minutes * 60 \
        if tc.eval_every_minutes > 0 else math.inf
    desc = f"{cfg.name} ({tc.max_minutes:g}-min budget)" if tc.max_minutes > 0 else cfg.name
    bar = tqdm(total=tc.steps, initial=step, disable=not (progress and dist.main), dynamic_ncols=True, desc=desc)
    model.train()
    result: dict = {}
    last_eval_step = -1
    window_start, window_steps = time.perf_counter(), 0
    # the loss is checked every step on the CPU; on a GPU a flag collects it and is read (a sync) before every log,
    # evaluation and checkpoint (which also checks the weights), so that no non-finite state is saved. Under
    # torchrun every rank checks at the same steps and they agree (a NaN on any rank stops all), and the wall-clock
    # decisions (budget, evaluation period) use ``clock``, the slowest rank's training time, agreed every log_every
    # steps; rank 0's evaluations and checkpoints end in a barrier, outside the timed steps.
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    checked_step, clock = step, train_seconds

    def check_loss() -> None:
        nonlocal checked_step
        if dist.any(nonfinite):
            where = f"at step {step}" if step - checked_step <= 1 else f"between steps {checked_step + 1} and {step}"
            raise NonFiniteLossError(
                f"the training loss became NaN or Inf {where}; stopped. The last good checkpoint is kept at "
                f"{workdir / 'checkpoints' / 'last.safetensors'} (try a lower train.lr or train.grad_clip)"
            )
        checked_step = step

    try:
        while step < tc.steps and clock < budget:
            t0 = time.perf_counter()
            # lr
            lr = lr_at(step, tc)
            for group in optimizer.param_groups:
                group["lr"] = lr
            set_step(model, step)
            # step
            loss = train_step(stepper, optimizer, task, my_batch(step), tc.precision, tc.grad_clip)
            nonfinite |= ~torch.isfinite(loss)
            step += 1
            if not dist.enabled or step % tc.log_every == 0:  # under torchrun all ranks take the slowest's time
                clock = dist.max(train_seconds + time.perf_counter() - t0)
                if dist.enabled:
                    train_seconds = clock - (time.perf_counter() - t0)
            eval_due = (tc.eval_every_minutes > 0 and clock >= next_eval_time) \
                or (tc.eval_every_minutes <= 0 and tc.eval_every > 0 and step % tc.eval_every == 0)
            if device.type == "cpu" or step % tc.log_every == 0 or step % tc.checkpoint_every == 0 or eval_due:
                check_loss()  # before anything is logged or saved
            train_seconds += time.perf_counter() - t0
            if not dist.enabled:
                clock = train_seconds
            window_steps += 1
            bar.update(1)
            # log
            if step % tc.log_every == 0:
                elapsed = time.perf_counter() - window_start
                speed = window_steps * tc.batch_size / max(elapsed, 1e-9)
                record("train", {"loss": loss.item(), "lr": lr, "images_per_s": speed})
                bar.set_postfix(loss=f"{loss.item():.5f}", lr=f"{lr:.2e}", img_s=f"{speed:.0f}")
                window_start, window_steps = time.perf_counter(), 0
            # eval
            if eval_due:
                result = validate()
                next_eval_time += tc.eval_every_minutes * 60
                window_start, window_steps = time.perf_counter(), 0
            # checkpoint
            if step % tc.checkpoint_every == 0:
                checkpoint("last", with_optimizer=True)
                dist.barrier()  # the others wait for it outside their timed steps
        check_loss()
        if last_eval_step != step:
            result = validate()
        checkpoint("last", with_optimizer=True)
        dist.barrier()  # the other ranks wait for rank 0's last evaluation and checkpoint
    finally:
        bar.close()
        if dist.main:
            writer.close()
            metrics_file.close()
    stopped = "time budget" if clock >= budget else "step limit"
    log.info("finished at step %d after %.1f min of training (%s)", step, train_seconds / 60, stopped)
    return {**result, "step": step, "train_seconds": train_seconds}
