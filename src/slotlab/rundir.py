"""The one place that knows a slotlab run directory: its layout, atomic writes, and the writer's lock.

A run directory holds::

    config.json                    the resolved ExperimentConfig (written after a resumed checkpoint has loaded)
    data.json                      {"data", "val_data"}: the --data specs (null: the preset's built-in data)
    history.jsonl                  one line per start or resume: step, time, config changes and who allowed them
    metrics.jsonl                  one row per (kind, step): {"kind": "train" | "val" | "test", "step", ...}
    tb/                            TensorBoard event files (the same scalars)
    checkpoints/last.safetensors   the latest state (weights, Adam state, step, RNG)
    checkpoints/best.safetensors   the weights with the best validation score so far
    .lock                          {"pid", "host", "since", "started"} of the process writing the run (absent when
                                   none); "started" is the process's start time, so a reused PID is not taken for it

Every file is written atomically (a temporary file beside it, fsync, ``os.replace``): a kill or a full disk leaves
the previous version or the new one, never a partial file. Writers (train, --resume, demo, the converters) hold
the lock; readers (eval, viz) take none. A lock left by a dead process on this host is taken over.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from slotlab.config import ExperimentConfig

# errors of a path that cannot be written: one clear line naming the path, never a traceback
_WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG}


class WriteError(OSError):
    """A file or directory could not be written (disk full, read-only, no permission); nothing was replaced."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class LockedError(RuntimeError):
    """Another live process holds the lock of a run or output directory."""


class OutputRefusedError(FileExistsError):
    """``--out`` names something that slotlab will not replace (not its own output of that kind, or no --force)."""


def write_error(path: str | Path, err: OSError) -> OSError:
    """``err`` as a :class:`WriteError` naming ``path`` when it is a disk-full or permission error, else itself."""
    if isinstance(err, WriteError) or err.errno not in _WRITE_ERRNOS:
        return err
    return WriteError(err.errno, f"cannot write {path}: {os.strerror(err.errno)}; nothing already written was "
                                 "replaced or lost")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; after the body wrote it: fsync, then rename it onto ``path``.

    On any error the temporary file is removed and ``path`` keeps its previous content."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as err:
        raise write_error(path, err) from err
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if write_error(path, err) is err:
            raise
        raise write_error(path, err) from err
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


def remove_orphans(directory: Path) -> list[Path]:
    """Delete the temporary files that a killed atomic write left in ``directory`` (``.NAME.*.tmp``)."""
    removed = []
    for tmp in directory.glob(".*.tmp") if directory.is_dir() else []:
        if tmp.is_file():
            tmp.unlink()
            removed.append(tmp)
    return removed


# ---------------------------------------------------------------------------------------------------------------
# The lock


