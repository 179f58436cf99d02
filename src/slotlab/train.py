"""Training loop for both tasks (object discovery, set prediction): reads top to bottom (build, then a loop: lr,
step, log, eval, checkpoint). What differs between the tasks (model, data, loss, metrics) comes from ``tasks.py``;
the run directory's layout and files from ``rundir.py``.

``--resume`` continues from ``checkpoints/last.safetensors`` with the same data order, RNG and time budget, so a
killed run loses at most ``checkpoint_every`` steps; Ctrl-C or SIGTERM writes a checkpoint first and loses none.
Config changes on resume are checked against the checkpoint before anything is written (``resume.py``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import threading
import time
import types
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from slotlab.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from slotlab.compilation import compile_model
from slotlab.config import ExperimentConfig, validate_train_config
from slotlab.curricula import (
    check_curricula,
    check_curriculum_data,
    low_resolution_twin,
    paint_out_objects,
    param_groups,
    resize_images,
)
from slotlab.distributed import setup
from slotlab.nn.models import set_step
from slotlab.nn.precision import autocast, check_precision, resolve_precision
from slotlab.resume import check_changes, config_changes
from slotlab.rundir import RunDir, write_error
from slotlab.tasks import get_task

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The training loss or the weights became NaN or Inf; the last good checkpoint is kept."""


class TrainingInterrupted(RuntimeError):
    """Ctrl-C or SIGTERM stopped training after a checkpoint was written; ``signum`` is the signal."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


# ---------------------------------------------------------------------------------------------------------------
# Small pure helpers


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


def available_cores() -> int:
    """``OMP_NUM_THREADS`` when set, else the cores this process may run on (its CPU affinity, e.g. a cgroup)."""
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity on this platform
        return max(1, os.cpu_count() or 1)


def set_threads(num_threads: int) -> None:
    """torch's intra-op threads: ``num_threads``, or (0) :func:`available_cores`."""
    torch.set_num_threads(num_threads if num_threads > 0 else available_cores())


# ---------------------------------------------------------------------------------------------------------------
# The pieces of a run: its state, its log, its signals, its progress bar


@dataclass
class TrainState:
    """What a checkpoint carries besides the weights: where the run is."""

    step: int = 0
    train_seconds: float = 0.0
    best: float = -math.inf


class Logbook:
    """metrics.jsonl and TensorBoard, written by rank 0 only (the other ranks hold a no-op logbook)."""

    def __init__(self, run: RunDir, enabled: bool, purge_step: int | None) -> None:
        self.run, self.enabled = run, enabled
        self.file = self.writer = None
        if enabled:
            # TensorBoard imports all of TensorFlow when it is installed (seconds, and GBs of address space) just
            # to write event files; the marker module "tensorboard.compat.notf" makes it use its own small stub.
            sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
            from torch.utils.tensorboard import SummaryWriter

            self.file = run.open_metrics()
            self.writer = SummaryWriter(str(run.tb), purge_step=purge_step)

    def record(self, kind: str, state: TrainState, values: dict) -> None:
        if not self.enabled:
            return
        row = {"kind": kind, "step": state.step, "train_seconds": round(state.train_seconds, 3), **values}
        try:
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()
        except OSError as err:
            raise write_error(self.run.metrics_path, err) from err
        for key, value in values.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"{kind}/{key}", value, state.step)

    def close(self) -> None:
        if self.enabled:
            self.writer.close()
            try:
                self.file.close()
            except OSError:
                pass


