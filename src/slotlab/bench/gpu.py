"""GPU training-step benchmark (``slotlab bench gpu``): images/s of the paper presets per precision mode, printed as
tables, never pass/fail. Needs CUDA; nothing here runs in the tests.

One step is the training loop's :func:`slotlab.train.train_step` (forward, under bf16 autocast for the bf16 modes,
MSE, backward, fused Adam) with the loop's GPU settings: no per-step device sync (the finite-loss flag is only
accumulated; training reads it every ``log_every`` steps) and no NaN check of the images. Modes, all on the same
weights and the same fixed batch of random images in [-1, 1]:

- ``fp32 plain``: strict fp32 (TF32 off for matmuls and cuDNN) with every exact fast path off (the plain
  formulation, :func:`slotlab.nn.fast_paths.set_fast_paths`);
- ``fp32``: strict fp32, slotlab as shipped (fast paths on). This is the "eager fp32" baseline;
- ``fp32 torch-default``: PyTorch's own default, which runs cuDNN convolutions in TF32
  (``torch.backends.cudnn.allow_tf32`` is True out of the box) and matmuls in fp32;
- ``bf16``: ``train.precision=bf16`` (softmaxes, recomposition, loss in fp32: :mod:`slotlab.nn.precision`);
- ``bf16 + compile``: that plus ``train.compile`` (:mod:`slotlab.compilation`: encoder, decoder, and on a GPU Slot
  Attention with its plain path);
- ``bf16 + compile cudagraphs``: the same with ``train.compile_mode=reduce-overhead`` (CUDA graphs);
- ``fp32 + compile``: strict fp32 with ``train.compile``.

Modes are timed in interleaved rounds (each mode ``steps`` steps per round, CUDA events around the round, after
warm-up steps that include compilation). Reported per mode: median ms/step, images/s, the ratio to ``fp32``, the
peak GPU memory its steps allocate (above the resident weights; the H100 table in docs/performance.md predates
this and includes them), and the projected wall time of the paper's 500K-step schedule at that speed. Optional:
a parity table (each mode's reconstruction against ``fp32`` on the same input and initial slots) and a profile of
the heaviest CUDA kernels of a mode (``torch.profiler``), with the GPU's busy fraction of the step.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from slotlab.bench.train_step import make_train_step, parse_preset
from slotlab.compilation import compile_model
from slotlab.experiments import get_experiment
from slotlab.nn.fast_paths import set_fast_paths
from slotlab.nn.precision import autocast
from slotlab.tasks import build_model, get_task
from slotlab.train import forward_loss

log = logging.getLogger(__name__)

PAPER_STEPS = 500_000


@dataclass(frozen=True)
class Mode:
    precision: str  # "fp32" | "bf16"
    tf32_conv: bool = False
    fast: bool = True
    compile: str = ""  # "" = eager, else the torch.compile mode


MODES = {
    "fp32 plain": Mode("fp32", fast=False),
    "fp32": Mode("fp32"),
    "fp32 torch-default": Mode("fp32", tf32_conv=True),
    "bf16": Mode("bf16"),
    "bf16 + compile": Mode("bf16", compile="default"),
    "bf16 + compile cudagraphs": Mode("bf16", compile="reduce-overhead"),
    "fp32 + compile": Mode("fp32", compile="default"),
}
DEFAULT_MODES = ["fp32", "fp32 torch-default", "bf16", "bf16 + compile"]
BASELINE = "fp32"


def set_tf32(conv: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = conv


def parse_case(spec: str, batch: int) -> tuple[str, int]:
    """``NAME`` or ``NAME:BATCH`` -> (preset name, batch)."""
    return parse_preset(spec, batch, "bench gpu")


def build_steps(preset: str, batch: int, modes: list[str], device: torch.device, seed: int = 0
                ) -> tuple[dict[str, Callable[[], torch.Tensor]], dict[str, nn.Module], torch.Tensor]:
    """One model per mode (same initial weights), each with its own Adam, as step functions on one batch."""
    cfg = get_experiment(preset)
    task = get_task(cfg)
    torch.manual_seed(seed)
    reference = build_model(cfg.model)
    inputs = task.synthetic_batch(cfg.model, batch, device)
    images = inputs["image"]
    steps, models = {}, {}
    for name in modes:
        mode = MODES[name]
        model = build_model(cfg.model)
        model.load_state_dict(reference.state_dict())
        set_fast_paths(model.to(device), mode.fast)
        model.check_finite = False  # as train() on a GPU
        train = make_train_step(cfg, model, inputs, precision=mode.precision, lr=1e-4, fused=True)

        if mode.compile:
            set_tf32(mode.tf32_conv)
            group = compile_model(model, lambda model=model, mode=mode: forward_loss(
                model, task, inputs, mode.precision), mode=mode.compile)
            if group.failed:
                log.warning("%s: compilation failed; this mode runs eagerly", name)

        flag = torch.zeros((), dtype=torch.bool, device=device)

        def step(train=train, mode=mode, flag=flag) -> torch.Tensor:
            set_tf32(mode.tf32_conv)
            loss = train()
            flag |= ~torch.isfinite(loss)  # as train(): accumulated, read later
            return loss

        step.flag = flag  # type: ignore[attr-defined]
        steps[name], models[name] = step, model
    return steps, models, images


def time_modes(steps: dict[str, Callable], n_steps: int, rounds: int, warmup: int
               ) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Per mode: ms/step of each round (CUDA events), and the peak GPU memory (MiB) its steps allocate above what
    was already resident (all modes' weights and optimizer states)."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    torch.cuda.synchronize()
    times: dict[str, list[float]] = {name: [] for name in steps}
    peak: dict[str, float] = {}
    for r in range(rounds):
        names = list(steps)
        names = names[r % len(names):] + names[:r % len(names)]  # rotate the order each round
        for name in names:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            resident = torch.cuda.memory_allocated()  # every mode's weights and Adam state, held throughout
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(n_steps):
                steps[name]()
            end.record()
            torch.cuda.synchronize()
            times[name].append(start.elapsed_time(end) / n_steps)
            peak[name] = max(peak.get(name, 0.0), (torch.cuda.max_memory_allocated() - resident) / 2**20)
    return times, peak


@torch.no_grad()
def parity(models: dict[str, nn.Module], images: torch.Tensor) -> dict[str, tuple[float, float]]:
    """Each mode's reconstruction vs the ``fp32`` mode's on the same images and initial slots, from the models'
    current weights copied from ``fp32``'s: (max abs diff, relative L2 diff)."""
    torch.compiler.cudagraph_mark_step_begin()
    ref_model = models[BASELINE]
    ref_model.eval()
    slots = ref_model.slot_attention.init_slots(images.shape[0], ref_model.cfg.num_slots)
    set_tf32(False)
    reference = ref_model(images, slots=slots)["recon"].double()
    result = {}
    for name, model in models.items():
        mode = MODES[name]
        model.load_state_dict(ref_model.state_dict())
        model.eval()
        set_tf32(mode.tf32_conv)
        torch.compiler.cudagraph_mark_step_begin()
        with autocast(mode.precision, images.device):
            recon = model(images, slots=slots)["recon"].double()
        diff = recon - reference
        result[name] = (float(diff.abs().max()), float(diff.norm() / reference.norm()))
        model.train()
    ref_model.train()
    return result


