"""Building blocks of the Slot Attention models: position embedding, CNN encoder, spatial-broadcast decoders.

Layouts are NCHW (PyTorch); the official code is NHWC, so shapes here are permuted accordingly.
Glossary: B batch, K slots, D slot_dim, C channels, H, W image size, N = H * W.
Initialisation follows Keras (glorot-uniform kernels, zero biases) so the paper presets start as the paper did.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slotlab.nn.fast_paths import broadcast_gather


def keras_init_(module: nn.Module) -> nn.Module:
    """Glorot-uniform weights and zero biases for every Linear/Conv in ``module`` (Keras defaults)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def build_grid(height: int, width: int, device=None) -> Tensor:
    """The official 4-channel grid [y, x, 1 - y, 1 - x] with linspace(0, 1) per axis: (1, 4, H, W)."""
    ys = torch.linspace(0.0, 1.0, height, device=device)
    xs = torch.linspace(0.0, 1.0, width, device=device)
    y, x = torch.meshgrid(ys, xs, indexing="ij")  # (H, W) each
    grid = torch.stack([y, x], dim=0)  # (2, H, W)
    return torch.cat([grid, 1.0 - grid], dim=0).unsqueeze(0)  # (1, 4, H, W)


class SoftPositionEmbed(nn.Module):
    """Adds a learned linear map of the fixed coordinate grid to a feature map (official ``SoftPositionEmbed``).

    ``scale`` multiplies the grid (1: the official [0, 1] per axis). A larger one gives the embedding a steeper
    slope per pixel for the same weights: with Adam, whose steps have the size of the learning rate whatever the
    gradient's, the map reaches a slope that separates neighbouring pixels ``scale`` times sooner."""

    def __init__(self, channels: int, resolution: tuple[int, int], scale: float = 1.0) -> None:
        super().__init__()
        self.proj = keras_init_(nn.Linear(4, channels))
        self.scale = scale
        self.register_buffer("grid", build_grid(*resolution) * scale, persistent=False)

    def embedding(self) -> Tensor:
        """The additive embedding alone, (1, C, H, W)."""
        return torch.einsum("bihw,ci->bchw", self.grid, self.proj.weight) + self.proj.bias[None, :, None, None]

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, C, H, W)
        return x + self.embedding()

    def offset(self, centers: Tensor) -> Tensor:
        """The embedding is linear in (y, x): emb(p - c) = emb(p) - offset(c). centers (..., 2) in [0, 1] grid
        units (y, x) -> (..., C). Subtracting it from a broadcast vector re-centres the embedding on ``c``."""
        w = self.proj.weight * self.scale  # (C, 4) over [y, x, 1 - y, 1 - x], on the scaled grid
        return centers @ torch.stack([w[:, 0] - w[:, 2], w[:, 1] - w[:, 3]])  # (..., C)


