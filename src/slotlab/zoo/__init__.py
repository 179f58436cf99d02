"""The model zoo: trained models shipped inside the package, loaded by name (``slotlab.load("tetrominoes")``).

Each entry is a directory ``slotlab/zoo/<name>/`` holding

- ``model.safetensors``: the weights only (tensors ``model.<parameter>``, no optimizer state), loadable like a
  checkpoint and never executing code;
- ``config.json``: the resolved experiment config, as a run directory writes it;
- ``card.md``: the model card (data, steps, wall time, machine, curves, test metrics, the command that made it).

``SLOTLAB_ZOO=DIR`` (or the ``root`` argument) reads entries from another directory instead. :func:`add_entry`
makes an entry from a run directory's best checkpoint (``slotlab zoo add RUN_DIR --name NAME``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from slotlab.checkpoint import load_checkpoint, save_checkpoint
from slotlab.config import ExperimentConfig
from slotlab.rundir import RunDir

WEIGHTS, CONFIG, CARD = "model.safetensors", "config.json", "card.md"
ZOO_ENV = "SLOTLAB_ZOO"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


def zoo_root(root: str | Path | None = None) -> Path:
    """Where the entries live: ``root``, else ``$SLOTLAB_ZOO``, else this package directory."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get(ZOO_ENV) or Path(__file__).parent)


def entries(root: str | Path | None = None) -> list[str]:
    """The names of the entries (directories holding ``model.safetensors``), sorted."""
    base = zoo_root(root)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / WEIGHTS).is_file())


def entry_dir(name: str, root: str | Path | None = None) -> Path:
    """The directory of the entry ``name``; KeyError listing the zoo when there is none."""
    path = zoo_root(root) / name
    if not _NAME.match(name) or not (path / WEIGHTS).is_file():
        names = entries(root)
        listing = ", ".join(names) if names else "none yet"
        raise KeyError(f"no model named {name!r} in the zoo ({zoo_root(root)}); available: {listing}. "
                       "A run directory is loaded by its path.")
    return path


def weights_file(directory: str | Path, checkpoint: str = "best") -> Path:
    """The weights of a zoo entry directory (``model.safetensors``) or of a run directory
    (``checkpoints/<checkpoint>.safetensors``, else best, else last)."""
    directory = Path(directory)
    if (directory / WEIGHTS).is_file():
        return directory / WEIGHTS
    run = RunDir(directory)
    for name in dict.fromkeys((checkpoint, "best", "last")):
        if run.checkpoint(name).is_file():
            return run.checkpoint(name)
    raise FileNotFoundError(f"{directory}: no checkpoints/{checkpoint}.safetensors (nor best or last) and no {WEIGHTS} "
                            "(is it a slotlab run directory that has trained, or a zoo entry?)")


def add_entry(run_dir: str | Path, name: str, root: str | Path | None = None, overwrite: bool = False,
              test_iters: int | None = None) -> Path:
    """Make the zoo entry ``name`` from the run's best checkpoint (else its last): its weights without optimizer
    state, and its config (with ``model.test_iters`` set when ``test_iters`` is given, a choice made on validation
    scenes). The card is written separately. Returns the entry's directory."""
    from slotlab.api import build_checked

    if not _NAME.match(name):
        raise ValueError(f"zoo name {name!r}: expected lower-case letters, digits, '_', '-' or '.'")
    run_dir = Path(run_dir)
    cfg = ExperimentConfig.load(run_dir / CONFIG)
    if test_iters is not None:
        cfg.model.test_iters = 0 if test_iters == cfg.model.num_iters else test_iters
    checkpoint = weights_file(run_dir)
    model = build_checked(cfg, checkpoint)
    meta = load_checkpoint(checkpoint)["state"]
    out = zoo_root(root) / name
    if (out / WEIGHTS).exists() and not overwrite:
        raise FileExistsError(f"{out} already holds a zoo entry; remove it first")
    out.mkdir(parents=True, exist_ok=True)
    info = {"step": meta.get("step"), "train_seconds": meta.get("train_seconds"), "source": checkpoint.name}
    save_checkpoint(out / WEIGHTS, model, state=info, config=cfg.to_dict())  # atomic, with per-tensor digests
    cfg.save(out / CONFIG)
    return out