class StopSignals:
    """While active, Ctrl-C (SIGINT) and SIGTERM only set ``signum``: the loop then writes a checkpoint and stops.
    A second signal interrupts at once."""

    def __init__(self) -> None:
        self.signum = 0

    def _handle(self, signum, frame) -> None:
        if self.signum:
            raise KeyboardInterrupt
        self.signum = signum

    @contextmanager
    def active(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


class Progress:
    """The progress bar: steps of the step limit, or (with a time budget) minutes of the budget, the step beside."""

    def __init__(self, cfg: ExperimentConfig, state: TrainState, enabled: bool) -> None:
        tc = cfg.train
        self.budgeted = tc.max_minutes > 0
        self.steps = tc.steps
        if self.budgeted:
            self.bar = tqdm(total=tc.max_minutes, initial=round(state.train_seconds / 60, 2), unit="min",
                            disable=not enabled, dynamic_ncols=True, desc=f"{cfg.name} ({tc.max_minutes:g}-min budget)",
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:g} min [{elapsed}<{remaining}"
                                       "{postfix}]")
        else:
            self.bar = tqdm(total=tc.steps, initial=state.step, disable=not enabled, dynamic_ncols=True, desc=cfg.name)

    def update(self, state: TrainState, clock: float) -> None:
        if self.budgeted:
            self.bar.update(min(clock / 60, self.bar.total) - self.bar.n)
        else:
            self.bar.update(1)

    def show(self, state: TrainState, **values) -> None:
        if self.budgeted:
            values = {"step": f"{state.step}/{self.steps}", **values}
        self.bar.set_postfix(values)

    def write(self, line: str) -> None:
        self.bar.write(line)

    def close(self) -> None:
        self.bar.close()


# ---------------------------------------------------------------------------------------------------------------
# Starting a run: a new one, or a resumed one checked against its checkpoint


def last_good(run: RunDir) -> str:
    """Where the last good checkpoint is (every written checkpoint was checked), for error messages."""
    last = run.checkpoint("last")
    if not last.is_file():
        return "No checkpoint was written yet (nothing to resume)"
    try:
        step = read_metadata(last)["state"].get("step", "?")
    except (OSError, ValueError):
        return f"The checkpoint {last} could not be read"
    return f"The last good checkpoint is kept: {last} (step {step}; continue with --resume)"


def check_resume(run: RunDir, cfg: ExperimentConfig, data_record: dict | None, allow: tuple[str, ...]) -> dict:
    """Compare ``cfg`` and the data with the checkpoint the run resumes from; raise before anything is written.
    Returns the changes ({key: [before, after]}) to record in history.jsonl."""
    last = run.checkpoint("last")
    if not last.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {last}; start a new run without --resume")
    meta = read_metadata(last)
    saved = ExperimentConfig.from_dict(meta["config"]) if meta["config"] else run.load_config()
    changes = config_changes(saved, cfg)
    saved_data = meta["state"].get("data", run.read_data_record())
    if data_record is not None and saved_data is not None and data_record != saved_data:
        changes["data"] = [saved_data, data_record]
    elif data_record is not None and saved_data is None and data_record.get("data") is not None:
        changes["data"] = [None, data_record]
    check_changes(changes, allow, str(last))
    return changes


def start_run(run: RunDir, cfg: ExperimentConfig, resume: bool, data_record: dict | None,
              allow: tuple[str, ...]) -> dict:
    """Rank 0, holding the lock: check a resume (nothing written yet) or that a new run may use the directory (no
    other program's files), clean orphan temporary files, and create a new run (config.json). Returns the resume's
    config changes."""
    if resume:
        changes = check_resume(run, cfg, data_record, allow)
    elif run.has_checkpoint():
        raise FileExistsError(f"{run.path} already holds a run ({run.checkpoint('last')}); pass --resume or choose "
                              "a new --workdir")
    else:
        run.check_new()
        changes = {}
    for orphan in run.remove_orphans():
        log.info("removed %s, left by a killed write", orphan)
    if not resume:
        run.prepare_new()
        run.save_config(cfg)
    return changes


def restore(run: RunDir, cfg: ExperimentConfig, model, optimizer, device: torch.device, changes: dict,
            allow: tuple[str, ...], data_record: dict) -> TrainState:
    """Load ``last.safetensors`` (verified) into ``model`` and ``optimizer`` and the RNG; only then write the
    config, the data record, the history line, and drop the metrics logged after that checkpoint."""
    last = run.checkpoint("last")
    meta = load_checkpoint(last, model, optimizer)
    groups = param_groups(model, cfg.train)
    for group, configured in zip(optimizer.param_groups, groups, strict=False):
        group["fused"] = device.type == "cuda"  # the checkpoint's groups may come from another device
        if isinstance(configured, dict):  # the configured learning-rate scales, not the checkpoint's
            group["lr_scale"] = configured["lr_scale"]
    saved = meta["state"]
    state = TrainState(saved["step"], saved["train_seconds"], saved.get("best", -math.inf))
    torch.set_rng_state(torch.tensor(saved["torch_rng"], dtype=torch.uint8))
    if device.type == "cuda" and "cuda_rng" in saved:
        torch.cuda.set_rng_state(torch.tensor(saved["cuda_rng"], dtype=torch.uint8), device)
    run.save_config(cfg)
    if run.read_data_record() != data_record:
        run.write_data_record(data_record)
    run.append_history({"event": "resume", "step": state.step, "changes": changes, "allowed": sorted(allow),
                        "checkpoint_verified": meta["verified"]})
    dropped = run.trim_metrics(state.step)
    log.info("resumed from %s at step %d (%.1f min trained%s)", last, state.step, state.train_seconds / 60,
             f"; {dropped} metrics rows after it dropped" if dropped else "")
    return state


# ---------------------------------------------------------------------------------------------------------------
# The trainer: what the loop calls


class Trainer:
    """The built run (model, optimizer, data, log) and the operations the loop calls at its labelled sections."""

    def __init__(self, cfg, run, dist, task, model, optimizer, splits, logbook, data_record) -> None:
        self.cfg, self.tc, self.run, self.dist, self.task = cfg, cfg.train, run, dist, task
        self.model, self.optimizer, self.splits, self.logbook = model, optimizer, splits, logbook
        self.data_record = data_record
        self.device = dist.device
        self.state = TrainState()
        self.stepper = model  # what the step calls: the model, or its DDP wrapper (set by the caller)
        self.progress: Progress | None = None
        self.last_eval_step = -1
        self.twin = None
        if self.tc.low_res_steps > 0:
            with torch.random.fork_rng():  # building it draws initial weights: the run's RNG stream is kept
                self.twin = low_resolution_twin(model, cfg, self.tc.low_res)

    def batch(self, step: int) -> dict:
        """This rank's share of the batch at ``step`` (the whole batch on one process), on the device."""
        train_set = self.splits["train"]
        index = batch_indices(step, self.tc.seed, self.tc.batch_size, len(train_set))
        index = index[self.dist.rank::self.dist.world_size]
        batch = self.task.batch(train_set, index)
        if step < self.tc.object_curriculum_steps:  # slotlab.curricula: all but n objects painted out
            batch["image"] = paint_out_objects(batch["image"], train_set.labels[index], step,
                                               self.tc.object_curriculum_steps, self.tc.seed)
        if step < self.tc.low_res_steps:  # progressive resolution: the twin's smaller images
            batch["image"] = resize_images(batch["image"], self.tc.low_res)
        return to_device(batch, self.device)

    def step_model(self, step: int) -> torch.nn.Module:
        """What the step at ``step`` runs: the low-resolution twin early in progressive resolution, else the model
        (or its DDP wrapper)."""
        return self.twin if self.twin is not None and step < self.tc.low_res_steps else self.stepper

    def check_weights(self) -> None:
        """The loss check covers the forward; a finite loss can still come with non-finite gradients and weights."""
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            raise NonFiniteLossError(
                f"the weights became NaN or Inf by step {self.state.step}; stopped before using or writing them. "
                f"{last_good(self.run)} (try a lower train.lr or train.grad_clip)")

    def check_loss(self, nonfinite: torch.Tensor, checked_step: int) -> int:
        """Raise if the flag of a non-finite loss is set on any rank; return the step now checked."""
        step = self.state.step
        if self.dist.any(nonfinite):
            where = f"at step {step}" if step - checked_step <= 1 else f"between steps {checked_step + 1} and {step}"
            raise NonFiniteLossError(f"the training loss became NaN or Inf {where}; stopped. {last_good(self.run)} "
                                     "(try a lower train.lr or train.grad_clip)")
        return step

    def checkpoint(self, name: str, with_optimizer: bool) -> None:
        """Write ``checkpoints/<name>.safetensors`` (rank 0), after checking the weights."""
        if not self.dist.main:
            return
        self.check_weights()
        s = self.state
        state = {"step": s.step, "train_seconds": s.train_seconds, "best": s.best,
                 "torch_rng": torch.get_rng_state().tolist(), "data": self.data_record}
        if self.device.type == "cuda":  # the initial-slot noise is drawn on the GPU
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device).tolist()
        save_checkpoint(self.run.checkpoint(name), self.model, self.optimizer if with_optimizer else None, state,
                        self.cfg.to_dict())

    def validate(self) -> dict:
        """Evaluate on the validation split (rank 0), record it, keep the best checkpoint; the others wait."""
        self.last_eval_step = self.state.step
        if not self.dist.main:  # the others wait for rank 0's evaluation, outside their timed steps
            self.dist.barrier()
            return {}
        self.check_weights()
        tc, task = self.tc, self.task
        result = task.evaluate(self.model, self.splits["val"], batch_size=max(tc.batch_size, 32), seed=tc.seed,
                               precision=tc.precision)
        self.logbook.record("val", self.state, result)
        self.progress.write(f"step {self.state.step:6d}  {self.state.train_seconds / 60:5.1f} min  "
                            f"val {task.format(result)}")
        if result[task.select_metric] > self.state.best:
            self.state.best = result[task.select_metric]
            self.checkpoint("best", with_optimizer=False)
        if tc.report_test:  # logged for learning curves only; the checkpoint is chosen on validation above
            self.logbook.record("test", self.state, task.evaluate(
                self.model, self.splits["test"], batch_size=max(tc.batch_size, 32), seed=tc.seed,
                precision=tc.precision))
        self.dist.barrier()
        return result

    def interrupt(self, signum: int) -> None:
        """After Ctrl-C / SIGTERM: write the last checkpoint and stop with how to resume."""
        self.checkpoint("last", with_optimizer=True)
        self.dist.barrier()
        name = signal.Signals(signum).name
        raise TrainingInterrupted(
            f"{name}: stopped at step {self.state.step} after writing {self.run.checkpoint('last')}. Continue with: "
            f"slotlab train --experiment {self.cfg.name} --workdir {self.run.path} --resume", signum)


