"""``slotlab.load(name_or_dir)``: a trained model ready to segment images, from the zoo or a run directory.

    model = slotlab.load("tetrominoes")             # a zoo entry (slotlab.zoo), or a run directory's path
    out = model.segment(images)                     # a list of PIL images or uint8 (B, H, W, 3)
    out["labels"]   # per image uint8 (H, W): the largest mask component at each pixel (255: outside a centre crop)
    out["masks"]    # per image float32 (K', H, W) at the input size, background layer first when the model has one
    out["slots"]    # (B, K, D); out["attn"] (B, K, N) over the N feature positions
    out["model_masks"]  # (B, K', R, R) at the model's resolution (what evaluation scores)

Preprocessing is the config's: RGB conversion and ``data.resize`` (slotlab.data.imageio). Each image's initial
slots are seeded from the image itself (slotlab.noise), so results do not depend on the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from slotlab.config import ExperimentConfig
from slotlab.data.imageio import UNSEEN, Fit, fit_image, to_rgb, unfit_masks
from slotlab.nn.models import SlotAttentionAutoEncoder
from slotlab.noise import seeded_forward


def build_checked(cfg: ExperimentConfig, weights: str | Path) -> nn.Module:
    """The model of ``cfg`` with the weights of ``weights`` (a checkpoint or zoo file), in eval mode; ValueError
    naming the file when its tensors do not match the config's model (names or shapes)."""
    from slotlab.checkpoint import read_checkpoint

    weights = Path(weights)
    everything, _, record = read_checkpoint(weights)  # digests (when present) and finiteness checked
    tensors = {k[len("model."):]: v for k, v in everything.items() if k.startswith("model.")}
    from slotlab.tasks import build_model

    model = build_model(cfg.model)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [f"{k} {tuple(tensors[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in tensors and tensors[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise ValueError(f"{weights} does not match its config's model: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}, shapes (file vs config) {wrong[:5]}")
    model.load_state_dict(tensors)
    step = record["state"].get("step")
    if step is not None and hasattr(model, "cfg"):  # step schedules (attention temperature) at the weights' step
        from slotlab.nn.models import set_step

        set_step(model, int(step))
    return model.eval()


@dataclass(frozen=True)
class Preprocess:
    """How images become model inputs: RGB (slotlab.data.imageio rules), fitted to ``resolution`` by ``resize``."""

    resolution: int
    resize: str = "crop"

    def __call__(self, image: Image.Image | np.ndarray) -> tuple[np.ndarray, Fit]:
        rgb = to_rgb(image) if isinstance(image, Image.Image) else image
        return fit_image(rgb, self.resolution, self.resize)


class LoadedModel:
    """A trained model with its config and preprocessing; :meth:`segment` runs it on images."""

    def __init__(self, model: nn.Module, config: ExperimentConfig, source: str) -> None:
        self.model, self.config, self.source = model, config, source
        self.preprocess = Preprocess(config.model.resolution, getattr(config.data, "resize", "crop"))
        self.device = torch.device("cpu")

    def to(self, device: str | torch.device) -> LoadedModel:
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    @property
    def has_background(self) -> bool:
        return self.config.model.background != "none"

    def __repr__(self) -> str:
        m = self.config.model
        return f"LoadedModel({self.source!r}, {self.config.name}, {m.resolution}px, K={m.num_slots})"

    @torch.no_grad()
    def run(self, pixels: np.ndarray, num_slots: int | None = None, num_iters: int | None = None) -> dict:
        """uint8 (B, R, R, 3) model inputs -> the model's outputs on the CPU, masks (B, K', R, R) background first."""
        if not isinstance(self.model, SlotAttentionAutoEncoder):
            raise ValueError(f"{self.source}: segment needs an object-discovery model of images "
                             f"(SlotAttentionAutoEncoder), not a {type(self.model).__name__} "
                             f"(model.task={self.config.model.task!r})")
        images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)  # (B, 3, R, R)
        out = seeded_forward(self.model, images.to(self.device), self.config.train.seed, num_slots, num_iters)
        masks = out["masks"][:, :, 0].float().cpu()  # (B, K', R, R)
        if self.has_background:  # the background layer is the last component: put it first (label 0)
            masks = torch.cat([masks[:, -1:], masks[:, :-1]], dim=1)
        return {"masks": masks, "slots": out["slots"].float().cpu(), "attn": out["attn"].float().cpu(),
                "recon": out["recon"].float().cpu()}

    def segment(self, images, *, num_slots: int | None = None, num_iters: int | None = None,
                batch_size: int = 32) -> dict:
        """Segment ``images`` (a list of PIL images, or uint8 (B, H, W, 3)): the named outputs of this module's
        docstring. Lists give per-image lists of ``labels`` / ``masks``; an array gives stacked tensors."""
        as_array = isinstance(images, np.ndarray)
        if as_array:
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
                raise ValueError(f"images: expected uint8 (B, H, W, 3) RGB, got {images.dtype} {images.shape}")
        elif not isinstance(images, (list, tuple)) or not all(isinstance(i, Image.Image) for i in images):
            raise TypeError("images: expected a list of PIL images or a uint8 numpy array (B, H, W, 3)")
        fitted = [self.preprocess(image) for image in images]
        parts = [self.run(np.stack([p for p, _ in fitted[i : i + batch_size]]), num_slots, num_iters)
                 for i in range(0, len(fitted), batch_size)]
        out = {key: torch.cat([p[key] for p in parts]) for key in parts[0]} if parts else {}
        labels, masks = [], []
        for i, (_, f) in enumerate(fitted):
            m, lab = masks_at_input_size(out["masks"][i], f)
            masks.append(m)
            labels.append(lab)
        result = {"labels": labels, "masks": masks, "slots": out.get("slots"), "attn": out.get("attn"),
                  "model_masks": out.get("masks"), "recon": out.get("recon")}
        if as_array and labels:
            result["labels"], result["masks"] = torch.stack(labels), torch.stack(masks)
        return result


def masks_at_input_size(masks: Tensor, f: Fit) -> tuple[Tensor, Tensor]:
    """Soft masks (K', R, R) -> (K', H, W) at the input's size and the uint8 (H, W) label map: the largest
    component at each pixel, :data:`~slotlab.data.imageio.UNSEEN` where the model did not see the input."""
    full, seen = unfit_masks(masks, f)
    labels = full.argmax(0).to(torch.uint8)  # (H, W)
    labels[~seen] = UNSEEN
    return full, labels


def load(name_or_dir: str | Path, checkpoint: str = "best", root: str | Path | None = None) -> LoadedModel:
    """A zoo name (a bare string such as ``"tetrominoes"``: the zoo entry, even if a folder of that name exists in
    the working directory; write ``"./tetrominoes"`` or pass a Path for the folder), else an existing directory (a
    run directory, its ``checkpoint``: best, else last; or a zoo entry directory). ``root`` / ``$SLOTLAB_ZOO``
    overrides the zoo; an unknown name lists the zoo."""
    from slotlab import zoo

    text = str(name_or_dir)
    bare = isinstance(name_or_dir, str) and "/" not in text and "\\" not in text
    if bare and text in zoo.entries(root):
        path = zoo.entry_dir(text, root)
    elif Path(text).is_dir():
        path = Path(text)
    else:
        path = zoo.entry_dir(text, root)
    cfg = ExperimentConfig.load(path / "config.json")
    return LoadedModel(build_checked(cfg, zoo.weights_file(path, checkpoint)), cfg, text)
