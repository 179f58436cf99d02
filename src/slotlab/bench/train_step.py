"""Training-step benchmark (``slotlab bench train``): images/s of a full step, printed as tables, never pass/fail.

One step = :func:`make_train_step` (as training: forward, the task's loss, backward, Adam update), in fp32, on a
fixed batch of random images in [-1, 1].
Three implementations per preset, timed in interleaved rounds (the order rotated each round, as in
:mod:`slotlab.bench.module`), so that a shared machine's load hits them alike:

- ``slotlab``: the autoencoder as shipped (every exact fast path on: :mod:`slotlab.nn.fast_paths`);
- ``slotlab plain``: the same model and weights with every fast path off (``set_fast_paths(model, False)``):
  k/v projections and autograd's backward in Slot Attention, the literal broadcast + conv decoder stem, NCHW
  convs, autograd's mask softmax and recomposition;
- ``keras official``: the official architecture in Keras 2 (:mod:`slotlab.interop.official_keras`; full-resolution
  broadcast decoder for the Multi-dSprites / Tetrominoes presets), a ``tf.function`` step with Adam.

TensorFlow fixes its thread pools when it starts, so each thread count runs in a fresh subprocess (torch threads
= TF intra-op threads = n, TF inter-op threads = 1); the same subprocess measures the fp32 matmul peak.
Reported per row: median ms/step, images/s, the median of the per-round ratios to ``slotlab``, process CPU
seconds per step (user + system, all threads), achieved GFLOP/s of the *plain* formulation's analytic FLOP count
(:func:`train_flops`) and its fraction of the matmul peak, and the peak memory (:func:`peak_rss_mb`).
Glossary: B batch, K slots, N inputs, D slot dim, T iterations, H, W image size.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

from slotlab.bench.module import _proc_status_kb, time_rounds
from slotlab.config import ExperimentConfig, ModelConfig
from slotlab.experiments import get_experiment
from slotlab.nn.fast_paths import set_fast_paths
from slotlab.tasks import build_model, get_task
from slotlab.train import train_step

log = logging.getLogger(__name__)

TRAIN_IMPLS = ("slotlab", "slotlab plain", "keras official")
Case = tuple[str, dict, int]  # (label, ExperimentConfig.to_dict(), batch size): picklable for the subprocess


def parse_preset(spec: str, batch: int, command: str) -> tuple[str, int]:
    """``NAME`` or ``NAME:BATCH`` (e.g. ``clevr6:2``) -> (preset name, batch); ``command`` names the benchmark in
    errors. The preset's task must have a synthetic batch of images (the benchmarks' step and FLOP count; video
    presets are profiled with ``benchmarks/profile_train.py``)."""
    name, _, b = spec.partition(":")
    if b and not (b.isdigit() and int(b) > 0):
        raise ValueError(f"{command}: preset must be NAME or NAME:BATCH, got {spec!r}")
    cfg = get_experiment(name)
    task = get_task(cfg)
    if task.synthetic_batch is None or task.input_key != "image":
        raise ValueError(f"{command}: {name!r} is a {cfg.model.task} preset, which this benchmark does not cover")
    return name, int(b) if b else batch


def parse_case(spec: str, batch: int) -> Case:
    """``NAME`` or ``NAME:BATCH`` (e.g. ``clevr6:2``) -> (label, config dict, batch)."""
    name, batch = parse_preset(spec, batch, "bench train")
    return name, get_experiment(name).to_dict(), batch


def train_flops(cfg: ModelConfig, batch: int) -> float:
    """FLOPs of one training step of the plain formulation: conv, linear and GRU multiply-adds counted by hooks on
    one forward, plus Slot Attention's two products per iteration (2BKND), x 2 FLOPs per multiply-add, x 3 for
    forward + backward. Softmax, normalisation, element-wise work and the optimiser are not counted."""
    model = set_fast_paths(build_model(cfg), False)
    macs = 0

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, nn.ConvTranspose2d):  # every input pixel meets every tap of every output channel
            macs += inputs[0].numel() * module.out_channels * module.weight[0, 0].numel()
        elif isinstance(module, nn.Conv2d):
            macs += output.numel() * module.weight[0].numel()
        elif isinstance(module, nn.Linear):
            macs += output.numel() * module.in_features
        elif isinstance(module, nn.GRUCell):
            macs += inputs[0].shape[0] * 3 * module.hidden_size * (module.input_size + module.hidden_size)

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    with torch.no_grad():
        model(torch.zeros(1, 3, cfg.resolution, cfg.resolution))
    for h in hooks:
        h.remove()
    n_inputs = model.encoder.feature_resolution[0] * model.encoder.feature_resolution[1]
    macs += cfg.num_iters * 2 * cfg.num_slots * n_inputs * cfg.slot_dim  # logits and weighted sum, per image
    return 2.0 * 3.0 * macs * batch


def make_train_step(cfg: ExperimentConfig, model: nn.Module, batch: dict[str, torch.Tensor], *,
                    precision: str | None = None, lr: float | None = None,
                    fused: bool = False) -> Callable[[], torch.Tensor]:
    """The training step every benchmark times, exactly as training runs it: :func:`slotlab.train.train_step`
    (the forward under ``precision``, default ``cfg.train.precision``; the task's loss; backward; an Adam update
    with ``lr``, default ``cfg.train.lr``, and ``cfg.train.adam_eps``; ``fused`` Adam on a GPU) on one fixed
    ``batch`` on the model's device. The step returns the detached loss (no device sync); ``step.model`` is
    ``model``."""
    task = get_task(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr if lr is None else lr, eps=cfg.train.adam_eps,
                                 fused=fused)
    precision = cfg.train.precision if precision is None else precision

    def step() -> torch.Tensor:
        return train_step(model, optimizer, task, batch, precision)

    step.model = model  # type: ignore[attr-defined]
    return step


def synthetic_step(cfg: ExperimentConfig, batch_size: int, *, fast: bool = True, seed: int = 0,
                   **options) -> Callable[[], torch.Tensor]:
    """:func:`make_train_step` of a fresh model of ``cfg`` (weights from ``seed``, fast paths ``fast``) on the
    task's synthetic batch (:attr:`slotlab.tasks.Task.synthetic_batch`) of ``batch_size``; ``options`` as there."""
    task = get_task(cfg)
    torch.manual_seed(seed)
    model = set_fast_paths(task.build_model(cfg), fast)
    model.train()
    return make_train_step(cfg, model, task.synthetic_batch(cfg.model, batch_size), **options)


