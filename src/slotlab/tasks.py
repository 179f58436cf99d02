"""The two systems built on Slot Attention, as tasks that the training loop and the CLI treat alike.

A task says how to build the model and the data splits, what the training loss of a batch is, how a split is
evaluated, and which validation score picks the best checkpoint:

- ``autoencoder`` (object discovery): MSE reconstruction, evaluated by FG-ARI / ARI / mBO / MSE, best = FG-ARI;
- ``set_prediction``: Hungarian Huber loss, evaluated by AP at five distance thresholds, best = mean AP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from slotlab.config import ExperimentConfig
from slotlab.data import build_set_splits, build_splits
from slotlab.evaluate import evaluate, evaluate_set, format_metrics, format_set_metrics
from slotlab.losses import hungarian_huber_loss
from slotlab.nn.models import build_model


@dataclass(frozen=True)
class Task:
    name: str
    build_splits: Callable  # DataConfig -> {"train", "val", "test"}
    batch: Callable  # (split, index) -> dict of tensors with at least "image"
    loss: Callable  # (model outputs, batch) -> scalar
    evaluate: Callable  # (model, split, **kwargs) -> dict of floats
    format: Callable  # result dict -> one line
    select_metric: str  # validation score that picks best.safetensors (higher is better)

    def build_model(self, cfg: ExperimentConfig) -> nn.Module:
        return build_model(cfg.model)


def _reconstruction_loss(out: dict[str, Tensor], batch: dict[str, Tensor]) -> Tensor:
    return F.mse_loss(out["recon"], batch["image"])


def _set_loss(out: dict[str, Tensor], batch: dict[str, Tensor]) -> Tensor:
    return hungarian_huber_loss(out["pred"], batch["target"])


TASKS = {
    "autoencoder": Task("autoencoder", build_splits, lambda split, index: split.batch(index, False),
                        _reconstruction_loss, evaluate, format_metrics, "fg_ari"),
    "set_prediction": Task("set_prediction", build_set_splits, lambda split, index: split.batch(index),
                           _set_loss, evaluate_set, format_set_metrics, "ap_mean"),
}


def get_task(cfg: ExperimentConfig) -> Task:
    if cfg.model.kind not in TASKS:
        raise ValueError(f"unknown model.kind {cfg.model.kind!r}; expected one of {sorted(TASKS)}")
    return TASKS[cfg.model.kind]

