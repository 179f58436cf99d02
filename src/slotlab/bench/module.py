"""Benchmarks that print tables (never pass/fail): the Slot Attention module's forward + backward.

Three implementations of identical mathematics, timed in interleaved rounds (fast, plain, slot-attention, then the
next round in a rotated order), so that a shared machine's load hits all of them alike:

- ``slotlab fast``: :class:`slotlab.SlotAttention` (the default fast path, :mod:`slotlab.nn.fast_attention`);
- ``slotlab plain``: the same module with ``fast=False`` (k, v projections; autograd backward);
- ``slot-attention``: lucidrains' ``slot_attention.SlotAttention`` (PyPI), whose weights the slotlab module copies
  (``SlotAttention.from_lucidrains``: q/k/v with bias, LayerNorm eps 1e-5).

One step = forward + backward of ``slots.sum()`` with inputs requiring grad. Reported: the median wall time per
step, the median of the per-round ratios (what we quote), process CPU seconds per step (user + system, all threads),
achieved GFLOP/s (the analytic FLOP count of the plain formulation, :func:`plain_flops`, over wall time), and the
peak resident-memory growth during one step, measured in a fresh subprocess (Linux VmHWM after resetting it
through /proc/self/clear_refs, minus VmRSS before the step; elsewhere the growth of ``resource``'s max RSS).
Glossary: B batch, N inputs, D dim, K slots, T iterations.
"""

from __future__ import annotations

import json
import logging
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)

# (B, N, D, K): the paper's four settings
SHAPES = {
    "clevr6": (8, 128 * 128, 64, 7),
    "multi_dsprites": (32, 64 * 64, 64, 6),
    "tetrominoes": (64, 35 * 35, 64, 4),
    "set_prediction": (64, 32 * 32, 64, 10),
}
IMPLS = ("slotlab fast", "slotlab plain", "slot-attention")
NUM_ITERS, MLP_HIDDEN = 3, 128


def parse_shape(spec: str) -> tuple[int, int, int, int]:
    """A preset name from :data:`SHAPES` or ``BxNxDxK`` (e.g. ``8x16384x64x7``)."""
    if spec in SHAPES:
        return SHAPES[spec]
    parts = spec.lower().split("x")
    if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"bench: shape must be one of {sorted(SHAPES)} or BxNxDxK, got {spec!r}")
    return tuple(int(p) for p in parts)  # type: ignore[return-value]


def plain_flops(B: int, N: int, D: int, K: int, T: int = NUM_ITERS, H: int = MLP_HIDDEN) -> float:
    """Multiply-adds x 2 of one forward + backward of the plain formulation (backward = 2 x forward).

    Forward: k and v projections 2 * 2BND^2; per iteration the logits and the weighted sum 2 * 2BKND, the q
    projection 2BKD^2, the GRU 2BK * 6D^2, the MLP 2BK * 2DH. Softmax, LayerNorm and element-wise work not counted.
    """
    forward = 4 * B * N * D * D + T * (4 * B * K * N * D + 2 * B * K * (D * D + 6 * D * D + 2 * D * H))
    return 3.0 * forward


def build(shape: tuple[int, int, int, int], seed: int = 0) -> tuple[dict[str, Callable[[], None]], torch.Tensor]:
    """The three implementations with the same weights, as step functions on one shared input (B, N, D)."""
    try:
        import slot_attention
    except ImportError as err:
        raise RuntimeError("slotlab bench module times slotlab against the slot-attention package: pip install "
                           "slot-attention==1.5.2 (it comes with slotlab[test])") from err

    from slotlab.nn.slot_attention import SlotAttention

    B, N, D, K = shape
    torch.manual_seed(seed)
    theirs = slot_attention.SlotAttention(num_slots=K, dim=D, iters=NUM_ITERS, hidden_dim=MLP_HIDDEN)
    fast = SlotAttention.from_lucidrains(theirs)
    plain = SlotAttention.from_lucidrains(theirs)
    plain.fast = False
    for ours in (fast, plain):
        ours.check_finite = False  # lucidrains does not check; time the same work
    fast.fast_min_inputs = 0  # the fast path at every size (the module's default takes the plain one below 2048)
    x = torch.randn(B, N, D, requires_grad=True)

    def step(module: torch.nn.Module, slotlab: bool) -> Callable[[], None]:
        def run() -> None:
            out = module(x)
            (out["slots"] if slotlab else out).sum().backward()
            x.grad = None
            module.zero_grad(set_to_none=True)

        return run

    steps = {"slotlab fast": step(fast, True), "slotlab plain": step(plain, True),
             "slot-attention": step(theirs, False)}
    return steps, x