def keras_unsupported(cfg: ModelConfig) -> str | None:
    """Why the official Keras architecture cannot express ``cfg`` (None when it can)."""
    if cfg.decoder not in ("upsample", "broadcast"):
        return f"decoder={cfg.decoder!r}"
    if cfg.attention != "slot" or cfg.mask_source != "decoder" or cfg.slot_init != "random":
        return "slotlab-only options (attention / mask_source / slot_init)"
    if cfg.encoder_kernel != 5 or any(s != 1 for s in cfg.encoder_strides) or len(cfg.encoder_strides) != 4:
        return "encoder other than four 5x5 stride-1 convs"
    if not cfg.encoder_mlp_dim == cfg.decoder_channels == cfg.encoder_channels:
        return "the official model has one channel width for encoder, MLP and decoder"
    return None


def keras_step(cfg: ExperimentConfig, batch: int, seed: int = 0) -> Callable[[], None]:
    """The official architecture (official_keras.py) with the preset's sizes: a tf.function step with Adam."""
    import numpy as np
    import tensorflow as tf

    from slotlab.interop import official_keras as ok

    m = cfg.model
    tf.random.set_seed(seed)
    extra = {"decoder_layers": m.decoder_layers} if m.decoder == "broadcast" else \
        {"decoder_initial_size": (m.broadcast_size, m.broadcast_size)}
    network = ok.build_model("discovery", (m.resolution, m.resolution), batch, num_slots=m.num_slots,
                             num_iterations=m.num_iters, channels=m.encoder_channels, slot_size=m.slot_dim,
                             mlp_hidden_size=m.mlp_hidden_dim, decoder=m.decoder, **extra)
    optimizer = ok.keras.optimizers.legacy.Adam(learning_rate=cfg.train.lr, epsilon=cfg.train.adam_eps)
    rng = np.random.default_rng(seed)
    image = tf.constant(rng.uniform(-1, 1, (batch, m.resolution, m.resolution, 3)).astype(np.float32))

    @tf.function
    def train_step(images):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(network(images, training=True)["recon"] - images))
        grads = tape.gradient(loss, network.trainable_variables)
        optimizer.apply_gradients(zip(grads, network.trainable_variables, strict=True))
        return loss

    return lambda: train_step(image).numpy()  # .numpy() waits for the step to finish