_HELD: dict[str, tuple[int, int]] = {}  # lock path -> (fd, depth): a process may take its own lock again


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks after boot, /proc/PID/stat field 22), None where unknown: with the
    PID it names one process, since a PID is reused after its process ends."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2:].split()[19]  # the fields after "(comm)", from field 3 on
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int, started: str | None = None) -> bool:
    """Whether process ``pid`` runs; with ``started`` (its recorded start time), whether it is still that process
    (not another one that was given the same PID later)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    now = _start_time(pid)
    return started is None or now is None or now == started


def _read_owner(path: Path) -> dict:
    try:
        owner = json.loads(path.read_text())
        return owner if isinstance(owner, dict) else {}
    except (OSError, ValueError):
        return {}


@contextmanager
def directory_lock(path: str | Path, what: str) -> Iterator[None]:
    """Hold the lock file ``path`` (for ``what``, named in the refusal) while the body runs.

    The file holds the owner's PID and host; the kernel's ``flock`` on it says whether the owner is alive, so a
    lock left by a killed process is taken over (and reported). A live owner gets :class:`LockedError`.
    """
    path = Path(path)
    key = str(path.resolve())
    if key in _HELD:  # this process holds it already (demo -> train)
        fd, depth = _HELD[key]
        _HELD[key] = (fd, depth + 1)
        try:
            yield
        finally:
            fd, depth = _HELD[key]
            _HELD[key] = (fd, depth - 1)
        return
    fd = _acquire(path, what)
    _HELD[key] = (fd, 1)
    try:
        yield
    finally:
        _HELD.pop(key, None)
        try:
            path.unlink()
        except OSError:
            pass
        os.close(fd)


def _acquire(path: Path, what: str) -> int:
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise write_error(path, err) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            owner = _read_owner(path)
            raise LockedError(
                f"{what} is in use by process {owner.get('pid', '?')} on {owner.get('host', '?')} (since "
                f"{owner.get('since', '?')}; lock {path}). Wait for it to finish, or stop it first") from None
        try:  # the file may have been removed by its previous owner between our open and our flock: retry
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        previous = _read_owner(path)
        if previous.get("pid") and previous.get("host") == socket.gethostname() \
                and _alive(int(previous["pid"]), previous.get("started")) and int(previous["pid"]) != os.getpid():
            os.close(fd)  # a live owner on a file system without flock: trust the PID
            raise LockedError(f"{what} is in use by process {previous['pid']} on {previous['host']} (lock {path})")
        if previous.get("pid"):
            import logging

            logging.getLogger(__name__).warning("took over the stale lock %s of process %s on %s (no longer "
                                                "running)", path, previous.get("pid"), previous.get("host"))
        owner = {"pid": os.getpid(), "host": socket.gethostname(),
                 "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "started": _start_time(os.getpid())}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(owner) + "\n").encode(), 0)
        return fd


def output_lock(out: str | Path):
    """The lock of an output directory written by renaming (a cache, a converted run): ``.NAME.lock`` beside it."""
    out = Path(out)
    return directory_lock(out.parent / f".{out.name}.lock", f"output directory {out}")


# ---------------------------------------------------------------------------------------------------------------
# What a directory is, and whether --out may replace it


def output_kind(path: Path) -> str | None:
    """"cache" (meta.json of a slotlab cache), "run" (config.json of a slotlab run) or None."""
    meta = path / "meta.json"
    if meta.is_file():
        try:
            content = json.loads(meta.read_text())
            if isinstance(content, dict) and "format_version" in content and "arrays" in content:
                return "cache"
        except (OSError, ValueError):
            return None
    if (path / "config.json").is_file():
        try:
            ExperimentConfig.load(path / "config.json")
            return "run"
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return None


def check_output(out: str | Path, kind: str, force: bool, sources: tuple = ()) -> None:
    """Refuse ``--out`` unless it is absent, an empty directory, or a slotlab ``kind`` output and ``force``.

    ``sources`` are input paths that must not lie inside ``out`` (a conversion never replaces its own input)."""
    out = Path(out)
    for source in sources:
        if Path(source).resolve().is_relative_to(out.resolve()):
            raise OutputRefusedError(f"--out {out} holds the input {source}; choose another --out")
    if not out.exists() and not out.is_symlink():
        return
    if out.is_dir() and not out.is_symlink() and not any(out.iterdir()):
        return
    found = output_kind(out) if out.is_dir() and not out.is_symlink() else None
    if found != kind:
        what = "a file" if not out.is_dir() else f"a slotlab {found}" if found else "not a slotlab output"
        raise OutputRefusedError(f"--out {out} exists and is {what}; slotlab replaces only a slotlab {kind} "
                                 f"directory (with --force). Choose another --out")
    if kind == "run" and (out / ".lock").is_file():
        with directory_lock(out / ".lock", f"run directory {out}"):
            pass  # raises LockedError while a live process writes it
    if not force:
        raise OutputRefusedError(f"--out {out} already holds a slotlab {kind}; pass --force to replace it")


# ---------------------------------------------------------------------------------------------------------------
# The run directory


class RunDir:
    """Paths and file operations of one run directory (module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config_path = self.path / "config.json"
        self.data_path = self.path / "data.json"
        self.history_path = self.path / "history.jsonl"
        self.metrics_path = self.path / "metrics.jsonl"
        self.checkpoints = self.path / "checkpoints"
        self.tb = self.path / "tb"
        self.lock_path = self.path / ".lock"

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def checkpoint(self, name: str) -> Path:
        """``checkpoints/<name>.safetensors`` ("last" or "best")."""
        return self.checkpoints / f"{name}.safetensors"

    def has_checkpoint(self) -> bool:
        return self.checkpoint("last").is_file()

    def lock(self):
        """The writer's lock of this run (a context manager; module docstring)."""
        return directory_lock(self.lock_path, f"run directory {self.path}")

    # -- config and records ------------------------------------------------------------------------------------

    def load_config(self) -> ExperimentConfig:
        if not self.path.is_dir():
            raise FileNotFoundError(f"run directory not found: {self.path}")
        return ExperimentConfig.load(self.config_path)

    def save_config(self, cfg: ExperimentConfig) -> None:
        atomic_write(self.config_path, json.dumps(cfg.to_dict(), indent=2) + "\n")

    def read_data_record(self) -> dict | None:
        """The --data specs of the run (None when data.json is absent: the built-in data)."""
        if not self.data_path.is_file():
            return None
        try:
            record = json.loads(self.data_path.read_text())
        except ValueError as err:
            raise ValueError(f"{self.data_path} is corrupt ({err}); it records the run's --data") from None
        if not isinstance(record, dict) or "data" not in record:
            raise ValueError(f"{self.data_path} is not a slotlab data record (expected {{'data', 'val_data'}})")
        return {"data": record.get("data"), "val_data": record.get("val_data")}

    def write_data_record(self, record: dict) -> None:
        atomic_write(self.data_path, json.dumps(record, indent=2) + "\n")

    def append_history(self, event: dict) -> None:
        """One line of history.jsonl (with the time); an append, flushed and synced."""
        row = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **event}
        try:
            with open(self.history_path, "a") as f:
                f.write(json.dumps(row) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:
            raise write_error(self.history_path, err) from err

    # -- metrics ----------------------------------------------------------------------------------------------

    def read_metrics(self) -> list[dict]:
        """The rows of metrics.jsonl (a line cut short by a kill is skipped)."""
        if not self.metrics_path.is_file():
            return []
        rows = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and "kind" in row and "step" in row:
                rows.append(row)
        return rows

    def trim_metrics(self, step: int) -> int:
        """Drop the rows after ``step`` (logged after the checkpoint a run resumes from); return how many."""
        if not self.metrics_path.is_file():
            return 0
        rows = self.read_metrics()
        kept = [r for r in rows if r["step"] <= step]
        lines = len(self.metrics_path.read_text().splitlines())
        if len(kept) != lines:
            atomic_write(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))
        return lines - len(kept)

    def open_metrics(self):
        """metrics.jsonl for appending rows (see :meth:`trim_metrics` for resuming)."""
        try:
            return open(self.metrics_path, "a")
        except OSError as err:
            raise write_error(self.metrics_path, err) from err

    # -- housekeeping -----------------------------------------------------------------------------------------

    def remove_orphans(self) -> list[Path]:
        """Delete the temporary files of atomic writes that a kill interrupted."""
        return remove_orphans(self.path) + remove_orphans(self.checkpoints)

    def check_new(self) -> None:
        """Refuse to start a new run in a directory that holds anything but a slotlab run (its ``config.json``):
        a new run writes ``config.json``, ``data.json`` and the rest, and removes ``.*.tmp`` files, so another
        program's files there would be overwritten or deleted. An absent or empty directory is fine."""
        if not self.path.exists():
            return
        if not self.path.is_dir():
            raise NotADirectoryError(f"--workdir {self.path} is a file, not a folder")
        others = sorted(p.name for p in self.path.iterdir() if p != self.lock_path)
        if others and output_kind(self.path) != "run":
            listing = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise OutputRefusedError(f"--workdir {self.path} holds files that are not a slotlab run ({listing}); "
                                     "a new run needs a new or empty folder, or a slotlab run directory")

    def prepare_new(self) -> None:
        """Create the directory of a new run (checking it can be written)."""
        try:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path / ".write_test", "")
            (self.path / ".write_test").unlink()
        except OSError as err:
            raise write_error(self.path, err) from err
