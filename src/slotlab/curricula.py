"""Training aids that change what a step sees, each a deterministic function of the step (so ``--resume`` repeats
them exactly), all off by default:

- ``train.object_curriculum_steps``: a *mixed* curriculum on the number of objects. Until step S each training
  scene keeps n of its objects, the others painted out with the background colour; n is uniform in
  {1, ..., 1 + floor(G * step / S)} (G = the most objects a scene holds), so easy scenes stay in the mix while
  harder ones join. Exact only where objects never overlap (Tetrominoes): painting out an occluding object
  elsewhere would leave a hole, so other datasets are refused.
- ``train.low_res`` / ``train.low_res_steps``: progressive resolution. Until step S the step runs a twin of the
  model built at ``low_res`` pixels that shares every parameter (and saved buffer) with the model, on the batch
  resized to that size (bilinear, antialiased); from step S on, the model itself at full resolution. Only
  models whose parameters do not depend on the resolution can do this (the MLP decoder, the broadcast decoder's
  plain stem); others get a clear error.
- ``train.decoder_lr_scale`` / ``train.slot_attention_lr_scale``: separate learning rates, as multiples of the
  schedule's, for the decoder's and Slot Attention's parameters (:func:`param_groups`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

NON_OVERLAPPING = ("tetrominoes",)  # built-in datasets whose objects never overlap


def check_curricula(cfg, distributed: bool = False) -> None:
    """Reject combinations the aids cannot run, naming what is expected (an ExperimentConfig; ``distributed``:
    under torchrun)."""
    from slotlab.tasks import get_task

    tc = cfg.train
    images = get_task(cfg).image_aids
    if tc.object_curriculum_steps < 0 or tc.low_res_steps < 0 or tc.low_res < 0:
        raise ValueError("train.object_curriculum_steps, train.low_res and train.low_res_steps must be >= 0")
    if tc.object_curriculum_steps > 0 and (not images or cfg.data.name not in NON_OVERLAPPING):
        raise ValueError(f"train.object_curriculum_steps paints objects out, which is exact only for object "
                         f"discovery on scenes whose objects never overlap ({', '.join(NON_OVERLAPPING)}); "
                         f"got task {cfg.model.task!r} on {cfg.data.name!r}")
    if tc.low_res_steps > 0 and not 0 < tc.low_res < cfg.model.resolution:
        raise ValueError(f"train.low_res_steps={tc.low_res_steps} needs 0 < train.low_res < model.resolution="
                         f"{cfg.model.resolution}, got train.low_res={tc.low_res}")
    if tc.low_res_steps > 0 and not images:
        raise ValueError(f"train.low_res_steps is for object discovery of images, not task {cfg.model.task!r}")
    if tc.low_res_steps > 0 and (distributed or tc.compile):
        raise ValueError("train.low_res_steps runs a second, parameter-sharing model early on; it supports neither "
                         "torchrun nor train.compile (turn one of them off)")

    for key in ("decoder_lr_scale", "slot_attention_lr_scale"):
        if not getattr(tc, key) > 0:
            raise ValueError(f"train.{key} must be > 0, got {getattr(tc, key)!r}")


def check_curriculum_data(train_set) -> None:
    """The object curriculum needs the training split's label maps and objects that never overlap."""
    name = str(getattr(train_set, "name", ""))
    if getattr(train_set, "labels", None) is None or not name.startswith(NON_OVERLAPPING):
        raise ValueError(f"train.object_curriculum_steps paints objects out of the training scenes, which needs "
                         f"their label maps and objects that never overlap ({', '.join(NON_OVERLAPPING)}: the "
                         f"built-in data or its TFRecords); the training data here are {name or type(train_set)}")


