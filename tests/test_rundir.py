"""The run directory: --out never deletes what is not slotlab's, the writer's lock, atomic writes on a full disk."""

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from slotlab.cli import main
from slotlab.data.tfrecord import encode_example, write_records


def _generate(out, *extra):
    return main(["data", "generate", "tetrominoes", "--out", str(out), "--num", "4", *extra])


def _tetromino_records(path, n=3):
    rng = np.random.default_rng(0)
    records = []
    for _ in range(n):
        mask = np.zeros((4, 35, 35), np.uint8)
        mask[0] = 255
        records.append(encode_example({
            "image": rng.integers(0, 255, (35, 35, 3), dtype=np.uint8), "mask": mask,
            **{k: np.zeros(4 * w, np.float32) for k, w in (("x", 1), ("y", 1), ("shape", 1), ("color", 3),
                                                           ("visibility", 1))}}))
    write_records(path, records)


@pytest.mark.parametrize("force", [False, True])
def test_out_never_replaces_what_is_not_a_slotlab_cache(tmp_path, capsys, force):
    flag = ["--force"] if force else []
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    assert _generate(notes, *flag) == 2
    assert (notes / "todo.txt").read_text() == "mine" and "not a slotlab output" in capsys.readouterr().err
    a_file = tmp_path / "file.txt"
    a_file.write_text("mine")
    assert _generate(a_file, *flag) == 2
    assert a_file.read_text() == "mine" and "is a file" in capsys.readouterr().err
    # a trained run directory is not a cache
    run = tmp_path / "run"
    assert main(["train", "--experiment", "tiny", "--workdir", str(run), "--no-progress",
                 "--set", "train.steps=2", "--set", "train.eval_every=0"]) == 0
    capsys.readouterr()
    assert _generate(run, *flag) == 2
    assert (run / "checkpoints" / "last.safetensors").is_file() and "slotlab run" in capsys.readouterr().err
    # the source TFRecord's own folder
    src = tmp_path / "src"
    src.mkdir()
    _tetromino_records(src / "t.tfrecords")
    assert main(["data", "convert", f"tetrominoes:{src / 't.tfrecords'}", "--out", str(src), "--no-progress",
                 *flag]) == 2
    assert (src / "t.tfrecords").is_file() and "--out" in capsys.readouterr().err


def test_out_replaces_a_cache_only_with_force(tmp_path, capsys):
    out = tmp_path / "d"
    assert _generate(out, "--seed", "1") == 0
    assert _generate(out, "--seed", "2") == 2
    assert "pass --force" in capsys.readouterr().err
    assert json.loads((out / "meta.json").read_text())["seed"] == 1
    assert _generate(out, "--seed", "2", "--force") == 0
    assert json.loads((out / "meta.json").read_text())["seed"] == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _generate(empty) == 0  # an empty folder holds nothing to lose
    assert not list(tmp_path.glob(".*"))  # no lock or temporary directory left behind


def test_convert_writes_a_cache_and_refuses_a_run(tmp_path, capsys):
    _tetromino_records(tmp_path / "t.tfrecords")
    out = tmp_path / "c"
    spec = f"tetrominoes:{tmp_path / 't.tfrecords'}"
    assert main(["data", "convert", spec, "--out", str(out), "--no-progress"]) == 0
    assert main(["data", "convert", spec, "--out", str(out), "--no-progress"]) == 2
    assert main(["data", "convert", spec, "--out", str(out), "--no-progress", "--force"]) == 0