# ---------------------------------------------------------------------------------------------------------------
# train()


def train(cfg: ExperimentConfig, workdir: str | Path, *, resume: bool = False, progress: bool = True,
          splits: dict | None = None, data_record: dict | None = None, allow_change: tuple[str, ...] = ()) -> dict:
    """Train ``cfg`` in ``workdir``; return the final validation metrics (with ``step`` and ``train_seconds``).

    ``splits`` replaces the preset's built-in data; ``data_record`` says where it came from (data.json, also kept
    in the checkpoints; default ``{"data": None}`` for the built-in data, ``"python"`` for given splits);
    ``allow_change`` lists the meaning-changing changes a resume accepts (``resume.py``). Rank 0 holds the run's
    lock while it runs.
    """
    validate_train_config(cfg.train)
    check_precision(cfg.train.precision)
    if data_record is None:
        data_record = {"data": None if splits is None else "python", "val_data": None}
    run = RunDir(workdir)
    dist = setup(cfg.train.device)  # one process, or this rank of a torchrun job (distributed.py)
    try:
        with run.lock() if dist.main else nullcontext():
            return _train(cfg, run, resume, progress, splits, dist, data_record, tuple(allow_change))
    finally:
        dist.close()


def _build(cfg: ExperimentConfig, run: RunDir, resume: bool, splits: dict | None, dist, data_record: dict | None,
           allow: tuple[str, ...]) -> Trainer:
    """Everything before the loop: the run checked or created, data, model, optimizer, restored state, logbook."""
    tc = cfg.train
    if tc.batch_size % dist.world_size:
        raise ValueError(f"train.batch_size={tc.batch_size} (the global batch) must divide by the "
                         f"{dist.world_size} processes")
    check_curricula(cfg, distributed=dist.enabled)  # before anything is written
    changes = start_run(run, cfg, resume, data_record, allow) if dist.main else {}
    dist.barrier()
    set_threads(tc.num_threads)
    log.info("precision: %s (%s)", *resolve_precision(tc.precision, dist.device))
    torch.manual_seed(tc.seed)  # the same initial weights on every rank
    task = get_task(cfg)
    if splits is None:  # under torchrun rank 0 generates (and caches) the built-in data first, the others read it
        if dist.main:
            splits = task.splits(cfg)
        dist.barrier()
        if not dist.main:
            splits = task.splits(cfg)
    if tc.object_curriculum_steps > 0:
        check_curriculum_data(splits["train"])
    if splits["train"].resolution != cfg.model.resolution:
        raise ValueError(f"data is {splits['train'].resolution}px but model.resolution={cfg.model.resolution}")
    device = dist.device
    model = task.build_model(cfg).to(device)
    if device.type == "cuda":  # no per-step device sync: data are uint8 scenes, and a NaN shows in the loss check
        model.check_finite = False
    # fused Adam on a GPU: one kernel for every parameter (same update rule)
    optimizer = torch.optim.Adam(param_groups(model, tc), lr=0.0, eps=tc.adam_eps, fused=device.type == "cuda")
    state = TrainState()
    if resume:  # every rank loads the checkpoint; rank 0 alone then writes the config and the history
        state = restore(run, cfg, model, optimizer, device, changes, allow, data_record) if dist.main else \
            _load_state(run, model, optimizer, device)
    elif dist.main:  # the data are known good now: record them
        run.write_data_record(data_record)
        run.append_history({"event": "start", "step": 0, "experiment": cfg.name, "data": data_record})
    if dist.rank > 0:  # each rank its own initial-slot noise, a function of (seed, rank, step)
        torch.manual_seed(tc.seed * 1_000_003 + dist.rank * 7_919 + state.step)
    logbook = Logbook(run, dist.main, purge_step=state.step + 1 if resume else None)
    trainer = Trainer(cfg, run, dist, task, model, optimizer, splits, logbook, data_record)
    trainer.state = state
    if tc.compile:  # encoder, decoder, head; a warm-up step surfaces compiler failures (compilation.py)
        compile_model(model, lambda: forward_loss(model, task, trainer.batch(state.step), tc.precision),
                      mode=tc.compile_mode)
    if dist.enabled:  # static_graph: the same parameters take part every step (some never: e.g. the unused slot
        #               distribution of a learned slot init), which DDP then handles without a per-step search
        trainer.stepper = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, static_graph=True)
    return trainer


