"""A frozen ViT backbone whose weights come from a local file only (DINOSAUR, Seitzer et al., ICLR 2023).

``FrozenBackbone(name, weights, resolution, block)`` maps images in slotlab's [-1, 1] range to the patch tokens of
one block (``block`` counts from 1; 0 = the last, DINOSAUR's choice), class and register tokens dropped:
(B, 3, H, W) -> (B, N, C) with N = (H / patch)^2. The weights:

- a path to a ``.safetensors`` file or to a torch file read with ``torch.load(weights_only=True)`` (no code runs);
  timm's, DINO's and DINOv2's layouts load (:func:`slotlab.nn.vit.convert_state_dict`); a file that does not match
  the architecture is refused with the names and shapes that differ;
- ``"random"``: a fixed random initialisation (seed 0), for tests and speed measurements only.

Nothing is downloaded: the network is built by :mod:`slotlab.nn.vit`, never fetched. The backbone is frozen: no
parameter takes gradients, it stays in eval mode, and its forward runs without autograd.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import Tensor, nn

from slotlab.nn.vit import VisionTransformer, convert_state_dict, get_arch

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the normalisation DINO and DINOv2 were trained with
IMAGENET_STD = (0.229, 0.224, 0.225)


class FrozenBackbone(nn.Module):
    def __init__(self, name: str, weights: str, resolution: int, block: int = 0) -> None:
        super().__init__()
        arch = get_arch(name)
        if not 0 <= block <= arch.depth:
            raise ValueError(f"model.backbone_block={block} is out of range for {name} (1..{arch.depth}, 0 = last)")
        self.name, self.block = name, block or arch.depth
        if weights == "random":
            with torch.random.fork_rng():
                torch.manual_seed(0)  # the same network in every process (cache and on-the-fly agree)
                self.vit = VisionTransformer(arch, resolution)
            self.fingerprint = "random-seed0"
        else:
            with torch.device("meta"):  # no initialisation: every tensor comes from the file
                self.vit = VisionTransformer(arch, resolution)
            self.fingerprint = load_weights(self.vit, weights, name)
        self.vit.requires_grad_(False)
        self.vit.eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def feature_dim(self) -> int:
        return self.vit.arch.embed_dim

    @property
    def num_patches(self) -> int:
        return self.vit.grid**2

    def train(self, mode: bool = True) -> FrozenBackbone:
        return super().train(False)  # frozen: dropout-free eval mode always

    @torch.no_grad()
    def forward(self, image: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, N, C) patch tokens of block ``self.block``, row-major patch order."""
        x = ((image + 1) / 2 - self.mean) / self.std  # ImageNet normalisation of [0, 1] RGB
        tokens = self.vit(x, self.block)  # (B, prefix + N, C)
        return tokens[:, self.vit.num_prefix_tokens:]  # (B, N, C)


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors of a safetensors file, or of a torch file loaded with ``weights_only=True`` (no code runs)."""
    if not path.is_file():
        raise FileNotFoundError(f"model.backbone_weights: no file at {path} (expected a local .safetensors or "
                                ".pth file with the ViT's weights; nothing is downloaded)")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise ValueError(f"model.backbone_weights: {path} is not a readable safetensors file: {err}") from err
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors vary: unsafe content, truncation, not a torch file
        raise ValueError(f"model.backbone_weights: {path} is not a torch weights file that loads with "
                         f"weights_only=True: {err}") from err
    if not isinstance(state, dict):
        raise ValueError(f"model.backbone_weights: {path} holds a {type(state).__name__}, expected a state dict")
    return state


def load_weights(vit: VisionTransformer, weights: str, name: str) -> str:
    """Load the file ``weights`` into ``vit`` (built on the meta device); return the file's fingerprint (the
    cache key)."""
    if not weights:
        raise ValueError("model.backbone_weights is not set: give a local weights file (--set "
                         "model.backbone_weights=PATH, see docs/real_world.md) or 'random' for a random backbone")
    path = Path(weights).expanduser()
    state = convert_state_dict(read_state_dict(path), vit)
    expected = vit.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        raise ValueError(
            f"model.backbone_weights: {path} does not match model.backbone={name!r}: missing {missing[:4]}, "
            f"unexpected {unexpected[:4]}, wrong shapes {wrong[:3]} (is it another architecture?)")
    vit.load_state_dict({k: v.float().contiguous() for k, v in state.items()}, assign=True)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return f"sha256-{digest.hexdigest()[:16]}"
