"""Reliability probe: 39 cases a demanding user tries (bad --out targets, two writers, resume overrides, corrupt
checkpoints, signals, zero intervals, full disks, read-only places, bad inputs), each run in-process on the `tiny`
preset and classified as ok (a success that was due), clear (a one-line refusal or error, no traceback),
traceback (an exception escaped), silent (exit 0 where a refusal or another result was due), and whether data
the user owns was lost. Prints one line per case and a summary (docs/reliability.md).

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/reliability_probe.py
"""

import contextlib
import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from slotlab.cli import main

ROOT = Path(tempfile.mkdtemp(prefix="probe-"))
os.environ["SLOTLAB_CACHE"] = str(ROOT / "cache")
results = []


def run(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main([str(a) for a in argv])
        except BaseException as e:  # noqa
            return "exc", f"{type(e).__name__}: {e}"[:200]
    return rc, err.getvalue()


def case(name, expect, fn):
    d = ROOT / name.replace(" ", "_").replace("/", "_")
    d.mkdir()
    try:
        rc, err, lost, wrong = fn(d)
    except BaseException as e:  # noqa - the probe itself raised: count as a traceback of the library
        rc, err, lost, wrong = "exc", f"{type(e).__name__}: {e}"[:200], False, False
    if rc == "exc" or (isinstance(err, str) and "Traceback" in err):
        kind = "traceback"
    elif rc == 0:
        kind = "silent" if expect == "refuse" or wrong else "ok"
    else:
        kind = "clear" if expect == "refuse" else "error (expected success)"
    results.append((name, kind, lost, str(err).strip().splitlines()[-1][:150] if str(err).strip() else ""))


def tiny(d, *extra, name="run"):
    return run(["train", "--experiment", "tiny", "--workdir", d / name, "--no-progress", *extra])


def trained(d):
    rc, err = tiny(d)
    assert rc == 0, err
    return d / "run"


def gen(out, *extra):
    return run(["data", "generate", "tetrominoes", "--out", out, "--num", "24", *extra])


def records(path):
    from slotlab.data.tfrecord import encode_example, write_records

    rng = np.random.default_rng(0)
    recs = []
    for _ in range(3):
        mask = np.zeros((4, 35, 35, 1), np.uint8)
        mask[0] = 255
        recs.append(
            encode_example(
                {
                    "image": rng.integers(0, 255, (35, 35, 3), dtype=np.uint8),
                    "mask": mask,
                    **{
                        k: np.zeros(4 * w, np.float32)
                        for k, w in (("x", 1), ("y", 1), ("shape", 1), ("color", 3), ("visibility", 1))
                    },
                }
            )
        )
    write_records(path, recs)


# ---- 1. --out deletions
def out_notes(d):
    (d / "notes").mkdir()
    (d / "notes/todo.txt").write_text("x")
    rc, err = gen(d / "notes")
    return rc, err, not (d / "notes/todo.txt").is_file(), False


def out_file(d):
    (d / "f.txt").write_text("x")
    rc, err = gen(d / "f.txt")
    return rc, err, not (d / "f.txt").is_file(), False


def out_source(d):
    (d / "src").mkdir()
    records(d / "src/t.tfrecords")
    rc, err = run(["data", "convert", f"tetrominoes:{d / 'src/t.tfrecords'}", "--out", d / "src", "--no-progress"])
    return rc, err, not (d / "src/t.tfrecords").is_file(), False


def out_run(d):
    r = trained(d)
    rc, err = gen(r)
    return rc, err, not (r / "checkpoints/last.safetensors").is_file(), False


def out_cache_no_force(d):
    gen(d / "c", "--seed", "1")
    rc, err = gen(d / "c", "--seed", "2")
    return rc, err, False, json.loads((d / "c/meta.json").read_text())["seed"] != 1


# ---- 2. locks
def two_trainings(d):
    r = trained(d)
    code = (
        "from slotlab.cli import main; main(['train', '--experiment', 'tiny', "
        f"'--workdir', {str(r)!r}, '--resume', '--no-progress', '--set', 'train.steps=100000', '--set', "
        "'train.eval_every=0', '--set', 'train.checkpoint_every=100000'])"
    )
    size = (r / "metrics.jsonl").stat().st_size
    p = subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and (r / "metrics.jsonl").stat().st_size <= size + 200:
        time.sleep(0.2)
    rc, err = tiny(d, "--resume", "--set", "train.steps=8")
    p.send_signal(signal.SIGTERM)
    p.wait(60)
    return rc, err, False, False


# ---- 3. resume overrides
def resume_shape(d):
    r = trained(d)
    rc, err = tiny(d, "--resume", "--set", "model.slot_dim=32")
    rc2, _ = run(["eval", "--workdir", r, "--limit", "4"])
    return rc, err, rc2 != 0, False


def resume_meaning(d):
    trained(d)
    rc, err = tiny(d, "--resume", "--set", "model.num_slots=2", "--set", "train.steps=6")
    return rc, err, False, False


# ---- 4. stale data.json
def stale_data(d):
    gen(d / "c")
    tiny(d, "--data", f"cache:{d / 'c'}", "--set", "train.lr=1e30", "--set", "train.warmup_steps=0")
    tiny(d)
    rc, err = tiny(d, "--resume", "--set", "train.steps=6")
    rec = d / "run/data.json"
    switched = rec.is_file() and json.loads(rec.read_text()).get("data") is not None
    return rc, err, False, switched


# ---- 5. corrupt tensors
def flipped_bits(d):
    import struct

    r = trained(d)
    p = r / "checkpoints/best.safetensors"
    raw = bytearray(p.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    h = json.loads(raw[8 : 8 + n])
    a, _ = h["model.slot_attention.to_q.weight"]["data_offsets"]
    for i in range(32):
        raw[8 + n + a + 4 * i + 3] ^= 0x40
    p.write_bytes(bytes(raw))
    rc, err = run(["eval", "--workdir", r, "--limit", "4"])
    return rc, err, False, False


def nan_weight(d):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    r = trained(d)
    p = r / "checkpoints/last.safetensors"
    with safe_open(str(p), framework="pt") as f:
        meta = f.metadata()
    meta.pop("digests", None)
    t = load_file(p)
    t["model.slot_attention.to_q.weight"].view(-1)[0] = float("nan")
    save_file(t, str(p), metadata=meta)
    rc, err = tiny(d, "--resume", "--set", "train.steps=8")
    return rc, err, False, "train.lr" in err


def nan_no_ckpt_message(d):
    rc, err = tiny(d, "--set", "train.lr=1e30", "--set", "train.warmup_steps=0")
    wrong = "last.safetensors" in err and not (d / "run/checkpoints/last.safetensors").is_file()
    return (rc if not wrong else 0), err, False, wrong


# ---- 6. tracebacks
def ctrl_c(d):
    import slotlab.train as T

    real = T.train_step
    n = []

    def hit(*a, **k):
        n.append(1)
        if len(n) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **k)

    T.train_step = hit
    try:
        rc, err = tiny(d, "--set", "train.steps=6")
    finally:
        T.train_step = real
    d / "run/checkpoints/last.safetensors"
    return rc, err, False, False


def zero(key):
    return lambda d: (*tiny(d, "--set", f"train.{key}=0"), False, False)


def eval_json_dir(d):
    r = trained(d)
    (d / "o").mkdir()
    rc, err = run(["eval", "--workdir", r, "--limit", "4", "--json", d / "o"])
    return rc, err, False, False


def disk_full_ckpt(d):
    import slotlab.checkpoint as C

    r = trained(d)
    before = (r / "checkpoints/last.safetensors").read_bytes()
    real = C.save_file

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    C.save_file = full
    try:
        rc, err = tiny(d, "--resume", "--set", "train.steps=6")
    finally:
        C.save_file = real
    return rc, err, (r / "checkpoints/last.safetensors").read_bytes() != before, False


def disk_full_generate(d):
    gen(d / "c", "--seed", "1")
    real = np.save

    def full(f, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    np.save = full
    try:
        rc, err = gen(d / "c", "--seed", "2", "--force")
    finally:
        np.save = real
    return rc, err, not (d / "c/meta.json").is_file(), False


def read_only(what):
    def fn(d):
        import pathlib

        ro = d / "ro"
        ro.mkdir()
        real_mkdir, real_mkdtemp, real_mkstemp, real_open = (
            pathlib.Path.mkdir,
            tempfile.mkdtemp,
            tempfile.mkstemp,
            os.open,
        )

        def guard(f):
            def w(*a, **k):
                t = k.get("dir") or (a[0] if a else "")
                if str(t).startswith(str(ro)):
                    raise OSError(errno.EROFS, "Read-only file system", str(t))
                return f(*a, **k)

            return w

        pathlib.Path.mkdir, tempfile.mkdtemp, tempfile.mkstemp, os.open = (
            guard(real_mkdir),
            guard(real_mkdtemp),
            guard(real_mkstemp),
            guard(real_open),
        )
        try:
            if what == "cache_dir":
                rc, err = tiny(d, "--set", f"data.cache_dir={ro / 'cache'}")
            else:
                rc, err = gen(ro / "d")
        finally:
            pathlib.Path.mkdir, tempfile.mkdtemp, tempfile.mkstemp, os.open = (
                real_mkdir,
                real_mkdtemp,
                real_mkstemp,
                real_open,
            )
        return rc, err, False, False

    return fn


def not_examples(d):
    from slotlab.data.tfrecord import write_records

    write_records(d / "b.tfrecords", [b"\x0a\x05\x0a\x03\x0a\x01\xc3"])
    rc, err = run(["data", "convert", f"tetrominoes:{d / 'b.tfrecords'}", "--out", d / "c", "--no-progress"])
    return rc, err, False, False


# ---- 7. unclear errors / silent
def dtype(dt):
    def fn(d):
        from slotlab.runs import load_model

        m, cfg = load_model(trained(d))
        r = cfg.model.resolution
        m(torch.rand(2, 3, r, r).to(dt) * 2 - 1)
        return 0, "", False, False

    return fn


def eval_arg(flag):
    return lambda d: (*run(["eval", "--workdir", trained(d), flag, "0"]), False, False)


def viz_dir(d):
    r = trained(d)
    (d / "o").mkdir()
    err = io.StringIO()
    out = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = main(["viz", "--workdir", str(r), "--out", str(d / "o"), "--num-scenes", "2"])
    said = out.getvalue().split("wrote ")[-1].split(",")[0].strip()
    return rc, err.getvalue(), False, not Path(said).is_file()


def truncated_config(d):
    r = trained(d)
    t = (r / "config.json").read_text()
    (r / "config.json").write_text(t[: len(t) // 2])
    rc, err = run(["eval", "--workdir", r])
    return (rc if "config.json" in err else 0), err, False, "config.json" not in err


def bad_value(kv):
    return lambda d: (*tiny(d, "--set", kv), False, False)


def slots(kind):
    def fn(d):
        from slotlab.nn.slot_attention import SlotAttention

        sa = SlotAttention(num_slots=3, input_dim=8, slot_dim=8, num_iters=2, mlp_hidden_dim=16)
        s = torch.zeros(2, 0, 8) if kind == "K=0" else torch.full((2, 3, 8), float("nan"))
        try:
            sa(torch.randn(2, 5, 8), slots=s)
        except ValueError as e:
            return 2, str(e), False, False
        return 0, "", False, False

    return fn


def image_255(d):
    from slotlab.runs import load_model

    m, cfg = load_model(trained(d))
    r = cfg.model.resolution
    try:
        m(torch.rand(2, 3, r, r) * 255)
    except ValueError as e:
        return 2, str(e), False, False
    return 0, "", False, False


# ---- 8. minor
def metrics_repeat(d):
    tiny(d, "--set", "train.steps=2")
    r = d / "run"
    saved = (r / "checkpoints/last.safetensors").read_bytes()
    tiny(d, "--resume", "--set", "train.steps=4")
    (r / "checkpoints/last.safetensors").write_bytes(saved)
    rc, err = tiny(d, "--resume", "--set", "train.steps=4")
    rows = [json.loads(x) for x in (r / "metrics.jsonl").read_text().splitlines()]
    keys = [(x["kind"], x["step"]) for x in rows]
    return rc, err, False, len(keys) != len(set(keys))


def orphans(d):
    r = trained(d)
    o = r / "checkpoints/.last.safetensors.x.tmp"
    o.write_bytes(b"x")
    rc, err = tiny(d, "--resume", "--set", "train.steps=6")
    return rc, err, False, o.exists()


def omp(d):
    import slotlab.train as T

    os.environ["OMP_NUM_THREADS"] = "1"
    before = torch.get_num_threads()
    try:
        T.set_threads(0)
        got = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    return 0, "", False, got != 1


def budget_bar(d):
    from slotlab.config import apply_overrides
    from slotlab.experiments import get_experiment
    from slotlab.train import train

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        train(
            apply_overrides(
                get_experiment("tiny"), ["train.steps=100000", "train.max_minutes=0.002", "train.eval_every=0"]
            ),
            d / "run",
        )
    return 0, "", False, " min" not in err.getvalue()


CASES = [
    ("out: notes folder", "refuse", out_notes),
    ("out: a file", "refuse", out_file),
    ("out: source folder", "refuse", out_source),
    ("out: trained run", "refuse", out_run),
    ("out: cache without --force", "refuse", out_cache_no_force),
    ("two writers on one run", "refuse", two_trainings),
    ("resume --set model.slot_dim=32", "refuse", resume_shape),
    ("resume --set model.num_slots=2", "refuse", resume_meaning),
    ("stale data.json", "ok", stale_data),
    ("flipped weight bits", "refuse", flipped_bits),
    ("NaN weight in checkpoint", "refuse", nan_weight),
    ("NaN loss before any checkpoint", "refuse", nan_no_ckpt_message),
    ("Ctrl-C during training", "refuse", ctrl_c),
    ("train.log_every=0", "refuse", zero("log_every")),
    ("train.checkpoint_every=0", "refuse", zero("checkpoint_every")),
    ("train.decay_steps=0", "refuse", zero("decay_steps")),
    ("eval --json DIR", "ok", eval_json_dir),
    ("disk full during checkpoint", "refuse", disk_full_ckpt),
    ("disk full during data generate", "refuse", disk_full_generate),
    ("read-only data.cache_dir", "refuse", read_only("cache_dir")),
    ("read-only --out", "refuse", read_only("out")),
    ("record that is not an Example", "refuse", not_examples),
    ("float64 input", "ok", dtype(torch.float64)),
    ("float16 input", "ok", dtype(torch.float16)),
    ("bfloat16 input", "ok", dtype(torch.bfloat16)),
    ("eval --batch-size 0", "refuse", eval_arg("--batch-size")),
    ("eval --limit 0", "refuse", eval_arg("--limit")),
    ("viz --out DIR", "ok", viz_dir),
    ("truncated config.json", "refuse", truncated_config),
    ("train.batch_size=0", "refuse", bad_value("train.batch_size=0")),
    ("train.steps=-5", "refuse", bad_value("train.steps=-5")),
    ("train.lr=-0.01", "refuse", bad_value("train.lr=-0.01")),
    ("explicit slots K=0", "refuse", slots("K=0")),
    ("explicit slots NaN", "refuse", slots("NaN")),
    ("image in [0, 255]", "refuse", image_255),
    ("metrics.jsonl repeats after resume", "ok", metrics_repeat),
    ("orphan .tmp after a kill", "ok", orphans),
    ("num_threads=0 with OMP_NUM_THREADS=1", "ok", omp),
    ("budgeted progress bar", "ok", budget_bar),
]
for name, expect, fn in CASES:
    case(name, expect, fn)
    print(f"{results[-1][0]:40s} {results[-1][1]:10s} lost={results[-1][2]!s:5s} {results[-1][3]}", flush=True)
c = Counter(k for _, k, _, _ in results)
print("SUMMARY cases", len(results), dict(c), "data lost", sum(lost for _, _, lost, _ in results))
shutil.rmtree(ROOT, ignore_errors=True)
