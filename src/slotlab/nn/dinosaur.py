"""DINOSAUR (Seitzer et al., "Bridging the Gap to Real-World Object-Centric Learning", ICLR 2023): Slot Attention
on the features of a frozen self-supervised ViT, trained to reconstruct those features.

    features (B, N, C) -> LayerNorm, Linear(C, C), ReLU, Linear(C, D_in)     (the input MLP)
                       -> Slot Attention (K slots of size D)                  (slotlab's module)
                       -> each slot broadcast over the N patches + a learned position embedding (1, N, D)
                       -> MLP (hidden layers of ``decoder_channels``) -> C features + 1 alpha logit per patch
                       -> alpha softmax over the K slots, recon = sum_k alpha_k * features_k; loss MSE(recon, features)

As the official code (amazon-science/object-centric-learning-framework, ``PatchDecoder`` and the ``bridging``
configs): input MLP hidden size = C with a leading LayerNorm; Slot Attention input size = slot size = 256,
residual MLP 4 x 256 = 1024, T = 3; decoder MLP with three hidden layers of 2048 (ViT-B/16 on COCO and VOC),
position embedding drawn from N(0, 0.02^2), zero biases. The model reads features, not images: the frozen
backbone (:mod:`slotlab.nn.backbone`) belongs to the data side, where its features are cached
(:mod:`slotlab.data.features`). Glossary: B batch, N patches, C feature size, K slots, D slot size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slotlab.config import ModelConfig
from slotlab.nn.precision import fp32
from slotlab.nn.slot_attention import SlotAttention


def mlp(sizes: list[int], layer_norm: bool = False) -> nn.Sequential:
    """Linear layers of ``sizes`` with ReLU between them (none after the last), zero biases; an optional leading
    LayerNorm."""
    layers: list[nn.Module] = [nn.LayerNorm(sizes[0])] if layer_norm else []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        nn.init.zeros_(layers[-1].bias)
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class PatchDecoder(nn.Module):
    """Slots (B, K, D) -> per-slot features (B, K, N, C) and alpha logits (B, K, N): an MLP applied to each slot
    broadcast over the N patches, plus a learned position embedding per patch."""

    def __init__(self, slot_dim: int, feature_dim: int, num_patches: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.pos_embed = nn.Parameter(torch.randn(1, 1, num_patches, slot_dim) * 0.02)
        self.mlp = mlp([slot_dim] + [hidden] * layers + [feature_dim + 1])

    def forward(self, slots: Tensor) -> tuple[Tensor, Tensor]:
        x = slots[:, :, None, :] + self.pos_embed  # (B, K, N, D)
        out = fp32(self.mlp(x))  # (B, K, N, C + 1)
        return out[..., :-1], out[..., -1]  # (B, K, N, C), (B, K, N)


class Dinosaur(nn.Module):
    """forward(features (B, N, C)) returns ``recon`` (B, N, C), ``recons`` (B, K, N, C), ``masks`` (B, K, N)
    (alpha, a softmax over K), ``slots`` (B, K, D), ``attn`` (B, K, N) and ``attns`` (B, T, K, N)."""

    def __init__(self, cfg: ModelConfig, feature_dim: int, num_patches: int) -> None:
        super().__init__()
        from slotlab.nn.models import validate_slot_options

        validate_slot_options(cfg)
        if cfg.decoder_norm != "none":
            raise ValueError(f"model.decoder_norm={cfg.decoder_norm!r} is for the MLP image decoder, not DINOSAUR's")
        self.cfg, self.feature_dim, self.num_patches = cfg, feature_dim, num_patches
        self.input_mlp = mlp([feature_dim, feature_dim, cfg.slot_dim], layer_norm=True)
        self.slot_attention = SlotAttention(cfg.num_slots, cfg.slot_dim, cfg.slot_dim, cfg.num_iters,
                                            cfg.mlp_hidden_dim, slot_init=cfg.slot_init)
        self.slot_attention.test_iters = cfg.test_iters or None
        self.decoder = PatchDecoder(cfg.slot_dim, feature_dim, num_patches, cfg.decoder_channels, cfg.decoder_layers)

    def forward(self, features: Tensor, *, num_slots: int | None = None, num_iters: int | None = None,
                slots: Tensor | None = None) -> dict[str, Tensor]:
        if features.dim() != 3 or tuple(features.shape[1:]) != (self.num_patches, self.feature_dim):
            raise ValueError(f"features must be (B, N={self.num_patches}, C={self.feature_dim}), got "
                             f"{tuple(features.shape)} (another backbone or resolution than the model's?)")
        sa = self.slot_attention(self.input_mlp(features), num_slots=num_slots, num_iters=num_iters, slots=slots)
        recons, logits = self.decoder(sa["slots"])  # (B, K, N, C), (B, K, N)
        masks = logits.softmax(dim=1)  # alpha: the slots compete for every patch
        recon = (recons * masks[..., None]).sum(dim=1)  # (B, N, C)
        return {"recon": recon, "recons": recons, "masks": masks, "slots": sa["slots"], "attn": sa["attn"],
                "attns": sa["attns"]}


def feature_loss(out: dict[str, Tensor], features: Tensor) -> Tensor:
    """DINOSAUR's loss: MSE between the recomposed and the backbone's features (the target takes no gradient)."""
    return F.mse_loss(out["recon"], features.detach().to(out["recon"].dtype))


def masks_to_image(masks: Tensor, size: int) -> Tensor:
    """Patch masks (B, K, N) on a square grid -> (B, K, size, size), bilinear (as the official evaluation)."""
    B, K, N = masks.shape
    side = int(round(N**0.5))
    if side * side != N:
        raise ValueError(f"masks_to_image: {N} patches do not form a square grid")
    grid = masks.reshape(B, K, side, side).float()  # (B, K, side, side)
    return F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)


def build_dinosaur(cfg: ModelConfig) -> Dinosaur:
    """The DINOSAUR model for ``cfg.backbone`` at ``cfg.resolution`` (its feature size and patch grid)."""
    from slotlab.nn.vit import get_arch

    arch = get_arch(cfg.backbone)
    if cfg.resolution % arch.patch_size:
        raise ValueError(f"model.resolution={cfg.resolution} must be a multiple of {cfg.backbone}'s patch size "
                         f"{arch.patch_size}")
    return Dinosaur(cfg, arch.embed_dim, (cfg.resolution // arch.patch_size) ** 2)
