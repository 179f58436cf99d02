"""Vision Transformers in the DINO and DINOv2 layouts, for frozen feature extraction (no download, no timm needed).

The parameter names and the mathematics are those of timm's ``VisionTransformer`` (Dosovitskiy et al. 2021), so a
state dict saved from timm (``vit_base_patch16_224.dino``, ``vit_small_patch14_reg4_dinov2.lvd142m``, ...) loads
as it is; the official DINO releases (Caron et al. 2021, ``dino_vitbase16_pretrain.pth``) use the same names, and
the official DINOv2 releases (Oquab et al. 2024) are converted by :func:`convert_state_dict` as timm does
(``register_tokens`` -> ``reg_token``, ``mask_token`` dropped; with registers the class token absorbs its position
embedding and ``pos_embed`` keeps the patches only).

Block: ``x + ls1(attn(norm1(x)))`` then ``x + ls2(mlp(norm2(x)))``; LayerNorm eps 1e-6; fused qkv with bias;
exact GELU; LayerScale (``ls*.gamma``) in the DINOv2 layout only. Glossary: B batch, N patches, C width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class VitArch:
    patch_size: int
    embed_dim: int  # C
    depth: int
    num_heads: int
    layer_scale: bool = False  # DINOv2: per-channel scales on both residual branches
    reg_tokens: int = 0  # DINOv2 with registers (Darcet et al. 2024)
    timm_name: str = ""  # the timm model with the same layout (for users who save weights from timm)


ARCHS: dict[str, VitArch] = {
    "vit_tiny_patch16": VitArch(16, 192, 12, 3, timm_name="vit_tiny_patch16_224"),  # tests and smoke runs
    "vit_small_patch16_dino": VitArch(16, 384, 12, 6, timm_name="vit_small_patch16_224.dino"),
    "vit_small_patch8_dino": VitArch(8, 384, 12, 6, timm_name="vit_small_patch8_224.dino"),
    "vit_base_patch16_dino": VitArch(16, 768, 12, 12, timm_name="vit_base_patch16_224.dino"),
    "vit_base_patch8_dino": VitArch(8, 768, 12, 12, timm_name="vit_base_patch8_224.dino"),
    "vit_small_patch14_dinov2": VitArch(14, 384, 12, 6, True, timm_name="vit_small_patch14_dinov2.lvd142m"),
    "vit_base_patch14_dinov2": VitArch(14, 768, 12, 12, True, timm_name="vit_base_patch14_dinov2.lvd142m"),
    "vit_small_patch14_reg4_dinov2": VitArch(14, 384, 12, 6, True, 4, "vit_small_patch14_reg4_dinov2.lvd142m"),
    "vit_base_patch14_reg4_dinov2": VitArch(14, 768, 12, 12, True, 4, "vit_base_patch14_reg4_dinov2.lvd142m"),
}


def get_arch(name: str) -> VitArch:
    if name not in ARCHS:
        raise ValueError(f"unknown model.backbone {name!r}; expected one of {sorted(ARCHS)}")
    return ARCHS[name]


class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), 1e-5))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, N, C / heads) each
        x = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(C / heads)) v
        return self.proj(x.transpose(1, 2).reshape(B, N, C))  # (B, N, C)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, layer_scale: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim) if layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)
        self.ls2 = LayerScale(dim) if layer_scale else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, C), patches in row-major order


class VisionTransformer(nn.Module):
    """A ViT for ``resolution`` x ``resolution`` images (the position embedding is sized for that grid).

    forward(x (B, 3, H, W), normalised as the weights expect) -> (B, prefix + N, C) tokens after ``num_blocks``
    blocks (all by default); the prefix (class token, then registers) comes first. The final norm is not applied:
    DINOSAUR reads a block's output directly.
    """

    def __init__(self, arch: VitArch, resolution: int) -> None:
        super().__init__()
        if resolution % arch.patch_size:
            raise ValueError(f"model.resolution={resolution} must be a multiple of the backbone's patch size "
                             f"{arch.patch_size}")
        self.arch = arch
        self.grid = resolution // arch.patch_size
        C = arch.embed_dim
        self.num_prefix_tokens = 1 + arch.reg_tokens
        self.no_embed_class = arch.reg_tokens > 0  # as timm: with registers the position embedding covers patches
        self.patch_embed = PatchEmbed(arch.patch_size, C)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, C))
        self.reg_token = nn.Parameter(torch.zeros(1, arch.reg_tokens, C)) if arch.reg_tokens else None
        embed_len = self.grid**2 + (0 if self.no_embed_class else 1)
        self.pos_embed = nn.Parameter(torch.randn(1, embed_len, C) * 0.02)
        self.blocks = nn.ModuleList(Block(C, arch.num_heads, arch.layer_scale) for _ in range(arch.depth))
        self.norm = nn.LayerNorm(C, eps=1e-6)  # kept so that whole checkpoints load; not applied
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.reg_token is not None:
            nn.init.normal_(self.reg_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor, num_blocks: int | None = None) -> Tensor:
        x = self.patch_embed(x)  # (B, N, C)
        B = x.shape[0]
        prefix = [self.cls_token.expand(B, -1, -1)]
        if self.reg_token is not None:
            prefix.append(self.reg_token.expand(B, -1, -1))
        if self.no_embed_class:
            x = torch.cat(prefix + [x + self.pos_embed], dim=1)  # (B, prefix + N, C)
        else:
            x = torch.cat(prefix + [x], dim=1) + self.pos_embed
        for block in self.blocks[: num_blocks or len(self.blocks)]:
            x = block(x)
        return x


def convert_state_dict(state: dict[str, Tensor], model: VisionTransformer) -> dict[str, Tensor]:
    """A checkpoint's tensors in this module's layout: unwraps ``teacher`` / ``model`` / ``state_dict`` and the
    ``module.`` / ``backbone.`` prefixes (DINO training checkpoints), drops DINO's projection head, converts the
    official DINOv2 names, and resamples the position embedding to this model's grid (bicubic, as timm)."""
    for key in ("teacher", "model", "state_dict"):
        if key in state and isinstance(state[key], dict):
            state = state[key]
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "backbone."):
            k = k[len(prefix):] if k.startswith(prefix) else k
        if k.startswith("head.") or k == "mask_token":
            continue
        out[k.replace(".mlp.w12.", ".mlp.fc1.").replace(".mlp.w3.", ".mlp.fc2.")] = v
    if "register_tokens" in out:  # official DINOv2 with registers -> timm's no_embed_class layout
        out["reg_token"] = out.pop("register_tokens")
        out["cls_token"] = out["cls_token"] + out["pos_embed"][:, :1]
        out["pos_embed"] = out["pos_embed"][:, 1:]
    if "pos_embed" in out and out["pos_embed"].dim() == 3:
        out["pos_embed"] = _resample_pos_embed(out["pos_embed"], model)
    return out


def _resample_pos_embed(pos: Tensor, model: VisionTransformer) -> Tensor:
    prefix = 0 if model.no_embed_class else 1
    n = pos.shape[1] - prefix
    side = int(round(n**0.5))
    if side * side != n or side == model.grid:
        return pos  # a non-square table is left for the shape check to report
    grid = pos[:, prefix:].reshape(1, side, side, -1).permute(0, 3, 1, 2).float()  # (1, C, side, side)
    grid = F.interpolate(grid, size=(model.grid, model.grid), mode="bicubic", antialias=True, align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, model.grid**2, -1).to(pos.dtype)  # (1, N, C)
    return torch.cat([pos[:, :prefix], grid], dim=1)