def configure_tensorflow(threads: int) -> bool:
    """TF intra-op threads = ``threads``, inter-op 1; False (with a warning) if TF already started elsewhere."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        return True
    except RuntimeError:
        log.warning("TensorFlow already started: its thread pools keep their earlier sizes")
        return False


def keras_available() -> str | None:
    """None if TensorFlow and tf_keras import, else the reason."""
    try:
        import tensorflow  # noqa: F401
        import tf_keras  # noqa: F401
    except ImportError as err:
        return f"not installed ({err.name})"
    return None


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Best fp32 GFLOP/s of an n x n x n matmul at the current torch thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2.0 * n**3 / best / 1e9


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def build_steps(case: Case, keras: bool) -> tuple[dict[str, Callable[[], None]], dict[str, str]]:
    """The step functions of one case, and for each implementation that cannot run, the reason."""
    _, cfg_dict, batch = case
    cfg = ExperimentConfig.from_dict(cfg_dict)
    steps = {"slotlab": synthetic_step(cfg, batch, fast=True, precision="fp32"),
             "slotlab plain": synthetic_step(cfg, batch, fast=False, precision="fp32")}
    skipped = {}
    reason = keras_available() if keras else "skipped (--no-keras)"
    reason = reason or keras_unsupported(cfg.model)
    if reason is None:
        steps["keras official"] = keras_step(cfg, batch)
    else:
        skipped["keras official"] = reason
    return steps, skipped


def time_cases(cases: list[Case], threads: int, rounds: int, keras: bool = True, peak_n: int = 2048) -> list[dict]:
    """In this process: one row per (case, implementation) at ``threads`` threads (see the module docstring)."""
    torch.set_num_threads(threads)
    if keras and keras_available() is None:
        configure_tensorflow(threads)
    peak = matmul_peak_gflops(peak_n)
    rows = []
    for case in cases:
        label, cfg_dict, batch = case
        log.info("bench train: %s, batch %d, %d thread(s), %d rounds", label, batch, threads, rounds)
        steps, skipped = build_steps(case, keras)
        times = time_rounds(steps, rounds)
        flops = train_flops(ExperimentConfig.from_dict(cfg_dict).model, batch)
        ours = times["slotlab"]["wall"]
        for name in TRAIN_IMPLS:
            row = {"preset": label, "batch": batch, "threads": threads, "impl": name, "rounds": rounds,
                   "matmul_peak": peak, "skipped": skipped.get(name)}
            if name in times:
                wall = statistics.median(times[name]["wall"])
                row.update(wall_ms=1e3 * wall, images_per_s=batch / wall, gflops=flops / wall / 1e9,
                           cpu_s=statistics.median(times[name]["cpu"]),
                           ratio=statistics.median(w / o for w, o in zip(times[name]["wall"], ours, strict=True)))
            rows.append(row)
    return rows


def peak_rss_mb(case: Case, impl: str, threads: int) -> float:
    """Peak resident memory of a training step above the built model (MB), in a fresh subprocess: after one warm-up
    step (optimizer state, TF tracing), Linux VmHWM is reset (/proc/self/clear_refs) and one more step is run;
    reported is VmHWM minus VmRSS measured right after the model was built."""
    return float(_run_child("_memory_child", [case, impl, threads]))


def _memory_child(case: Case, impl: str, threads: int) -> float:
    torch.set_num_threads(threads)
    if impl == "keras official":
        configure_tensorflow(threads)
    steps, _ = build_steps(case, impl == "keras official")
    rss_built = _proc_status_kb("VmRSS")
    steps[impl]()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    steps[impl]()
    return (_proc_status_kb("VmHWM") - rss_built) / 1024


def _run_child(function: str, args: list) -> object:
    """Run ``slotlab.bench.train_step.<function>(*args)`` in a fresh Python; its JSON result is the last stdout line."""
    code = ("import sys, json; import slotlab.bench.train_step as b; "
            f"print(json.dumps(b.{function}(*json.loads(sys.argv[1]))))")
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
           "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    done = subprocess.run([sys.executable, "-c", code, json.dumps(args)], stdout=subprocess.PIPE, text=True,
                          check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_train(cases: list[Case], threads: list[int], rounds: int = 5, memory: bool = True,
                keras: bool = True) -> list[dict]:
    """All thread counts, each in a fresh subprocess; peak memory (first thread count only) in one per cell."""
    rows: list[dict] = []
    for n in threads:
        rows += _run_child("time_cases", [cases, n, rounds, keras])  # type: ignore[operator]
    for row in rows:
        row["peak_mb"] = None
        if memory and row["threads"] == threads[0] and row["skipped"] is None:
            case = next(c for c in cases if c[0] == row["preset"] and c[2] == row["batch"])
            log.info("bench train: peak memory of %s, %s", row["preset"], row["impl"])
            row["peak_mb"] = peak_rss_mb(case, row["impl"], threads[0])
    return rows


def format_train_table(rows: list[dict]) -> str:
    """Markdown: one table per thread count, one line per preset and implementation."""
    out = []
    for n in sorted({r["threads"] for r in rows}):
        sel = [r for r in rows if r["threads"] == n]
        out += [f"\n**{n} thread(s)**, fp32, median of {sel[0]['rounds']} interleaved rounds; measured fp32 matmul "
                f"peak {sel[0]['matmul_peak']:.0f} GFLOP/s (2048^3, best of 5)\n",
                "| preset (batch) | implementation | ms/step | images/s | x slower than slotlab (median of rounds) "
                "| CPU s/step | GFLOP/s | % of matmul peak | peak RSS MB |",
                "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in sel:
            head = f"| {r['preset']} ({r['batch']}) | {r['impl']} |"
            if r["skipped"]:
                out.append(f"{head} not run: {r['skipped']} | | | | | | | |")
                continue
            mem = "-" if r.get("peak_mb") is None else f"{r['peak_mb']:.0f}"
            out.append(f"{head} {r['wall_ms']:.0f} | {r['images_per_s']:.1f} | {r['ratio']:.2f} | {r['cpu_s']:.2f} "
                       f"| {r['gflops']:.1f} | {100 * r['gflops'] / r['matmul_peak']:.0f}% | {mem} |")
    return "\n".join(out).lstrip("\n")


def steps_per_second(preset: str, num_threads: int, seconds: float) -> dict:
    """Training steps/s of ``preset`` at its own batch size with the training loop's thread rule
    (``train.set_threads``: 0 = the default), after 3 warm-up steps. For the busy-core table
    (benchmarks/busy_core.py), which runs this in fresh processes with different OMP_WAIT_POLICY values."""
    from slotlab.train import set_threads

    cfg = get_experiment(preset)
    set_threads(num_threads)
    step = synthetic_step(cfg, cfg.train.batch_size, precision="fp32")
    for _ in range(3):
        step()
    n, wall, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - wall < seconds:
        step()
        n += 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"threads": torch.get_num_threads(), "steps_per_s": n / wall, "cpu_s_per_step": cpu / n,
            "batch": cfg.train.batch_size}