def paint_out_objects(images: Tensor, labels: Tensor, step: int, total_steps: int, seed: int) -> Tensor:
    """The mixed object curriculum on one batch: ``images`` (B, 3, H, W) in [-1, 1], ``labels`` (B, H, W) ints
    (0 = background) -> the images with all but n objects painted in each image's background colour (the median
    of its background pixels). Returns ``images`` unchanged from ``total_steps`` on."""
    if step >= total_steps:
        return images
    B = images.shape[0]
    labels = labels.long()
    num_ids = int(labels.max()) + 1  # ids 0..G
    G = num_ids - 1
    if G <= 1:
        return images
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    most = 1 + math.floor(G * step / total_steps)  # the hardest scenes of this stage keep this many objects
    keep_count = torch.randint(1, most + 1, (B,), generator=generator)  # (B,)
    rank = torch.rand(B, G, generator=generator).argsort(dim=1).argsort(dim=1)  # (B, G) a random order of the ids
    keep = torch.cat([torch.ones(B, 1, dtype=torch.bool), rank < keep_count[:, None]], dim=1)  # (B, G + 1)
    painted = ~keep.gather(1, labels.flatten(1)).view_as(labels)  # (B, H, W) pixels of dropped objects
    out = images.clone()
    for b in range(B):
        if painted[b].any():
            background = images[b][:, labels[b] == 0]  # (3, P)
            color = background.median(dim=1).values if background.numel() else images.new_full((3,), -1.0)
            out[b][:, painted[b]] = color[:, None]
    return out


def low_resolution_twin(model: nn.Module, cfg, resolution: int) -> nn.Module:
    """A model of ``cfg`` built at ``resolution`` whose parameters and saved buffers *are* ``model``'s (shared
    tensors: a step through the twin updates the model). ValueError naming the first tensor whose shape depends on
    the resolution."""
    from dataclasses import replace

    from slotlab.tasks import build_model

    twin_cfg = replace(cfg, model=replace(cfg.model, resolution=resolution))
    twin = build_model(twin_cfg.model)
    own = dict(model.named_parameters())
    saved = model.state_dict(keep_vars=True)
    for name, tensor in twin.state_dict(keep_vars=True).items():
        source = own.get(name, saved.get(name))
        if source is None or source.shape != tensor.shape:
            got = None if source is None else tuple(source.shape)
            raise ValueError(f"train.low_res={resolution}: the model's {name} is {got} at model.resolution="
                             f"{cfg.model.resolution} but {tuple(tensor.shape)} at {resolution}; progressive "
                             "resolution needs parameters that do not depend on the resolution (e.g. "
                             "model.decoder='mlp' or model.fast_stem=false)")
        module_name, _, leaf = name.rpartition(".")
        module = twin.get_submodule(module_name) if module_name else twin
        if isinstance(source, nn.Parameter):
            module._parameters[leaf] = source
        else:
            module._buffers[leaf] = source
    return twin.to(next(model.parameters()).device)


def resize_images(images: Tensor, resolution: int) -> Tensor:
    """(B, 3, H, W) -> (B, 3, resolution, resolution), bilinear with antialiasing (a box-like filter downwards)."""
    return nn.functional.interpolate(images, size=(resolution, resolution), mode="bilinear", antialias=True,
                                     align_corners=False)


def param_groups(model: nn.Module, tc) -> list[dict] | list[nn.Parameter]:
    """The optimizer's parameter groups: one (all parameters) unless a learning-rate scale is set; then the
    decoder's, Slot Attention's and the rest, each with its ``lr_scale``."""
    if tc.decoder_lr_scale == 1.0 and tc.slot_attention_lr_scale == 1.0:
        return list(model.parameters())
    for key in ("decoder", "slot_attention"):
        if getattr(tc, f"{key}_lr_scale") != 1.0 and not isinstance(getattr(model, key, None), nn.Module):
            raise ValueError(f"train.{key}_lr_scale: this model ({type(model).__name__}) has no {key} module; "
                             "leave it at 1")
    groups = {"decoder": [], "slot_attention": [], "rest": []}
    for name, p in model.named_parameters():
        groups[name.split(".")[0] if name.split(".")[0] in groups else "rest"].append(p)
    scales = {"decoder": tc.decoder_lr_scale, "slot_attention": tc.slot_attention_lr_scale, "rest": 1.0}
    return [{"params": ps, "lr_scale": scales[k]} for k, ps in groups.items() if ps]