def time_rounds(steps: dict[str, Callable[[], None]], rounds: int) -> dict[str, dict[str, list[float]]]:
    """Interleaved rounds, the order rotated each round; per implementation the wall and CPU seconds per step."""
    names = list(steps)
    for name in names:  # warm-up: allocator, MKL and autograd caches
        steps[name]()
    times = {name: {"wall": [], "cpu": []} for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            wall, cpu = time.perf_counter(), time.process_time()
            steps[name]()
            times[name]["cpu"].append(time.process_time() - cpu)
            times[name]["wall"].append(time.perf_counter() - wall)
    return times


def peak_rss_mb(shape: tuple[int, int, int, int], impl: str, threads: int) -> float:
    """Peak resident-memory growth (MB) during one forward + backward, in a fresh subprocess (max RSS delta)."""
    code = ("import os; os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE'); import sys, json; "
            "from slotlab.bench.module import _peak_rss_child; "
            "print(json.dumps(_peak_rss_child(*json.loads(sys.argv[1]))))")
    args = json.dumps([list(shape), impl, threads])
    done = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def _peak_rss_child(shape: list[int], impl: str, threads: int) -> float:
    torch.set_num_threads(threads)
    steps, _ = build(tuple(shape))
    try:  # Linux: reset the peak (VmHWM) to the current RSS, so that the import's peak does not hide the step's
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _proc_status_kb("VmRSS")
        steps[impl]()
        return (_proc_status_kb("VmHWM") - before) / 1024
    except OSError:  # elsewhere: growth of the lifetime peak (0 when the import peaked higher)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        steps[impl]()
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def bench_module(shapes: list[tuple[int, int, int, int]], threads: list[int], rounds: int = 5,
                 memory: bool = True) -> list[dict]:
    """One row per (threads, shape, implementation): medians, ratios to the fast path, CPU time, GFLOP/s, memory."""
    rows = []
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        for shape in shapes:
            log.info("bench module: %d thread(s), shape %s, %d rounds", n_threads, shape, rounds)
            steps, _ = build(shape)
            times = time_rounds(steps, rounds)
            flops = plain_flops(*shape)
            fast = times["slotlab fast"]["wall"]
            for name in IMPLS:
                wall = times[name]["wall"]
                rows.append({
                    "threads": n_threads, "shape": shape, "impl": name,
                    "wall_ms": 1e3 * statistics.median(wall),
                    "cpu_s": statistics.median(times[name]["cpu"]),
                    "ratio_to_fast": statistics.median(w / f for w, f in zip(wall, fast, strict=True)),
                    "gflops": flops / statistics.median(wall) / 1e9,
                    "peak_mb": peak_rss_mb(shape, name, n_threads) if memory else None,
                    "rounds": rounds,
                })
    return rows


def format_module_table(rows: list[dict]) -> str:
    """Markdown: one table per thread count, one line per shape and implementation."""
    out = []
    for n_threads in sorted({r["threads"] for r in rows}):
        out += [f"\n**{n_threads} thread(s)**, forward + backward, T = {NUM_ITERS}, fp32, median of "
                f"{rows[0]['rounds']} interleaved rounds\n",
                "| shape (B, N, D, K) | implementation | wall ms | x slower than fast (median of rounds) "
                "| CPU s | GFLOP/s | peak RSS growth MB |",
                "|---|---|---:|---:|---:|---:|---:|"]
        for r in (r for r in rows if r["threads"] == n_threads):
            mem = "-" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"
            out.append(f"| {r['shape']} | {r['impl']} | {r['wall_ms']:.1f} | {r['ratio_to_fast']:.2f} "
                       f"| {r['cpu_s']:.3f} | {r['gflops']:.1f} | {mem} |")
    return "\n".join(out).lstrip("\n")
