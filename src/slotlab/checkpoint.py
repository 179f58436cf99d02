"""Checkpoints: one safetensors file holding the weights, the optimizer state and a JSON metadata record.

Writing is atomic (a temporary file in the same directory, fsync, then ``os.replace``), so a run killed at any
moment leaves either the previous checkpoint or the new one, never a partial file. Loading never executes code:
safetensors holds only tensors and string metadata.

Layout of the tensor names: ``model.<param>`` for the weights, ``optim.<index>.<field>`` for the Adam state of the
index-th parameter; the optimizer's param_groups and the training state go in the metadata as JSON.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file


def _atomic_save(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
    _atomic_save(tensors, metadata, Path(path))


def load_checkpoint(path: str | Path, model: torch.nn.Module | None = None,
                    optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Load weights into ``model`` and state into ``optimizer`` (when given); return the metadata record.

    Returns ``{"state": dict, "config": dict}``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"checkpoint {path} is corrupt or not a slotlab checkpoint: {err}") from err
    if model is not None:
        weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        missing, unexpected = model.load_state_dict(weights, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"checkpoint {path} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
    if optimizer is not None:
        if "param_groups" not in metadata:
            raise ValueError(f"checkpoint {path} holds no optimizer state (cannot resume from it)")
        state: dict[int, dict] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, index, name = k.split(".", 2)
                state.setdefault(int(index), {})[name] = v
        optimizer.load_state_dict({"state": state, "param_groups": json.loads(metadata["param_groups"])})
    return {"state": json.loads(metadata.get("state", "{}")), "config": json.loads(metadata.get("config", "{}"))}
