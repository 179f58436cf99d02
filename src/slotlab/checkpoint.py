"""Checkpoints: one safetensors file holding the weights, the optimizer state and a JSON metadata record.

Writing is atomic (a temporary file in the same directory, fsync, then ``os.replace``; :mod:`slotlab.rundir`), so
a run killed at any moment leaves either the previous checkpoint or the new one, never a partial file. Loading
never executes code: safetensors holds only tensors and string metadata.

Layout of the tensor names: ``model.<param>`` for the weights, ``optim.<index>.<field>`` for the Adam state of the
index-th parameter; the optimizer's param_groups and the training state go in the metadata as JSON.

Integrity: the metadata entry ``digests`` holds the SHA-256 of every tensor's bytes, checked on load, so a flipped
bit anywhere in the tensor data is an error naming the file and the tensor; every floating tensor must also be
finite. Checkpoints written before digests existed still load (reported once as unverified).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from slotlab.rundir import atomic_path

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint file is corrupt, altered, non-finite, or does not match the model."""


def tensor_digest(tensor: torch.Tensor) -> str:
    """SHA-256 of the tensor's bytes (its dtype and shape are checked by safetensors itself)."""
    data = tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy()
    return hashlib.sha256(data.tobytes()).hexdigest()


def _atomic_save(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> None:
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def save_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    state: dict | None = None, config: dict | None = None) -> None:
    """Atomically write ``model`` weights, optional ``optimizer`` state, training ``state`` and ``config``."""
    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"state": json.dumps(state or {}), "config": json.dumps(config or {})}
    if optimizer is not None:
        opt = optimizer.state_dict()
        for index, fields in opt["state"].items():
            for name, value in fields.items():
                tensors[f"optim.{index}.{name}"] = torch.as_tensor(value).detach().contiguous().cpu()
        metadata["param_groups"] = json.dumps(opt["param_groups"])
    metadata["digests"] = json.dumps({name: tensor_digest(t) for name, t in tensors.items()})
    _atomic_save(tensors, metadata, Path(path))


def read_metadata(path: str | Path) -> dict:
    """The metadata record of a checkpoint, without reading its tensors: ``{"state", "config"}`` (dicts)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        return {"state": json.loads(metadata.get("state", "{}")), "config": json.loads(metadata.get("config", "{}"))}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a slotlab checkpoint: {err}") from err


def verify_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bool:
    """Check every tensor against its digest (when the file has them) and for finiteness; return whether the file
    had digests. CheckpointError naming the file and the first bad tensor otherwise."""
    digests = json.loads(metadata["digests"]) if "digests" in metadata else None
    if digests is not None:
        if set(digests) != set(tensors):
            extra = sorted(set(digests) ^ set(tensors))[:3]
            raise CheckpointError(f"checkpoint {path} is altered: tensors {extra} do not match its digest list")
        for name, tensor in tensors.items():
            if tensor_digest(tensor) != digests[name]:
                raise CheckpointError(f"checkpoint {path} is corrupt: tensor {name!r} does not match its digest "
                                      "(the file changed after it was written)")
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"checkpoint {path} is corrupt: tensor {name!r} holds NaN or Inf")
    return digests is not None


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str], dict]:
    """Every tensor of a checkpoint or zoo weights file, its raw metadata, and its record ``{"state": dict,
    "config": dict, "verified": bool}`` (verified: the file had digests), after :func:`verify_tensors`.
    CheckpointError naming the file when it is corrupt, altered or not a slotlab file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        verified = verify_tensors(path, tensors, metadata)
        record = {"state": json.loads(metadata.get("state", "{}")), "config": json.loads(metadata.get("config", "{}")),
                  "verified": verified}
    except (SafetensorError, OSError, ValueError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"checkpoint {path} is corrupt or not a slotlab checkpoint: {err}") from err
    if not verified:
        log.warning("checkpoint %s has no digests (written by an older slotlab): loaded unverified", path)
    return tensors, metadata, record


def load_checkpoint(path: str | Path, model: torch.nn.Module | None = None,
                    optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Load weights into ``model`` and state into ``optimizer`` (when given), after :func:`verify_tensors`; return
    the metadata record ``{"state": dict, "config": dict, "verified": bool}`` (verified: the file had digests)."""
    path = Path(path)
    tensors, metadata, record = read_checkpoint(path)
    if model is not None:
        weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        try:
            missing, unexpected = model.load_state_dict(weights, strict=False)
        except RuntimeError as err:  # a shape mismatch
            raise CheckpointError(f"checkpoint {path} does not match the model: {err}") from None
        if missing or unexpected:
            raise CheckpointError(
                f"checkpoint {path} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
    if optimizer is not None:
        if "param_groups" not in metadata:
            raise CheckpointError(f"checkpoint {path} holds no optimizer state (cannot resume from it)")
        state: dict[int, dict] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, index, name = k.split(".", 2)
                state.setdefault(int(index), {})[name] = v
        try:
            optimizer.load_state_dict({"state": state, "param_groups": json.loads(metadata["param_groups"])})
        except (ValueError, RuntimeError) as err:
            raise CheckpointError(f"checkpoint {path}: its optimizer state does not match the model: {err}") from None
    return record
