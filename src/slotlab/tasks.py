"""The systems built on Slot Attention, as tasks: the one place that knows what differs between them.

A :class:`Task` says how to build the model and the data splits, what the training loss of a batch is, how a split
is evaluated and printed, which validation score picks the best checkpoint, which curves and pictures show a run,
which data a run may read, and whether the training-step benchmarks cover it. The training loop, the run commands
(:mod:`slotlab.runs`), the CLI, the benchmarks and the converters ask the run's task (:func:`get_task`) and never
test its name.

- ``autoencoder`` (object discovery): MSE reconstruction, evaluated by FG-ARI / ARI / mBO / MSE, best = FG-ARI;
- ``set_prediction``: Hungarian Huber loss, evaluated by AP at five distance thresholds, best = mean AP;
- ``video`` (SAVi): MSE of the frames (or of the flow picture) on short clips, evaluated on whole videos by video
  FG-ARI / ARI / per-frame FG-ARI / mBO, best = video FG-ARI.
- ``features`` (DINOSAUR, Seitzer et al. 2023): the model reads a frozen ViT's features (cached on disk) instead of
  the image, MSE on the features, evaluated by FG-ARI / mBO / class mBO at image resolution, best = FG-ARI.

A new task is one more entry in :data:`TASKS`; a config selects it with ``model.task`` (``model.kind`` in config
files written by earlier versions, accepted as an alias).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slotlab.config import ExperimentConfig, ModelConfig
from slotlab.data import build_set_splits, build_splits
from slotlab.data.video import build_video_splits
from slotlab.evaluate import evaluate, evaluate_set, format_metrics, format_set_metrics
from slotlab.evaluate_video import evaluate_video, format_video_metrics, video_inputs, video_target
from slotlab.losses import hungarian_huber_loss
from slotlab.nn.models import SetPredictor, SlotAttentionAutoEncoder
from slotlab.nn.savi import SAVi


@dataclass(frozen=True)
class Task:
    """What one task is. Only ``name`` ... ``model`` are required; the rest default to "not supported"."""

    name: str  # the value of model.task
    build_splits: Callable  # DataConfig -> {"train", "val", "test"}: datasets with len(), .resolution, .batch()
    batch: Callable  # (split, index) -> training batch: a dict of tensors with at least "image" (B, 3, H, W)
    loss: Callable  # (model outputs, batch) -> scalar training loss
    evaluate: Callable  # (model, split, *, batch_size, num_slots, num_iters, seed, limit, precision) -> dict
    format: Callable  # evaluate's dict -> one human-readable line
    select_metric: str  # key of evaluate's dict that picks best.safetensors (higher is better)
    model: Callable[[ModelConfig], nn.Module] = field(kw_only=True)  # ModelConfig -> the network (dict outputs)
    curves: dict[str, str] = field(default_factory=dict, kw_only=True)  # evaluate's keys -> labels: the curves
    #                         and the validation table of report.html
    draw: Callable | None = field(default=None, kw_only=True)  # (model, scenes, out, num_scenes, seed) ->
    #                         {picture written: caption}, the first at ``out``; None: `slotlab viz` cannot draw it
    scene_specs: bool = field(default=False, kw_only=True)  # runs also read scenes named by a data spec
    #                         (--data KIND:FILE or cache:DIR, docs/datasets.md); else only the config's splits
    synthetic_batch: Callable | None = field(default=None, kw_only=True)  # (ModelConfig, batch size, device) ->
    #                         a batch of random inputs for `slotlab bench train/gpu`; None: they do not cover it
    forward: Callable = field(default=lambda model, batch: model(batch["image"]), kw_only=True)  # (model, batch)
    #                         -> the outputs that ``loss`` reads
    input_key: str = field(default="image", kw_only=True)  # the batch entry of the model's main input (device)
    model_splits: Callable | None = field(default=None, kw_only=True)  # ExperimentConfig -> splits, for data that
    #                         depend on the model (the features task's backbone); used instead of build_splits
    data_spec: Callable | None = field(default=None, kw_only=True)  # (DataConfig, --data spec) -> None: the
    #                         spec names the dataset in the config (features: coco:DIR, voc:DIR, folder:DIR)
    zoo_comparison: bool = field(default=False, kw_only=True)  # `slotlab demo` sets the run beside the zoo model
    #                         of its built-in dataset, on held-out scenes, in its report (compare.py)
    image_aids: bool = field(default=False, kw_only=True)  # the image training aids of slotlab.curricula (object
    #                         curriculum, progressive resolution) apply: an image autoencoder's batches and model

    def build_model(self, cfg: ExperimentConfig | ModelConfig) -> nn.Module:
        """The task's network for ``cfg`` (an experiment or its model section)."""
        return self.model(cfg.model if isinstance(cfg, ExperimentConfig) else cfg)

    def splits(self, cfg: ExperimentConfig) -> dict:
        """The train / val / test splits of ``cfg``."""
        return self.model_splits(cfg) if self.model_splits is not None else self.build_splits(cfg.data)