def test_lock_refuses_a_second_writer_and_takes_over_a_stale_one(tmp_path):
    from slotlab.rundir import LockedError, RunDir

    run = RunDir(tmp_path / "run")
    code = ("import sys, time; from slotlab.rundir import RunDir; "
            f"lock = RunDir({str(run.path)!r}).lock(); lock.__enter__(); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        owner = json.loads(run.lock_path.read_text())
        assert owner["pid"] == holder.pid and owner["host"]
        with pytest.raises(LockedError, match=f"in use by process {holder.pid}"):
            with run.lock():
                pass
    finally:
        holder.kill()
        holder.wait()
    assert run.lock_path.is_file()  # left behind by the killed process: stale
    with run.lock():  # taken over
        assert json.loads(run.lock_path.read_text())["pid"] == os.getpid()
        with run.lock():  # the same process may take it again (demo -> train)
            pass
    assert not run.lock_path.exists()


def test_two_trainings_on_one_workdir_the_second_is_refused(tmp_path, capsys):
    """While another process trains in a run directory, train and --resume are refused and nothing changes."""
    run = tmp_path / "run"
    assert main(["train", "--experiment", "tiny", "--workdir", str(run), "--no-progress"]) == 0
    files = [run / "config.json", run / "metrics.jsonl", run / "checkpoints" / "last.safetensors"]
    before = [p.read_bytes() for p in files]
    code = ("import sys, time; from slotlab.cli import main; "
            f"main(['train', '--experiment', 'tiny', '--workdir', {str(run)!r}, '--resume', '--no-progress', "
            "'--set', 'train.steps=100000', '--set', 'train.checkpoint_every=100000', '--set', 'train.eval_every=0'])")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    live = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (run / ".lock").is_file() and live.poll() is None:
            time.sleep(0.1)
        time.sleep(0.5)
        fresh = main(["train", "--experiment", "tiny", "--workdir", str(run), "--no-progress"])
        resumed = main(["train", "--experiment", "tiny", "--workdir", str(run), "--resume", "--no-progress",
                        "--set", "train.steps=6"])
        err = capsys.readouterr().err
        assert fresh != 0 and resumed != 0
        assert err.count(f"is in use by process {live.pid}") == 2, err
        assert [p.read_bytes() for p in files[:1] + files[2:]] == before[:1] + before[2:]
    finally:
        live.send_signal(signal.SIGTERM)
        live.wait(timeout=60)


def test_full_disk_keeps_the_old_file_and_names_the_path(tmp_path, monkeypatch):
    from slotlab.rundir import WriteError, atomic_write

    target = tmp_path / "config.json"
    atomic_write(target, "old")

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(target), "write_bytes", full)
    with pytest.raises(WriteError, match=f"cannot write {target}: No space left on device"):
        atomic_write(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_full_disk_during_data_generate_is_one_clear_line(tmp_path, monkeypatch, capsys):
    out = tmp_path / "d"
    assert _generate(out, "--seed", "1") == 0
    real_save = np.save

    def full(file, *args, **kwargs):
        if "image" in str(file):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(file, *args, **kwargs)

    monkeypatch.setattr(np, "save", full)
    assert _generate(out, "--seed", "2", "--force") == 1
    err = capsys.readouterr().err
    assert f"cannot write {out}: No space left on device" in err and "Traceback" not in err
    assert json.loads((out / "meta.json").read_text())["seed"] == 1  # the old cache is whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


@pytest.fixture
def read_only(tmp_path, monkeypatch):
    """A folder that cannot be written: EROFS from every create under it (as a read-only mount gives, even root)."""
    import pathlib
    import tempfile

    ro = tmp_path / "ro"
    ro.mkdir()

    def guard(fn):
        def wrapped(*args, **kwargs):
            target = kwargs.get("dir") or (args[0] if args else "")
            if str(target).startswith(str(ro)):
                raise OSError(errno.EROFS, "Read-only file system", str(target))
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(pathlib.Path, "mkdir", guard(pathlib.Path.mkdir))
    monkeypatch.setattr(tempfile, "mkdtemp", guard(tempfile.mkdtemp))
    monkeypatch.setattr(tempfile, "mkstemp", guard(tempfile.mkstemp))
    monkeypatch.setattr(os, "open", guard(os.open))
    return ro


def test_read_only_out_and_cache_dir_are_one_clear_line(tmp_path, read_only, capsys):
    assert _generate(read_only / "d") == 1
    assert main(["train", "--experiment", "tiny", "--workdir", str(read_only / "run"), "--no-progress"]) == 1
    assert main(["train", "--experiment", "tiny", "--workdir", str(tmp_path / "run"), "--no-progress",
                 "--set", f"data.cache_dir={read_only / 'cache'}"]) == 1
    err = capsys.readouterr().err
    assert err.count("Read-only file system") == 3 and "Traceback" not in err
    for name in (".d.lock", "run", "cache"):
        assert f"cannot write {read_only / name}" in err, err


def test_convert_official_tf_out_is_protected_and_atomic(tmp_path, monkeypatch, capsys):
    """The converter's --out rules, with the TensorFlow reading replaced by a tiny converted model."""
    from slotlab.config import apply_overrides
    from slotlab.experiments import get_experiment
    from slotlab.interop import official_tf
    from slotlab.tasks import get_task

    cfg = apply_overrides(get_experiment("tiny"), [])
    monkeypatch.setattr(official_tf, "read_tf_checkpoint", lambda path: ({}, str(path)))
    monkeypatch.setattr(official_tf, "convert", lambda *a, **k: (get_task(cfg).build_model(cfg), cfg))
    src, out = tmp_path / "tf", tmp_path / "run"
    src.mkdir()
    convert = ["convert", "official-tf", str(src), "--out", str(out)]
    assert main(convert) == 0 and (out / "checkpoints" / "best.safetensors").is_file()
    assert main(["eval", "--workdir", str(out), "--limit", "2"]) == 0
    assert main(convert) == 2 and "pass --force" in capsys.readouterr().err
    assert main([*convert, "--force"]) == 0
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("mine")
    assert main([*convert[:4], str(notes), "--force"]) == 2 and (notes / "a.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes", "run", "tf"]  # no temporary folder left


def test_a_stale_lock_whose_pid_was_reused_is_taken_over(tmp_path):
    """A lock left by a dead process whose PID now belongs to another live process (here: a sleeping child, named
    in the lock with the start time the dead owner had) is stale, not in use."""
    from slotlab.rundir import RunDir

    run = RunDir(tmp_path / "run")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run.path.mkdir(parents=True)
        run.lock_path.write_text(json.dumps({"pid": other.pid, "host": socket.gethostname(), "since": "earlier",
                                             "started": "1"}) + "\n")  # not the live process's start time
        with run.lock():
            assert json.loads(run.lock_path.read_text())["pid"] == os.getpid()
        run.lock_path.write_text(json.dumps({"pid": other.pid, "host": socket.gethostname()}) + "\n")
        from slotlab.rundir import LockedError

        with pytest.raises(LockedError):  # an old lock without a start time: the live PID is trusted
            with run.lock():
                pass
    finally:
        other.kill()
        other.wait()