class Encoder(nn.Module):
    """CNN (5x5 convs, ReLU) + soft position embedding + flatten + LayerNorm + MLP: image -> (B, N, C) set.

    ``strides`` gives one stride per conv (all 1 for object discovery; 1, 2, 2, 1 for set prediction).
    ``pos_embed=False`` leaves positions out (Invariant Slot Attention adds them relative to each slot instead).
    ``channels_last`` (an attribute too) runs the convs on NHWC memory: the same mathematics, faster on CPU.
    Strided convs use TF "SAME" padding (1 before, 2 after for 5x5 stride 2) so that official weights load exactly.
    """

    def __init__(self, resolution: tuple[int, int], channels: int = 64, strides=(1, 1, 1, 1),
                 kernel_size: int = 5, mlp_dim: int | None = None, in_channels: int = 3,
                 pos_embed: bool = True, channels_last: bool = True) -> None:
        super().__init__()
        self.channels_last = channels_last
        layers: list[nn.Module] = []
        c_in, h, w = in_channels, *resolution
        for s in strides:
            layers += [SamePadConv(c_in, channels, kernel_size, s), nn.ReLU()]
            c_in, h, w = channels, -(-h // s), -(-w // s)
        self.cnn = nn.Sequential(*layers)
        self.feature_resolution = (h, w)
        self.pos = SoftPositionEmbed(channels, (h, w)) if pos_embed else nn.Identity()
        self.norm = nn.LayerNorm(channels, eps=1e-3)
        mlp_dim = mlp_dim or channels
        self.mlp = nn.Sequential(nn.Linear(channels, mlp_dim), nn.ReLU(), nn.Linear(mlp_dim, channels))
        keras_init_(self)

    def forward(self, image: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, N, C) features, N = H' * W'."""
        if self.channels_last:  # NHWC: oneDNN's direct kernels, no layout reorders; the (B, N, C) set is then a view
            x = image.contiguous(memory_format=torch.channels_last)
            for layer in self.cnn:  # ReLUs in place: a conv's backward needs its input, not its output
                x = F.relu_(x) if isinstance(layer, nn.ReLU) else layer(x)
        else:
            x = self.cnn(image)
        x = self.pos(x)  # (B, C, H', W')
        x = x.flatten(2).transpose(1, 2)  # (B, N, C)
        return self.mlp(self.norm(x))


class SamePadConv(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding (asymmetric when the stride is 2)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__(c_in, c_out, kernel_size, stride=stride, padding=0)
        self.kernel = kernel_size

    def forward(self, x: Tensor) -> Tensor:
        s, k = self.stride[0], self.kernel
        pads = []
        for size in (x.shape[-1], x.shape[-2]):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        if s == 1 and pads[0] == pads[1] == pads[2] == pads[3]:
            return F.conv2d(x, self.weight, self.bias, 1, pads[0])
        return super().forward(F.pad(x, pads))


class BroadcastStem(nn.Module):
    """First decoder layer: conv(slot broadcast over the grid + position embedding), computed exactly but cheaply.

    The conv is linear, so conv(broadcast(s) + P) = conv(broadcast(s)) + conv(P). conv(P) is the same for every
    slot and image (computed once per call). conv(broadcast(s)) at a pixel is (sum of the kernel taps that fall
    inside the image) @ s: only 5 x 5 "border classes" of pixels exist for a 5x5 kernel (2 rows/cols at each edge
    plus the interior), so we compute 25 vectors per slot and gather them. Cost: O(K * 25 * C * D) instead of
    O(K * H * W * 25 * C * D).
    """

    def __init__(self, slot_dim: int, channels: int, resolution: tuple[int, int], kernel_size: int = 5,
                 pos_scale: float = 1.0) -> None:
        super().__init__()
        self.pos = SoftPositionEmbed(slot_dim, resolution, pos_scale)
        self.conv = nn.Conv2d(slot_dim, channels, kernel_size, padding=kernel_size // 2)
        keras_init_(self.conv)
        self.resolution = resolution
        p = kernel_size // 2
        H, W = resolution
        # Each pixel's valid-tap window, as (row class, col class): class i < p at the top edge, 2p - i at the
        # bottom edge, p in the interior. The (2p+1)^2 classes index the per-slot vectors.
        rows = torch.full((H,), p, dtype=torch.long)
        cols = torch.full((W,), p, dtype=torch.long)
        for i in range(min(p, H)):
            rows[i] = i
            rows[H - 1 - i] = 2 * p - i if H - 1 - i >= p else rows[H - 1 - i]
        for j in range(min(p, W)):
            cols[j] = j
            cols[W - 1 - j] = 2 * p - j if W - 1 - j >= p else cols[W - 1 - j]
        pixel_class = (rows[:, None] * (2 * p + 1) + cols[None, :]).flatten()  # (H*W,)
        self.register_buffer("pixel_class", pixel_class, persistent=False)
        self.register_buffer("one_hot", F.one_hot(pixel_class, (2 * p + 1) ** 2).float(), persistent=False)
        # tap_mask[class, ky, kx] = 1 where the tap falls inside the image for that class.
        k = kernel_size
        masks = torch.zeros((2 * p + 1) ** 2, k, k)
        for r in range(2 * p + 1):
            for c in range(2 * p + 1):
                rr = torch.ones(k)
                cc = torch.ones(k)
                if r < p:
                    rr[: p - r] = 0  # near the top, taps above the image are padding
                elif r > p:
                    rr[k - (r - p):] = 0
                if c < p:
                    cc[: p - c] = 0
                elif c > p:
                    cc[k - (c - p):] = 0
                masks[r * (2 * p + 1) + c] = rr[:, None] * cc[None, :]
        self.register_buffer("tap_mask", masks, persistent=False)

    def forward(self, slots: Tensor) -> Tensor:
        """(B*K, D) slots -> (B*K, C, H, W) first-layer pre-activations, in channels-last (NHWC) memory."""
        if min(self.resolution) <= 2 * (self.conv.kernel_size[0] // 2):
            return self.plain(slots)
        kernels = torch.einsum("odyx,nyx->nod", self.conv.weight, self.tap_mask)  # (classes, C, D)
        per_class = torch.einsum("bd,nod->bno", slots, kernels)  # (B*K, classes, C)
        pos = F.conv2d(self.pos.embedding(), self.conv.weight, self.conv.bias, padding=self.conv.padding)
        return broadcast_gather(per_class, pos, self.pixel_class, self.one_hot)  # (B*K, C, H, W) + (1, C, H, W)

    def plain(self, slots: Tensor) -> Tensor:
        """The literal formulation: broadcast, add the embedding, convolve. (B*K, D) -> (B*K, C, H, W)."""
        H, W = self.resolution
        x = slots[:, :, None, None].expand(-1, -1, H, W)
        return self.conv(self.pos(x))


class BroadcastDecoder(nn.Module):
    """Spatial-broadcast decoder at full resolution (the paper's Multi-dSprites / Tetrominoes decoder).

    Each slot is broadcast to an (H, W) grid, the position embedding is added, then ``num_layers`` convs of
    ``kernel_size`` with ReLU and a final 3x3 conv to 4 channels (RGB + mask logit). The first layer is computed by
    :class:`BroadcastStem` (exact, cheaper) unless ``fast_stem=False``. ``channels_last`` runs the convs on NHWC
    memory (which the fast stem writes directly) with the ReLUs in place: no oneDNN layout reorders and no extra
    (B*K, C, H, W) copies, identical mathematics. Both are attributes too (``fast_paths.set_fast_paths``).
    ``subpixels`` r > 1: the output conv gives 4 r^2 channels per grid cell, rearranged into its r x r pixels
    (pixel shuffle), so the drawing is r times the grid's resolution for the cost of a wider last conv.
    """

    def __init__(self, slot_dim: int, resolution: tuple[int, int], channels: int = 32, num_layers: int = 3,
                 kernel_size: int = 5, fast_stem: bool = True, channels_last: bool = True,
                 pos_scale: float = 1.0, subpixels: int = 1) -> None:
        super().__init__()
        self.resolution = resolution  # the grid's; the drawing is subpixels times larger
        self.subpixels = subpixels
        self.fast_stem = fast_stem
        self.channels_last = channels_last
        self.stem = BroadcastStem(slot_dim, channels, resolution, kernel_size, pos_scale)
        layers: list[nn.Module] = [nn.ReLU()]
        for _ in range(num_layers - 1):
            layers += [nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2), nn.ReLU()]
        layers.append(nn.Conv2d(channels, 4 * subpixels ** 2, 3, padding=1))
        self.body = keras_init_(nn.Sequential(*layers))

    def forward(self, slots: Tensor) -> Tensor:
        """(B, K, D) -> (B, K, 4, H, W): per-slot RGB (3) and mask logit (1)."""
        B, K, D = slots.shape
        flat = slots.reshape(B * K, D)
        x = self.stem(flat) if self.fast_stem else self.stem.plain(flat)  # (B*K, C, H, W)
        r = self.subpixels
        size = (self.resolution[0] * r, self.resolution[1] * r)
        if not self.channels_last:
            x = self.body(x.contiguous())  # (B*K, 4 r^2, H, W)
            return F.pixel_shuffle(x, r).reshape(B, K, 4, *size)
        x = x.contiguous(memory_format=torch.channels_last)  # a no-op after the fast stem
        for layer in self.body:  # a conv's backward needs its input, not its output: ReLU may overwrite it
            x = F.relu_(x) if isinstance(layer, nn.ReLU) else layer(x)
        if r > 1:  # (B*K, 4 r^2, H, W) -> (B*K, 4, H r, W r): channel c * r^2 + i * r + j is pixel (i, j) of c
            x = F.pixel_shuffle(x, r)
        return x.reshape(B, K, 4, *size)  # (B, K, 4, H r, W r)


class UpsampleBroadcastDecoder(nn.Module):
    """The official CLEVR decoder: broadcast to 8x8, 4 stride-2 transposed convs (to 128x128), two stride-1.

    Transposed convs reproduce TF "SAME" exactly: stride-2 5x5 uses padding 1 and drops the last row/column.
    ``channels_last`` (an attribute too) runs them on NHWC memory: identical mathematics, no oneDNN reorders.
    """

    def __init__(self, slot_dim: int, resolution: tuple[int, int] = (128, 128), channels: int = 64,
                 broadcast: tuple[int, int] = (8, 8), channels_last: bool = True) -> None:
        super().__init__()
        self.broadcast = broadcast
        self.channels_last = channels_last
        self.pos = SoftPositionEmbed(slot_dim, broadcast)
        h, w = broadcast
        ups: list[nn.Module] = []
        c_in = slot_dim
        while (h, w) != tuple(resolution):
            if h * 2 > resolution[0] or w * 2 > resolution[1]:
                raise ValueError(f"UpsampleBroadcastDecoder: cannot reach {resolution} from {broadcast} by doubling")
            ups.append(nn.ConvTranspose2d(c_in, channels, 5, stride=2, padding=1))
            c_in, h, w = channels, h * 2, w * 2
        self.ups = nn.ModuleList(ups)
        self.conv5 = nn.ConvTranspose2d(c_in, channels, 5, stride=1, padding=2)
        self.out = nn.ConvTranspose2d(channels, 4, 3, stride=1, padding=1)
        keras_init_(self)
        self.resolution = resolution

    def forward(self, slots: Tensor) -> Tensor:
        """(B, K, D) -> (B, K, 4, H, W)."""
        B, K, D = slots.shape
        x = slots.reshape(B * K, D, 1, 1).expand(-1, -1, *self.broadcast)
        x = self.pos(x)  # (B*K, D, 8, 8)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for up in self.ups:
            x = F.relu(up(x)[..., :-1, :-1])  # TF SAME: keep outputs 0 .. 2H-1
        x = self.conv5(x)
        x = self.out(F.relu_(x) if self.channels_last else F.relu(x))  # in place: conv5's backward needs only x
        return x.reshape(B, K, 4, *self.resolution)


class MLPDecoder(nn.Module):
    """Per-pixel MLP decoder: each (slot, pixel) pair -> RGB + mask logit, from the slot and the pixel position.

    The first layer is W_s @ slot + W_p @ pos(pixel) + b, computed per slot and per pixel separately and broadcast-
    added (exact). ``num_freqs`` > 0 adds Fourier features of the coordinates so the MLP can draw sharp edges.

    With ``centers`` (and optionally ``scales``) given, pixel coordinates are taken relative to each slot's own
    frame, (pos - center_k) / scale_k, as in Invariant Slot Attention (Biza et al., ICML 2023): the decoder then
    draws an object the same way wherever it is, instead of learning every shape at every position.
    """

    def __init__(self, slot_dim: int, resolution: tuple[int, int], hidden: int = 64, num_layers: int = 3,
                 num_freqs: int = 0, table: bool = False, norm: str = "none") -> None:
        super().__init__()
        if norm not in ("none", "layer"):
            raise ValueError(f"MLPDecoder: norm must be 'none' or 'layer', got {norm!r}")
        self.resolution = resolution
        self.num_freqs = num_freqs
        # ``table``: a learned feature for every relative pixel offset (2H-1 x 2W-1, sampled bilinearly), so the
        # decoder can draw 1-pixel detail in the slot's frame without the spectral bias of Fourier features.
        self.table = nn.Parameter(torch.zeros(1, hidden, 2 * resolution[0] - 1, 2 * resolution[1] - 1)) \
            if table else None
        grid = build_grid(*resolution)[0, :2].flatten(1).T * 2 - 1  # (H*W, 2), (y, x) in [-1, 1]
        self.register_buffer("grid", grid, persistent=False)
        self.slot_proj = nn.Linear(slot_dim, hidden)
        self.pos_proj = nn.Linear(2 + 4 * num_freqs, hidden, bias=False)
        # per-band weights of the Fourier features: a coarse-to-fine schedule can open the bands one by one
        self.register_buffer("band_weights", torch.ones(num_freqs))
        def activation() -> list[nn.Module]:  # ``norm="layer"``: LayerNorm over the hidden units, then ReLU
            return [nn.LayerNorm(hidden), nn.ReLU()] if norm == "layer" else [nn.ReLU()]

        layers: list[nn.Module] = []
        for _ in range(num_layers - 1):
            layers += [*activation(), nn.Linear(hidden, hidden)]
        layers += [*activation(), nn.Linear(hidden, 4)]
        self.body = nn.Sequential(*layers)
        keras_init_(self)

    def open_bands(self, progress: float) -> None:
        """Coarse-to-fine (as BARF, Lin et al. 2021): at ``progress`` in [0, 1] of the schedule, bands up to
        progress * num_freqs are open, the next one partly (cosine ramp)."""
        alpha = progress * self.num_freqs
        bands = torch.arange(self.num_freqs, dtype=torch.float32, device=self.band_weights.device)
        t = (alpha - bands).clamp(0, 1)  # on the buffer's device: no host-to-device copy (a sync on a GPU)
        self.band_weights.copy_((1 - torch.cos(t * torch.pi)) / 2)

    def features(self, coords: Tensor) -> Tensor:
        """(..., 2) coordinates -> (..., 2 + 4 * num_freqs) [coords, sin and cos of pi * 2^f * coords]."""
        feats = [coords]
        for f in range(self.num_freqs):
            w = self.band_weights[f]
            feats += [w * torch.sin(coords * (torch.pi * 2**f)), w * torch.cos(coords * (torch.pi * 2**f))]
        return torch.cat(feats, dim=-1)

    def forward(self, slots: Tensor, centers: Tensor | None = None, scales: Tensor | None = None) -> Tensor:
        """(B, K, D) slots, optional (B, K, 2) centers and scales in grid units -> (B, K, 4, H, W)."""
        B, K, _ = slots.shape
        if centers is None:
            pos = self.pos_proj(self.features(self.grid))  # (H*W, hidden), shared by every slot
        else:
            rel = self.grid - centers[:, :, None, :]  # (B, K, H*W, 2)
            if scales is not None:
                rel = rel / scales[:, :, None, :]
            pos = self.pos_proj(self.features(rel))  # (B, K, H*W, hidden)
            if self.table is not None:  # offsets span [-2, 2]; grid_sample wants (x, y) in [-1, 1]
                where = (rel.flip(-1) / 2).reshape(B * K, 1, -1, 2)  # (B*K, 1, H*W, 2)
                table = self.table.expand(B * K, -1, -1, -1)
                looked = F.grid_sample(table, where, mode="bilinear", padding_mode="zeros", align_corners=True)
                pos = pos + looked.reshape(B, K, -1, rel.shape[2]).transpose(2, 3)  # (B, K, H*W, hidden)
        h = self.slot_proj(slots)[:, :, None, :] + pos  # (B, K, H*W, hidden)
        out = self.body(h)  # (B, K, H*W, 4)
        return out.transpose(2, 3).reshape(B, K, 4, *self.resolution)


def slot_frames(attn: Tensor, resolution: tuple[int, int], min_scale: float = 0.05) -> tuple[Tensor, Tensor]:
    """Each slot's center and spread on the [-1, 1] grid from its attention (B, K, N = H * W).

    Returns centers (B, K, 2) = attention-weighted mean position and scales (B, K, 2) = weighted standard deviation
    (at least ``min_scale``), the slot's frame in Invariant Slot Attention.
    """
    grid = build_grid(*resolution, device=attn.device)[0, :2].flatten(1).T * 2 - 1  # (N, 2)
    weights = attn / attn.sum(dim=-1, keepdim=True).clamp(min=1e-8)  # (B, K, N)
    centers = weights @ grid  # (B, K, 2)
    var = weights @ grid.square() - centers.square()
    return centers, var.clamp(min=min_scale**2).sqrt()