def _reconstruction_loss(out: dict[str, Tensor], batch: dict[str, Tensor]) -> Tensor:
    return F.mse_loss(out["recon"], batch["image"])


def _set_loss(out: dict[str, Tensor], batch: dict[str, Tensor]) -> Tensor:
    return hungarian_huber_loss(out["pred"], batch["target"])


def _feature_loss(out: dict[str, Tensor], batch: dict[str, Tensor]) -> Tensor:
    from slotlab.nn.dinosaur import feature_loss

    return feature_loss(out, batch["features"])


def _feature_splits(cfg: ExperimentConfig) -> dict:
    from slotlab.data.features import build_feature_splits

    return build_feature_splits(cfg)


def _no_data_only_splits(data) -> dict:
    raise ValueError("the features task's data depend on its backbone: build them with Task.splits(cfg)")


def _feature_data_spec(data, spec: str) -> None:
    kind, _, path = spec.partition(":")
    if kind not in ("coco", "voc", "folder") or not path:
        raise ValueError(f"--data {spec!r}: the features task reads coco:DIR, voc:DIR or folder:DIR "
                         "(docs/real_world.md)")
    data.name, data.path = kind, path


def _evaluate_features(model: nn.Module, split, **kwargs) -> dict:
    from slotlab.evaluate_features import evaluate_features

    return evaluate_features(model, split, **kwargs)


def _format_features(result: dict) -> str:
    from slotlab.evaluate_features import format_feature_metrics

    return format_feature_metrics(result)


def _build_dinosaur(cfg: ModelConfig) -> nn.Module:
    from slotlab.nn.dinosaur import build_dinosaur

    return build_dinosaur(cfg)


