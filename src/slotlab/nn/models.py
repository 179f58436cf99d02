"""Models built on Slot Attention: composition only, returning dicts of named tensors.

- :class:`SlotAttentionAutoEncoder` — unsupervised object discovery (paper section 3 / official ``model.py``):
  encoder -> Slot Attention -> spatial-broadcast decoder -> masks softmaxed across slots -> recomposed image.
- :class:`SetPredictor` — supervised set prediction (paper section 4 / official ``SlotAttentionClassifier``):
  strided encoder -> Slot Attention -> per-slot MLP with sigmoid outputs (object properties).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from slotlab.config import ModelConfig
from slotlab.nn.fast_paths import recompose
from slotlab.nn.invariant import InvariantSlotAttention
from slotlab.nn.modules import BroadcastDecoder, Encoder, MLPDecoder, UpsampleBroadcastDecoder, keras_init_, slot_frames
from slotlab.nn.precision import fp32
from slotlab.nn.slot_attention import SlotAttention
from slotlab.set_layout import get_layout


def build_decoder(cfg: ModelConfig) -> nn.Module:
    res = (cfg.resolution, cfg.resolution)
    if not cfg.decoder_pos_scale > 0 or (cfg.decoder_pos_scale != 1 and cfg.decoder != "broadcast"):
        raise ValueError(f"model.decoder_pos_scale={cfg.decoder_pos_scale!r} must be > 0, and differ from 1 only "
                         f"with decoder='broadcast' (got decoder={cfg.decoder!r})")
    r = cfg.decoder_subpixels
    if not isinstance(r, int) or r < 1 or (r > 1 and (cfg.decoder != "broadcast" or cfg.resolution % r)):
        raise ValueError(f"model.decoder_subpixels={r!r} must be an integer >= 1, and above 1 only with "
                         f"decoder='broadcast' and a drawing size ({cfg.resolution}) that it divides (got "
                         f"decoder={cfg.decoder!r})")
    if cfg.decoder == "broadcast":
        grid = (cfg.resolution // r, cfg.resolution // r)
        return BroadcastDecoder(cfg.slot_dim, grid, cfg.decoder_channels, cfg.decoder_layers, cfg.decoder_kernel,
                                fast_stem=cfg.fast_stem, pos_scale=cfg.decoder_pos_scale, subpixels=r)
    if cfg.decoder == "upsample":
        return UpsampleBroadcastDecoder(cfg.slot_dim, res, cfg.decoder_channels, (cfg.broadcast_size,) * 2)
    if cfg.decoder == "mlp":
        return MLPDecoder(cfg.slot_dim, res, cfg.decoder_channels, cfg.decoder_layers, cfg.decoder_freqs,
                          table=cfg.decoder_table, norm=cfg.decoder_norm)
    raise ValueError(f"unknown decoder {cfg.decoder!r}; expected one of 'broadcast', 'upsample', 'mlp'")


class SlotAttentionAutoEncoder(nn.Module):
    """Object-discovery autoencoder.

    forward(image (B, 3, H, W) in [-1, 1]) returns:
        ``recon`` (B, 3, H, W) recomposed image; ``recons`` (B, K, 3, H, W) per-slot RGB;
        ``masks`` (B, K, 1, H, W) alpha masks (softmax over K); ``slots`` (B, K, D);
        ``attns`` (B, T, K, N) the attention of each of the T iterations; ``attn`` (B, K, N) the attention that
        assigns the inputs to the final slots (the last iteration's; with invariant attention the extra round that
        places the slots, :class:`slotlab.nn.slot_attention.SlotCore`).
    With ``model.background="uniform"`` ``recons`` and ``masks`` have K + 1 components, the background last.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        validate_model_config(cfg)
        self.cfg = cfg
        invariant = cfg.attention == "invariant"
        self.encoder = Encoder((cfg.resolution, cfg.resolution), cfg.encoder_channels, tuple(cfg.encoder_strides),
                               kernel_size=cfg.encoder_kernel, mlp_dim=cfg.encoder_mlp_dim, pos_embed=not invariant)
        if invariant:
            self.slot_attention = InvariantSlotAttention(
                cfg.num_slots, cfg.encoder_channels, self.encoder.feature_resolution, cfg.slot_dim, cfg.num_iters,
                cfg.mlp_hidden_dim, cfg.grid_hidden_dim, slot_init=cfg.slot_init, locality=cfg.attn_locality,
                relative_values=cfg.relative_values,
            )
        else:
            self.slot_attention = SlotAttention(
                cfg.num_slots, cfg.encoder_channels, cfg.slot_dim, cfg.num_iters, cfg.mlp_hidden_dim,
                implicit_grad=cfg.implicit_grad, straight_through=cfg.straight_through, slot_init=cfg.slot_init,
            )
            self.slot_attention.check_finite = False  # the image is checked here; NaN weights surface in the loss
        self.slot_attention.test_iters = cfg.test_iters or None  # T in eval mode (SlotCore.iterations)
        # weight of the attention prior on the masks (mask_source="decoder+attention"); saved with the weights
        self.register_buffer("mask_prior_weight", torch.tensor(1.0))
        self.decoder = build_decoder(cfg)
        if cfg.background == "uniform":  # slotlab option: a background layer behind the K slots
            self.background_color = keras_init_(nn.Linear(cfg.encoder_channels, 3))  # mean feature -> RGB
            self.background_logit = nn.Parameter(torch.zeros(1))  # its mask logit, the same at every pixel
        self.fused_recompose = True  # exact; False = autograd's separate ops (fast_paths.set_fast_paths)
        self.check_finite = True  # reject NaN/Inf images (a device sync on a GPU; training turns it off there)

    def forward(self, image: Tensor, *, num_slots: int | None = None, num_iters: int | None = None,
                slots: Tensor | None = None) -> dict[str, Tensor]:
        image = check_image(image, self.cfg.resolution, self.check_finite, next(self.encoder.parameters()).dtype)
        features = self.encoder(image)  # (B, N, C)
        sa = self.slot_attention(features, num_slots=num_slots, num_iters=num_iters, slots=slots)
        out = fp32(self.decode(sa))  # (B, K, 4, H, W); fp32 under autocast: mask softmax, recomposition, loss
        if self.cfg.background == "uniform":  # (B, K + 1, 4, H, W): the background is the last component
            out = torch.cat([out, self.background(features, out.shape[-2:])], dim=1)
        recons, logits = out[:, :, :3], out[:, :, 3:]  # (B, K, 3, H, W), (B, K, 1, H, W)
        if self.fused_recompose and self.cfg.mask_source == "decoder":
            recon, masks = recompose(out)  # the same softmax and sum, one autograd node (fast_paths.py)
        else:
            masks = self.alpha_masks(logits, sa["attn"])  # (B, K, 1, H, W)
            recon = (recons * masks).sum(dim=1)  # (B, 3, H, W)
        return {"recon": recon, "recons": recons, "masks": masks, "slots": sa["slots"], "attn": sa["attn"],
                "attns": sa["attns"]}

    def background(self, features: Tensor, size: torch.Size) -> Tensor:
        """The background layer (``model.background="uniform"``): one flat colour per image, read from the mean of
        the encoder's features (B, N, C), and one learned mask logit -> (B, 1, 4, H, W) like a slot's output."""
        color = fp32(self.background_color(features.mean(dim=1)))  # (B, 3)
        logit = self.background_logit.expand(color.shape[0], 1)  # (B, 1)
        return torch.cat([color, logit.to(color.dtype)], dim=1)[:, None, :, None, None].expand(-1, -1, -1, *size)

    def decode(self, sa: dict[str, Tensor]) -> Tensor:
        """Slot Attention's output -> (B, K, 4, H, W) per-slot RGB and mask logit, in the configured frame."""
        if "positions" in sa and isinstance(self.decoder, MLPDecoder):  # invariant: each slot in its own frame
            return self.decoder(sa["slots"], sa["positions"])
        if "positions" in sa:  # broadcast decoder: its linear position embedding, made relative to the slot
            return self.decoder(sa["slots"] - self.decoder.stem.pos.offset((sa["positions"] + 1) / 2))
        if self.cfg.decoder_frame == "image":
            return self.decoder(sa["slots"])
        centers, scales = slot_frames(sa["attn"], self.encoder.feature_resolution)  # frames from the attention
        return self.decoder(sa["slots"], centers, scales if self.cfg.decoder_frame == "slot_scale" else None)

    def alpha_masks(self, logits: Tensor, attn: Tensor) -> Tensor:
        """(B, K, 1, H, W) mask logits and (B, K, N) attention -> alpha masks, a softmax over the K slots."""
        if self.cfg.mask_source == "attention":  # the last iteration's attention is already a softmax over K
            return attn.reshape(logits.shape)
        if self.cfg.mask_source == "decoder+attention":  # the attention as a prior on the decoder's masks
            prior = attn.reshape(logits.shape).clamp(min=1e-6).log()
            return (logits + self.mask_prior_weight * prior).softmax(dim=1)
        return logits.softmax(dim=1)  # the paper: alpha masks compete across slots