def profile(step: Callable, n_steps: int = 3, top: int = 12) -> tuple[list[tuple[str, float, int]], float, float]:
    """The heaviest CUDA kernels of ``n_steps`` steps: ([(name, % of GPU time, calls per step)], GPU busy ms per
    step, wall ms per step)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    step()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start.record()
        for _ in range(n_steps):
            step()
        end.record()
        torch.cuda.synchronize()
    wall = start.elapsed_time(end) / n_steps
    kernels = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy_us = sum(e.self_device_time_total for e in kernels)
    kernels.sort(key=lambda e: e.self_device_time_total, reverse=True)
    rows = [(e.key, 100.0 * e.self_device_time_total / max(busy_us, 1e-9), e.count // n_steps) for e in kernels[:top]]
    return rows, busy_us / 1000 / n_steps, wall


def bench_gpu(cases: list[tuple[str, int]], modes: list[str], n_steps: int = 10, rounds: int = 3,
              warmup: int = 3, check_parity: bool = True, profile_modes: list[str] | None = None) -> list[dict]:
    """Run every case; one dict per case with ``rows`` (per mode), ``parity`` and ``profiles``."""
    if not torch.cuda.is_available():
        raise RuntimeError("bench gpu needs a CUDA GPU (torch.cuda.is_available() is False)")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"bench gpu: unknown modes {unknown}; expected some of {list(MODES)}")
    device = torch.device("cuda")
    results = []
    for preset, batch in cases:
        log.info("bench gpu: %s batch %d: building and warming up %s", preset, batch, ", ".join(modes))
        steps, models, images = build_steps(preset, batch, modes, device)
        times, peak = time_modes(steps, n_steps, rounds, warmup)
        bad = [name for name, step in steps.items() if bool(step.flag)]
        if bad:
            raise RuntimeError(f"bench gpu: {preset}: non-finite training loss in {bad}")
        base = statistics.median(times[BASELINE]) if BASELINE in times else None
        rows = []
        for name in modes:
            ms = statistics.median(times[name])
            rows.append({"mode": name, "ms": ms, "images_per_s": 1000 * batch / ms,
                         "vs_fp32": base / ms if base else None, "peak_mib": peak[name],
                         "paper_hours": PAPER_STEPS * ms / 1000 / 3600, "rounds_ms": times[name]})
        result = {"preset": preset, "batch": batch, "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                  "rows": rows, "parity": {}, "profiles": {}}
        if check_parity and BASELINE in models:
            result["parity"] = parity(models, images[: min(batch, 16)])
        for name in profile_modes or []:
            if name in steps:
                result["profiles"][name] = profile(steps[name])
        results.append(result)
        del steps, models
        torch.cuda.empty_cache()
    return results


def format_gpu_tables(results: list[dict]) -> str:
    """Markdown: a speed table per case, then parity and profiles."""
    lines = []
    for res in results:
        lines += [f"\n### {res['preset']}, batch {res['batch']} ({res['gpu']}, torch {res['torch']})\n",
                  "| mode | ms/step | images/s | vs fp32 | peak GPU MiB | 500K steps (h) |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in res["rows"]:
            ratio = f"{r['vs_fp32']:.2f}x" if r["vs_fp32"] else "-"
            lines.append(f"| {r['mode']} | {r['ms']:.1f} | {r['images_per_s']:.0f} | {ratio} | "
                         f"{r['peak_mib']:.0f} | {r['paper_hours']:.1f} |")
        if res["parity"]:
            lines += ["", "| mode | recon max abs diff vs fp32 | relative L2 |", "|---|---:|---:|"]
            lines += [f"| {name} | {a:.2e} | {r:.2e} |" for name, (a, r) in res["parity"].items()]
        for name, (rows, busy, wall) in res["profiles"].items():
            lines += ["", f"Profile of `{name}`: GPU busy {busy:.1f} ms of {wall:.1f} ms per step "
                          f"({100 * busy / wall:.0f}%)", "", "| kernel | % GPU time | calls/step |", "|---|---:|---:|"]
            lines += [f"| `{k[:90]}` | {p:.1f} | {c} |" for k, p, c in rows]
    return "\n".join(lines)