def _random_images(cfg: ModelConfig, batch_size: int, device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """Uniform random images in [-1, 1]: a reconstruction step costs the same on any content."""
    return {"image": torch.rand(batch_size, 3, cfg.resolution, cfg.resolution, device=device) * 2 - 1}


SYNTHETIC_CLIP = 6  # frames of a synthetic video batch: SAVi's training clip


def _random_videos(cfg: ModelConfig, batch_size: int, device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """Random 6-frame clips in [-1, 1] with random flow and first-frame centres and boxes of K - 1 present objects
    (row 0 the background): a SAVi step costs the same on any content."""
    B, F, R, K = batch_size, SYNTHETIC_CLIP, cfg.resolution, cfg.num_slots
    present = torch.ones(B, K, 1, device=device)
    present[:, 0] = 0
    return {"video": torch.rand(B, F, 3, R, R, device=device) * 2 - 1,
            "flow": torch.randn(B, F, 2, R, R, device=device),
            "centers": torch.cat([torch.rand(B, K, 2, device=device), present], dim=-1),
            "boxes": torch.cat([torch.rand(B, K, 4, device=device).sort(dim=-1).values, present], dim=-1)}


def _draw_scenes(model: nn.Module, scenes, out: Path, num_scenes: int, seed: int) -> dict[Path, str]:
    from slotlab.viz import save_attention_figure, save_scene_figure

    attention = out.with_name(out.stem + "_attention" + out.suffix)
    save_scene_figure(model, scenes, out, num_scenes, seed=seed)
    save_attention_figure(model, scenes, attention, seed=seed)
    return {out: "Input, reconstruction, each slot's reconstruction × mask, predicted and true segmentation.",
            attention: "Attention of every slot (softmax over slots) at each Slot Attention iteration."}


def _draw_sets(model: nn.Module, scenes, out: Path, num_scenes: int, seed: int) -> dict[Path, str]:
    from slotlab.viz import save_set_figure

    save_set_figure(model, scenes, out, num_scenes, seed=seed)
    return {out: "True objects (circles) and confident predictions (crosses); each true object beside the "
                 "prediction matched to it."}


def _video_loss(out: dict[str, Tensor], batch: dict[str, Tensor]) -> Tensor:
    return F.mse_loss(out["recon"], out["target"])


def _video_forward(model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The model's outputs plus ``target``: what ``recon`` should match (the frames, or the flow picture)."""
    return {**model(**video_inputs(model, batch)), "target": video_target(model, batch)}


def _draw_videos(model: nn.Module, videos, out: Path, num_videos: int, seed: int) -> dict[Path, str]:
    from slotlab.viz_video import save_video_animation, save_video_figure

    animation = out.with_suffix(".gif")
    save_video_figure(model, videos, out, min(num_videos, 3), seed=seed)
    save_video_animation(model, videos, animation, seed=seed)
    return {animation: "Input | reconstruction | slots | ground truth over a whole held-out video; each slot keeps "
                       "its colour in every frame.",
            out: "Frames of held-out videos: input, reconstruction, slots (one colour per slot over time), "
                 "ground truth."}


TASKS: dict[str, Task] = {
    "autoencoder": Task(
        "autoencoder", build_splits, lambda split, index: split.batch(index, False), _reconstruction_loss,
        evaluate, format_metrics, "fg_ari", model=SlotAttentionAutoEncoder,
        curves={"fg_ari": "FG-ARI", "ari": "ARI", "mbo": "mBO"}, draw=_draw_scenes, scene_specs=True,
        synthetic_batch=_random_images, zoo_comparison=True, image_aids=True),
    "set_prediction": Task(
        "set_prediction", build_set_splits, lambda split, index: split.batch(index), _set_loss,
        evaluate_set, format_set_metrics, "ap_mean", model=SetPredictor,
        curves={"ap_inf": "AP(inf)", "ap_1": "AP(1)", "ap_0.5": "AP(0.5)", "ap_0.25": "AP(0.25)",
                "ap_0.125": "AP(0.125)"}, draw=_draw_sets),
    "video": Task(
        "video", build_video_splits, lambda split, index: split.batch(index), _video_loss, evaluate_video,
        format_video_metrics, "fg_ari", model=SAVi, forward=_video_forward, input_key="video",
        curves={"fg_ari": "video FG-ARI", "ari": "video ARI", "mbo": "video mBO", "frame_fg_ari": "per-frame FG-ARI"},
        draw=_draw_videos, synthetic_batch=_random_videos),
    "features": Task(
        "features", _no_data_only_splits, lambda split, index: split.batch(index), _feature_loss,
        _evaluate_features, _format_features, "fg_ari", model=_build_dinosaur,
        curves={"fg_ari": "FG-ARI", "mbo": "mBO", "mbo_c": "class mBO"}, input_key="features",
        forward=lambda model, batch: model(batch["features"]), model_splits=_feature_splits,
        data_spec=_feature_data_spec),
}


def get_task(cfg: ExperimentConfig | ModelConfig) -> Task:
    """The task of a config (``model.task``), with a clear error for an unknown name."""
    name = (cfg.model if isinstance(cfg, ExperimentConfig) else cfg).task
    if name not in TASKS:
        raise ValueError(f"unknown model.task {name!r}; expected one of {sorted(TASKS)}")
    return TASKS[name]


def build_model(cfg: ModelConfig) -> nn.Module:
    """The network of ``cfg.task`` built from ``cfg``."""
    return get_task(cfg).build_model(cfg)