class SetPredictor(nn.Module):
    """Set prediction: each slot predicts one object's properties (or zeros for "no object").

    forward(image (B, 3, H, W) in [-1, 1]) returns ``pred`` (B, K, P) in [0, 1] (sigmoid; column ``layout.flag`` is
    the confidence), ``slots`` (B, K, D), ``attn`` (B, K, N) and ``attns`` (B, T, K, N). P comes from
    ``cfg.set_layout`` (CLEVR: 19). The official model: 5x5 convs with strides 1, 2, 2, 1 (128 -> 32x32 features),
    position embedding, LayerNorm + MLP, Slot Attention (K=10, T=3), then Dense(64, ReLU), Dense(19, sigmoid).
    ``head_positions`` (not in the paper) also gives the head each slot's attention centroid (2 numbers).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.layout = get_layout(cfg.set_layout)
        if cfg.background != "none":
            raise ValueError(f"model.background={cfg.background!r} is for the autoencoder; set prediction has none")
        if cfg.attention != "slot":
            raise ValueError(f"set prediction supports model.attention='slot' only, got {cfg.attention!r}")
        self.encoder = Encoder((cfg.resolution, cfg.resolution), cfg.encoder_channels, tuple(cfg.encoder_strides),
                               kernel_size=cfg.encoder_kernel, mlp_dim=cfg.encoder_mlp_dim)
        self.slot_attention = SlotAttention(
            cfg.num_slots, cfg.encoder_channels, cfg.slot_dim, cfg.num_iters, cfg.mlp_hidden_dim,
            implicit_grad=cfg.implicit_grad, straight_through=cfg.straight_through, slot_init=cfg.slot_init,
        )
        self.slot_attention.check_finite = False  # the image is checked here
        self.slot_attention.test_iters = cfg.test_iters or None
        self.check_finite = True  # reject NaN/Inf images (a device sync on a GPU; training turns it off there)
        head_in = cfg.slot_dim + (2 if cfg.head_positions else 0)
        self.head = keras_init_(nn.Sequential(nn.Linear(head_in, cfg.head_hidden_dim), nn.ReLU(),
                                              nn.Linear(cfg.head_hidden_dim, self.layout.width)))

    def forward(self, image: Tensor, *, num_slots: int | None = None, num_iters: int | None = None,
                slots: Tensor | None = None) -> dict[str, Tensor]:
        image = check_image(image, self.cfg.resolution, self.check_finite, next(self.encoder.parameters()).dtype)
        features = self.encoder(image)  # (B, N, C)
        sa = self.slot_attention(features, num_slots=num_slots, num_iters=num_iters, slots=slots)
        head_in = sa["slots"]  # (B, K, D)
        if self.cfg.head_positions:  # slotlab option: each slot's attention centroid, in [0, 1], beside the slot
            centers, _ = slot_frames(sa["attn"], self.encoder.feature_resolution)  # (B, K, 2) in [-1, 1]
            head_in = torch.cat([head_in, (centers + 1) / 2], dim=-1)  # (B, K, D + 2)
        pred = torch.sigmoid(fp32(self.head(head_in)))  # (B, K, P); fp32 under autocast, for the loss and AP
        return {"pred": pred, "slots": sa["slots"], "attn": sa["attn"], "attns": sa["attns"]}


def validate_slot_options(cfg: ModelConfig) -> None:
    """The Slot Attention options every model reads (test-time T, the temperature schedule), checked."""
    if not isinstance(cfg.test_iters, int) or cfg.test_iters < 0:
        raise ValueError(f"model.test_iters must be 0 (= model.num_iters) or a positive int, got {cfg.test_iters!r}")
    if not cfg.attn_temperature > 0 or cfg.attn_temperature_steps < 0:
        raise ValueError(f"model.attn_temperature must be > 0 and model.attn_temperature_steps >= 0, got "
                         f"{cfg.attn_temperature!r} and {cfg.attn_temperature_steps!r}")


def validate_locality(cfg: ModelConfig) -> None:
    """``model.attn_locality`` is a width >= 0; it and ``model.relative_values`` need invariant attention (slot
    positions)."""
    if not cfg.attn_locality >= 0:
        raise ValueError(f"model.attn_locality must be >= 0 (0 = no prior), got {cfg.attn_locality!r}")
    if cfg.attn_locality and cfg.attention != "invariant":
        raise ValueError(f"model.attn_locality={cfg.attn_locality} needs model.attention='invariant' (slots with "
                         f"positions), got attention={cfg.attention!r}")
    if cfg.relative_values and cfg.attention != "invariant":
        raise ValueError(f"model.relative_values=True needs model.attention='invariant' (positions relative to each "
                         f"slot), got attention={cfg.attention!r}")


def validate_model_config(cfg: ModelConfig) -> None:
    """Reject option combinations the model cannot build, naming what is expected."""
    validate_slot_options(cfg)
    if cfg.slot_init == "farthest" and cfg.attention != "slot":
        raise ValueError("model.slot_init='farthest' needs model.attention='slot'")
    if cfg.decoder_norm != "none" and cfg.decoder != "mlp":
        raise ValueError(f"model.decoder_norm={cfg.decoder_norm!r} is for decoder='mlp', not {cfg.decoder!r}")
    if cfg.mask_source not in ("decoder", "attention", "decoder+attention"):
        raise ValueError(
            f"model.mask_source must be 'decoder', 'attention' or 'decoder+attention', got {cfg.mask_source!r}"
        )
    if cfg.decoder_frame not in ("image", "slot", "slot_scale"):
        raise ValueError(f"model.decoder_frame must be 'image', 'slot' or 'slot_scale', got {cfg.decoder_frame!r}")
    if cfg.decoder_frame != "image" and (cfg.decoder != "mlp" or any(s != 1 for s in cfg.encoder_strides)):
        raise ValueError("model.decoder_frame='slot' needs decoder='mlp' and a full-resolution encoder")
    if cfg.attention not in ("slot", "invariant"):
        raise ValueError(f"model.attention must be 'slot' or 'invariant', got {cfg.attention!r}")
    if cfg.attention == "invariant" and cfg.decoder not in ("mlp", "broadcast"):
        raise ValueError("model.attention='invariant' needs decoder 'mlp' or 'broadcast' (slot frames)")
    validate_locality(cfg)
    video_only = {"slot_motion": "none", "absent_slots": "keep", "background_locality": True, "decoder_window": 0,
                  "mask_locality": 0.0}
    for key, default in video_only.items():
        if getattr(cfg, key) != default:
            raise ValueError(f"model.{key}={getattr(cfg, key)!r} is a video model option; this model is "
                             f"an image model (model.task={cfg.task!r}); leave it {default!r}")
    if cfg.attention == "invariant" and (cfg.implicit_grad or cfg.straight_through):
        raise ValueError("model.implicit_grad / model.straight_through need model.attention='slot'; the invariant "
                         "module has neither")
    for key in ("encoder_kernel", "decoder_kernel"):
        k = getattr(cfg, key)
        if k < 1 or k % 2 == 0:
            raise ValueError(f"model.{key} must be an odd positive kernel size (1, 3, 5, ...), got {k}")
    if cfg.background not in ("none", "uniform"):
        raise ValueError(f"model.background must be 'none' or 'uniform', got {cfg.background!r}")
    if cfg.background != "none" and cfg.mask_source != "decoder":
        raise ValueError("model.background='uniform' needs model.mask_source='decoder'")
    if cfg.mask_source != "decoder" and any(s != 1 for s in cfg.encoder_strides):
        raise ValueError(f"model.mask_source={cfg.mask_source!r} needs a full-resolution encoder (all strides 1)")


def set_step(model: SlotAttentionAutoEncoder, step: int) -> None:
    """Apply the model's training curricula at ``step`` (both are deterministic functions of the step):

    - ``mask_prior_steps``: the attention prior's weight on the masks falls from 1 to 0, after which the masks
      are the decoder's alone (the paper's model);
    - ``decoder_freq_steps``: the MLP decoder's Fourier bands open coarse-to-fine;
    - ``attn_temperature_steps``: the attention temperature falls linearly from ``attn_temperature`` to 1.
    """
    cfg = model.cfg
    if cfg.attn_temperature_steps > 0 and hasattr(model, "slot_attention"):
        progress = min(1.0, step / cfg.attn_temperature_steps)
        model.slot_attention.temperature = cfg.attn_temperature + (1.0 - cfg.attn_temperature) * progress
    if cfg.mask_prior_steps > 0 and hasattr(model, "mask_prior_weight"):
        model.mask_prior_weight.fill_(max(0.0, 1.0 - step / cfg.mask_prior_steps))
    if cfg.decoder_freq_steps > 0 and isinstance(getattr(model, "decoder", None), MLPDecoder):
        model.decoder.open_bands(min(1.0, step / cfg.decoder_freq_steps))


INPUT_RANGE = (-1.0, 1.0)  # what every slotlab model expects: RGB images scaled to [-1, 1]
RANGE_MARGIN = 0.1  # values this far outside the range are an error (a [0, 1] or [0, 255] image, say)


def check_image(image: Tensor, resolution: int, finite: bool = True, dtype: torch.dtype | None = None) -> Tensor:
    """The image batch, checked: float (B, 3, resolution, resolution); with ``finite`` (a device sync on a GPU,
    so training there skips it) also finite and in :data:`INPUT_RANGE` within :data:`RANGE_MARGIN`.

    Dtype rule: a floating image of another dtype (float64, float16, bfloat16) is cast to ``dtype``, the model's
    parameter dtype, outside autocast; integer images are an error (scale them to [-1, 1] first)."""
    if not isinstance(image, Tensor) or image.dim() != 4 or image.shape[1] != 3:
        got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"image must be (B, 3, H, W) RGB, got {got}")
    if tuple(image.shape[-2:]) != (resolution, resolution):
        raise ValueError(f"image must be {resolution}x{resolution} for this model, got {tuple(image.shape[-2:])}")
    if not image.is_floating_point():
        raise TypeError(f"image must be float in [-1, 1], got {image.dtype} (convert uint8 with x / 127.5 - 1)")
    if finite and image.numel():
        lo, hi = (float(v) for v in torch.aminmax(image.detach()))
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError("image contains NaN or Inf")
        a, b = INPUT_RANGE
        if lo < a - RANGE_MARGIN or hi > b + RANGE_MARGIN:
            raise ValueError(f"image values span [{lo:g}, {hi:g}] but the model expects [{a:g}, {b:g}] "
                             "(convert a [0, 255] image with x / 127.5 - 1, a [0, 1] image with 2 * x - 1)")
    if dtype is not None and image.dtype != dtype and not torch.is_autocast_enabled(image.device.type):
        image = image.to(dtype)
    return image