def _load_state(run: RunDir, model, optimizer, device) -> TrainState:
    """A non-zero rank's resume: the weights, the optimizer and the step (rank 0 writes the run's files)."""
    meta = load_checkpoint(run.checkpoint("last"), model, optimizer)
    for group in optimizer.param_groups:
        group["fused"] = device.type == "cuda"
    s = meta["state"]
    return TrainState(s["step"], s["train_seconds"], s.get("best", -math.inf))


def _train(cfg: ExperimentConfig, run: RunDir, resume: bool, progress: bool, splits: dict | None, dist,
           data_record: dict | None, allow: tuple[str, ...]) -> dict:
    tc = cfg.train
    # ---- build -------------------------------------------------------------------------------------------------
    trainer = _build(cfg, run, resume, splits, dist, data_record, allow)
    model, optimizer, state, device = trainer.model, trainer.optimizer, trainer.state, trainer.device

    # ---- loop --------------------------------------------------------------------------------------------------
    budget = tc.max_minutes * 60 if tc.max_minutes > 0 else math.inf
    next_eval_time = (state.train_seconds // (tc.eval_every_minutes * 60) + 1) * tc.eval_every_minutes * 60 \
        if tc.eval_every_minutes > 0 else math.inf
    bar = trainer.progress = Progress(cfg, state, progress and dist.main)
    model.train()
    result: dict = {}
    window_start, window_steps = time.perf_counter(), 0
    # the loss is checked every step on the CPU; on a GPU a flag collects it and is read (a sync) before every log,
    # evaluation and checkpoint (which also checks the weights), so that no non-finite state is saved. Under
    # torchrun every rank checks at the same steps and they agree (a NaN on any rank stops all), and the wall-clock
    # decisions (budget, evaluation period) use ``clock``, the slowest rank's training time, agreed every log_every
    # steps; rank 0's evaluations and checkpoints end in a barrier, outside the timed steps. A stop signal is
    # agreed the same way.
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    checked_step, clock = state.step, state.train_seconds
    signals = StopSignals()
    try:
        with signals.active():
            while state.step < tc.steps and clock < budget:
                t0 = time.perf_counter()
                # lr
                lr = lr_at(state.step, tc)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)
                set_step(model, state.step)
                # step
                stepper = trainer.step_model(state.step)
                if stepper is trainer.twin:
                    set_step(stepper, state.step)
                loss = train_step(stepper, optimizer, trainer.task, trainer.batch(state.step), tc.precision,
                                  tc.grad_clip)
                nonfinite |= ~torch.isfinite(loss)
                state.step += 1
                step = state.step
                if not dist.enabled or step % tc.log_every == 0:  # under torchrun all ranks take the slowest's time
                    clock = dist.max(state.train_seconds + time.perf_counter() - t0)
                    if dist.enabled:
                        state.train_seconds = clock - (time.perf_counter() - t0)
                eval_due = (tc.eval_every_minutes > 0 and clock >= next_eval_time) \
                    or (tc.eval_every_minutes <= 0 and tc.eval_every > 0 and step % tc.eval_every == 0)
                if device.type == "cpu" or step % tc.log_every == 0 or step % tc.checkpoint_every == 0 or eval_due:
                    checked_step = trainer.check_loss(nonfinite, checked_step)  # before anything is logged or saved
                state.train_seconds += time.perf_counter() - t0
                if not dist.enabled:
                    clock = state.train_seconds
                window_steps += 1
                bar.update(state, clock)
                # log
                if step % tc.log_every == 0:
                    elapsed = time.perf_counter() - window_start
                    speed = window_steps * tc.batch_size / max(elapsed, 1e-9)
                    trainer.logbook.record("train", state, {"loss": loss.item(), "lr": lr, "images_per_s": speed})
                    bar.show(state, loss=f"{loss.item():.5f}", lr=f"{lr:.2e}", img_s=f"{speed:.0f}")
                    window_start, window_steps = time.perf_counter(), 0
                # eval
                if eval_due:
                    result = trainer.validate()
                    next_eval_time += tc.eval_every_minutes * 60
                    window_start, window_steps = time.perf_counter(), 0
                # checkpoint
                if step % tc.checkpoint_every == 0:
                    trainer.checkpoint("last", with_optimizer=True)
                    dist.barrier()  # the others wait for it outside their timed steps
                # stop signal (Ctrl-C, SIGTERM): every step alone, every log_every steps under torchrun
                if not dist.enabled or step % tc.log_every == 0:
                    stop = dist.any(torch.tensor(signals.signum > 0))
                    if stop:
                        checked_step = trainer.check_loss(nonfinite, checked_step)
                        trainer.interrupt(signals.signum or signal.SIGTERM)
            trainer.check_loss(nonfinite, checked_step)
            if trainer.last_eval_step != state.step:
                result = trainer.validate()
            trainer.checkpoint("last", with_optimizer=True)
            dist.barrier()  # the other ranks wait for rank 0's last evaluation and checkpoint
    finally:
        bar.close()
        trainer.logbook.close()
    stopped = "time budget" if clock >= budget else "step limit"
    log.info("finished at step %d after %.1f min of training (%s)", state.step, state.train_seconds / 60, stopped)
    return {**result, "step": state.step, "train_seconds": state.train_seconds}
