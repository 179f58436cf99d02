"""SAVi: Slot Attention for Video (Kipf et al., "Conditional Object-Centric Learning from Video", ICLR 2022).

Per frame t, the slots of frame t - 1 are *predicted* forward and then *corrected* on frame t's features:

    slots_0 = init(conditioning)                       learned vectors, or an MLP of first-frame centres or boxes
    for t in 1..F:
        corrected_t = SlotAttention(encoder(frame_t), slots=predicted)   one iteration (model.num_iters), the paper
        predicted   = TransformerBlock(corrected_t)                      self-attention over the slots
    frame_t ~ decoder(corrected_t)                                       spatial broadcast, alpha masks over slots

With ``model.attention="invariant"`` (slotlab option, after Invariant Slot Attention, Biza et al., ICML 2023) each
slot also carries a position: the corrector's keys encode pixel positions relative to it, it becomes the centre of
mass of the slot's attention after each frame, and the broadcast decoder draws the slot in its own frame. A
conditional model starts each slot at its object's first-frame centre (a box's centre), so attention is local from
the first step instead of having to learn where each initial slot points.

The encoder (CNN + position embedding), Slot Attention (its fast paths) and the decoders are slotlab's own
(``nn.modules``, ``nn.slot_attention``, ``nn.models.build_decoder``); a slot keeps its object over time because it
carries over from frame to frame. Glossary: B batch, F frames, K slots, D slot_dim, N features per frame, G
conditioning rows (objects, row 0 the background), H, W frame size.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F_nn
from torch import Tensor, nn

from slotlab.config import ModelConfig
from slotlab.nn.fast_paths import recompose
from slotlab.nn.invariant import InvariantSlotAttention
from slotlab.nn.models import build_decoder, validate_locality
from slotlab.nn.modules import Encoder, keras_init_
from slotlab.nn.precision import fp32
from slotlab.nn.slot_attention import SlotAttention

CONDITIONING_WIDTH = {"centers": 2, "boxes": 4}  # signal channels before the presence flag
DROPPED_LOGIT = -1e4  # added to a dropped slot's mask logit: exp() underflows to 0, finite in fp16 / bf16 too


class SlotPredictor(nn.Module):
    """The predictor: one transformer block over the slots (multi-head self-attention, then an MLP, each with a
    residual and a post-LayerNorm, as SAVi's ``TransformerBlock``). (B, K, D) -> (B, K, D); ``active`` (B, K)
    bool, if given: the slots attended to (inactive ones are still updated, but no slot reads them)."""

    def __init__(self, slot_dim: int, num_heads: int = 4, mlp_dim: int = 256) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(slot_dim, num_heads, batch_first=True)
        self.norm_attn = nn.LayerNorm(slot_dim)
        self.mlp = keras_init_(nn.Sequential(nn.Linear(slot_dim, mlp_dim), nn.ReLU(), nn.Linear(mlp_dim, slot_dim)))
        self.norm_mlp = nn.LayerNorm(slot_dim)

    def forward(self, slots: Tensor, active: Tensor | None = None) -> Tensor:
        ignore = None if active is None else ~active
        x = self.norm_attn(slots + self.attn(slots, slots, slots, key_padding_mask=ignore, need_weights=False)[0])
        return self.norm_mlp(x + self.mlp(x))


class SAVi(nn.Module):
    """SAVi on videos (B, F, 3, H, W) in [-1, 1].

    ``model.conditioning``: "learned" (one learned initial vector per slot; unconditional), "centers" or "boxes"
    (conditioning (B, G, 3) or (B, G, 5): the first frame's signal of each object plus a presence flag, the
    ``centers`` / ``boxes`` of ``VideoSet.batch``; row k initialises slot k, absent rows and rows beyond G give the
    embedding of an all-zero signal, and with ``model.absent_slots="drop"`` their slots take no part).

    forward returns ``recon`` (B, F, 3, H, W) the recomposed frames (RGB, or the flow picture for
    ``model.target="flow"``); ``recons`` (B, F, K, 3, H, W); ``masks`` (B, F, K, 1, H, W) alpha masks (softmax over
    K); ``slots`` (B, F, K, D) the corrected slots; ``predicted`` (B, F, K, D) the predictor's output after each
    frame; ``attn`` (B, F, K, N) the corrector's attention; with invariant attention also ``positions``
    (B, F, K, 2), each slot's centre of mass on each frame, (y, x) in [-1, 1].
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        validate_savi_config(cfg)
        self.cfg = cfg
        res = (cfg.resolution, cfg.resolution)
        self.invariant = cfg.attention == "invariant"
        self.encoder = Encoder(res, cfg.encoder_channels, tuple(cfg.encoder_strides), kernel_size=cfg.encoder_kernel,
                               mlp_dim=cfg.encoder_mlp_dim, pos_embed=not self.invariant)
        learned = cfg.conditioning == "learned"
        slot_init = "learned" if learned else "random"
        if self.invariant:  # positions enter through the keys, relative to each slot
            self.corrector = InvariantSlotAttention(cfg.num_slots, cfg.encoder_channels,
                                                    self.encoder.feature_resolution, cfg.slot_dim, cfg.num_iters,
                                                    cfg.mlp_hidden_dim, cfg.grid_hidden_dim, slot_init=slot_init,
                                                    locality=cfg.attn_locality,
                                                    relative_values=cfg.relative_values)
        else:
            self.corrector = SlotAttention(cfg.num_slots, cfg.encoder_channels, cfg.slot_dim, cfg.num_iters,
                                           cfg.mlp_hidden_dim, slot_init=slot_init)
            self.corrector.check_finite = False  # the video is checked here
        self.predictor = SlotPredictor(cfg.slot_dim, cfg.predictor_heads, cfg.predictor_mlp_dim)
        if not learned:  # SAVi's coordinate encoder: an MLP from the signal (and presence) to a slot
            width = CONDITIONING_WIDTH[cfg.conditioning] + 1
            self.initializer = keras_init_(nn.Sequential(nn.Linear(width, cfg.predictor_mlp_dim), nn.ReLU(),
                                                         nn.Linear(cfg.predictor_mlp_dim, cfg.slot_dim)))
        # the decoder may draw at a lower resolution (cheaper; its RGB and mask logits are upsampled before the
        # softmax over slots, so the masks keep sub-pixel boundaries), or each slot in a window around it
        drawn = cfg.decoder_window or cfg.decoder_resolution or cfg.resolution
        self.decoder = build_decoder(dataclasses.replace(cfg, resolution=drawn))
        self.check_finite = True  # reject NaN/Inf videos (a device sync on a GPU; training turns it off there)

    def initial_slots(self, batch_size: int, conditioning: Tensor | None) -> Tensor:
        """The slots before the first frame, (B, K, D)."""
        if self.cfg.conditioning == "learned":
            return self.corrector.init_slots(batch_size, self.cfg.num_slots)
        return self.initializer(self.slot_conditioning(batch_size, conditioning))  # (B, K, D)

    def initial_positions(self, batch_size: int, conditioning: Tensor | None) -> Tensor | None:
        """With invariant attention, the slots' positions before the first frame, (B, K, 2) (y, x) in [-1, 1]: each
        object's first-frame centre (a box's centre), the image centre for absent rows and the background. None
        for a learned initialisation (the corrector draws them uniformly, as ISA) or slot attention."""
        if not self.invariant or self.cfg.conditioning == "learned":
            return None
        rows = self.slot_conditioning(batch_size, conditioning)  # (B, K, width)
        signal, present = rows[..., :-1], rows[..., -1:] > 0
        centre = signal if self.cfg.conditioning == "centers" else (signal[..., :2] + signal[..., 2:]) / 2
        if self.cfg.align_frames:  # image coordinates -> the attention grid's
            centre = image_to_grid(centre, self.encoder.feature_resolution)
        return torch.where(present, centre * 2 - 1, torch.zeros_like(centre))  # (B, K, 2)

    def decoder_centres(self, positions: Tensor) -> Tensor:
        """Slot positions (..., 2) in the attention grid's [-1, 1] -> the decoder grid's [0, 1], where its position
        embedding is re-centred: the same numbers, or (``model.align_frames``) the same image points."""
        centre = (positions + 1) / 2
        if not self.cfg.align_frames:
            return centre
        return image_to_grid(grid_to_image(centre, self.encoder.feature_resolution), self.decoder.resolution)

    def slot_roles(self, batch_size: int, conditioning: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
        """Which slots take part and which attend under the locality prior, (B, K) bool each, or None for all.

        ``model.absent_slots="drop"``: only the background slot (row 0) and the slots of present objects take part;
        the others get no attention and no mask. ``model.background_locality=False``: the background slot attends
        without the prior (it covers the whole frame, not a neighbourhood of the image centre)."""
        if self.cfg.conditioning == "learned":
            return None, None
        rows = self.slot_conditioning(batch_size, conditioning)  # (B, K, width)
        background = torch.zeros_like(rows[..., -1], dtype=torch.bool)
        background[:, 0] = True
        active = (rows[..., -1] > 0) | background if self.cfg.absent_slots == "drop" else None
        local = ~background if not self.cfg.background_locality else None
        return active, local

    def next_positions(self, places: list[Tensor]) -> Tensor:
        """Where the slots start on the next frame, (B, K, 2): their last centres, or (``model.slot_motion=
        "velocity"``) those moved on by their last displacement, inside the image."""
        if self.cfg.slot_motion == "velocity" and len(places) > 1:
            return (2 * places[-1] - places[-2]).clamp(-1, 1)
        return places[-1]

    def draw_in_windows(self, slots: Tensor, positions: Tensor) -> Tensor:
        """Each slot drawn at full resolution in a w x w window centred (to the nearest pixel) on its position,
        w = ``model.decoder_window``; beyond the window every pixel takes the value of the window's nearest edge
        pixel, so a slot that covers its window's border (the background) covers the frame, and one whose mask
        logits are low there (an object) stays inside. slots (M, K, D), positions (M, K, 2) (y, x) in [-1, 1]
        -> (M, K, 4, H, W). The cost is that of drawing w x w per slot, whatever the frame size."""
        H = W = self.cfg.resolution
        w = self.cfg.decoder_window
        if self.cfg.align_frames:  # the image point, in pixel indices (pixel i's centre is at i)
            centre = grid_to_image((positions + 1) / 2, self.encoder.feature_resolution) * H - 0.5
        else:
            centre = (positions + 1) / 2 * torch.tensor([H - 1, W - 1], dtype=positions.dtype,
                                                        device=positions.device)  # (M, K, 2) in pixels
        corner = centre.detach().round().long() - w // 2  # (M, K, 2): the window's top-left pixel
        inside = (centre - corner) / (w - 1)  # (M, K, 2): the slot's position in the window's [0, 1] grid
        out = fp32(self.decoder(slots - self.decoder.stem.pos.offset(inside)))  # (M, K, 4, w, w)
        rows = (torch.arange(H, device=slots.device) - corner[..., :1]).clamp(0, w - 1)  # (M, K, H)
        cols = (torch.arange(W, device=slots.device) - corner[..., 1:]).clamp(0, w - 1)  # (M, K, W)
        index = (rows[..., :, None] * w + cols[..., None, :]).flatten(-2)  # (M, K, H*W) into the window
        frame = out.flatten(-2).gather(-1, index[:, :, None].expand(-1, -1, 4, -1))  # (M, K, 4, H*W)
        return frame.unflatten(-1, (H, W))

    def attention_prior(self, attn: Tensor) -> Tensor:
        """``model.mask_source="decoder+attention"``: log attention (B, F, K, N), clamped at 1e-6, on the feature grid
        upsampled (bilinear) to the frame -> (B*F, K, 1, H, W), added to the decoder's mask logits: masks =
        softmax(decoder logits + log attention), as the image models' option. The attention is the corrector's
        on the same frame; it follows the objects' colours at the feature grid's resolution, the decoder refines."""
        h, w = self.encoder.feature_resolution
        log_attn = attn.flatten(0, 1).clamp(min=1e-6).log().unflatten(-1, (h, w))  # (B*F, K, h, w)
        size = (self.cfg.resolution, self.cfg.resolution)
        return F_nn.interpolate(log_attn.float(), size, mode="bilinear")[:, :, None]  # (B*F, K, 1, H, W)

    def mask_penalty(self, positions: Tensor) -> Tensor:
        """``model.mask_locality=s``: |g - p_k|^2 / (2 s^2) for the pixels g of the frame and the slot positions
        (M, K, 2) in [-1, 1] (y, x), 0 for the background's slot (k = 0), (M, K, 1, H, W): subtracted from the mask
        logits. Pixel i of H sits at -1 + 2 i / (H - 1), as the attention grid's cells."""
        H = W = self.cfg.resolution
        ys = torch.linspace(-1, 1, H, device=positions.device, dtype=positions.dtype)
        xs = torch.linspace(-1, 1, W, device=positions.device, dtype=positions.dtype)
        dist2 = ((ys[:, None] - positions[..., 0, None, None]).square()
                 + (xs[None, :] - positions[..., 1, None, None]).square())  # (M, K, H, W)
        objects = torch.ones_like(positions[..., 0])  # (M, K)
        objects[:, 0] = 0
        return (dist2 * objects[..., None, None] / (2 * self.cfg.mask_locality**2))[:, :, None]

    def slot_conditioning(self, batch_size: int, conditioning: Tensor | None) -> Tensor:
        """The conditioning checked and fitted to K rows (B, K, width): row k conditions slot k."""
        K = self.cfg.num_slots
        width = CONDITIONING_WIDTH[self.cfg.conditioning] + 1
        if conditioning is None:
            raise ValueError(f"model.conditioning={self.cfg.conditioning!r} needs the first frame's "
                             f"{self.cfg.conditioning} (B, G, {width}); got none")
        if conditioning.dim() != 3 or conditioning.shape[0] != batch_size or conditioning.shape[2] != width:
            raise ValueError(f"conditioning must be (B={batch_size}, G, {width}) ({self.cfg.conditioning} and a "
                             f"presence flag), got {tuple(conditioning.shape)}")
        G = conditioning.shape[1]
        if G > K:
            if (conditioning[:, K:, -1] > 0).any():  # row k conditions slot k; row 0 is the background
                objects = int((conditioning[..., -1] > 0).sum(dim=1).max())
                raise ValueError(f"the conditioning holds up to {objects} objects in {G} rows (row 0 = background), "
                                 f"more than the model.num_slots={K} slots can take; raise model.num_slots to at "
                                 f"least {G}")
            conditioning = conditioning[:, :K]  # rows beyond K are all absent
        elif G < K:  # pad with absent rows
            conditioning = torch.cat([conditioning, conditioning.new_zeros(batch_size, K - G, width)], dim=1)
        return conditioning

    def forward(self, video: Tensor, conditioning: Tensor | None = None) -> dict[str, Tensor]:
        check_video(video, self.cfg.resolution, finite=self.check_finite)
        B, F = video.shape[:2]
        features = self.encoder(video.flatten(0, 1))  # (B*F, N, C): every frame in one batch
        features = features.unflatten(0, (B, F))  # (B, F, N, C)
        predicted = self.initial_slots(B, conditioning).to(features.dtype)
        positions = self.initial_positions(B, conditioning)  # (B, K, 2) or None
        active, local = self.slot_roles(B, conditioning)  # (B, K) bool or None
        slots, preds, attns, places = [], [], [], []
        for t in range(F):
            if self.invariant:  # correct the prediction on frame t, from where the slots are expected
                sa = self.corrector(features[:, t], slots=predicted, positions=positions, active=active,
                                    local=local)
                places.append(sa["positions"])  # (B, K, 2): centre of mass of each slot's attention on frame t
                positions = self.next_positions(places)
            else:
                sa = self.corrector(features[:, t], slots=predicted)  # correct the prediction on frame t
            predicted = self.predictor(sa["slots"], active)  # (B, K, D): the slots expected at frame t + 1
            slots.append(sa["slots"])
            preds.append(predicted)
            attns.append(sa["attn"])
        slots_t = torch.stack(slots, dim=1)  # (B, F, K, D)
        to_decode = slots_t.flatten(0, 1)  # (B*F, K, D)
        if self.invariant:
            positions_t = torch.stack(places, dim=1)  # (B, F, K, 2)
        if self.cfg.decoder_window:
            out = self.draw_in_windows(to_decode, positions_t.flatten(0, 1))  # (B*F, K, 4, H, W)
        elif self.invariant:  # the decoder's linear position embedding, re-centred on each slot's position
            centres = self.decoder_centres(positions_t.flatten(0, 1))  # (B*F, K, 2) on the decoder's grid
            out = fp32(self.decoder(to_decode - self.decoder.stem.pos.offset(centres)))
        else:
            out = fp32(self.decoder(to_decode))  # (B*F, K, 4, h, w)
        if out.shape[-1] != self.cfg.resolution:
            size = (self.cfg.resolution, self.cfg.resolution)
            out = F_nn.interpolate(out.flatten(0, 1), size, mode="bilinear")  # (B*F*K, 4, H, W)
            out = out.unflatten(0, (B * F, -1))  # (B*F, K, 4, H, W)
        bias = out.new_zeros(())  # what the options add to the mask logits, (B*F, K, 1, H, W) once any does
        if self.cfg.mask_source == "decoder+attention":  # the corrector's attention as a prior on the masks
            bias = bias + self.attention_prior(torch.stack(attns, dim=1))
        if self.cfg.mask_locality and self.cfg.conditioning != "learned":  # object slots' masks fall off around
            # their positions, the background's slot's not (a learned initialisation has no background row)
            bias = bias - self.mask_penalty(positions_t.flatten(0, 1))
        if active is not None:  # dropped slots draw no mask: their logits sink far below any other
            bias = bias + (~active).to(out.dtype).repeat_interleave(F, dim=0)[:, :, None, None, None] * DROPPED_LOGIT
        if bias.dim():
            out = torch.cat([out[:, :, :3], out[:, :, 3:] + bias], dim=2)  # (B*F, K, 4, H, W)
        recon, masks = recompose(out)  # (B*F, 3, H, W), (B*F, K, 1, H, W)
        result = {"recon": recon.unflatten(0, (B, F)), "recons": out[:, :, :3].unflatten(0, (B, F)),
                  "masks": masks.unflatten(0, (B, F)), "slots": slots_t, "predicted": torch.stack(preds, dim=1),
                  "attn": torch.stack(attns, dim=1)}
        if self.invariant:
            result["positions"] = positions_t
        return result


def grid_to_image(u: Tensor, size: tuple[int, int]) -> Tensor:
    """Grid coordinates (..., 2) in [0, 1] (0 and 1 the first and last cells' centres, as ``build_grid``) of an
    (h, w) grid -> image coordinates in [0, 1] (cell i covers [i / h, (i + 1) / h))."""
    n = u.new_tensor(size)
    return (u * (n - 1) + 0.5) / n


def image_to_grid(x: Tensor, size: tuple[int, int]) -> Tensor:
    """The inverse of :func:`grid_to_image`."""
    n = x.new_tensor(size)
    return (x * n - 0.5) / (n - 1)


def validate_savi_config(cfg: ModelConfig) -> None:
    """Reject what SAVi cannot build, naming what is expected."""
    if cfg.conditioning not in ("learned", "centers", "boxes"):
        raise ValueError(f"model.conditioning must be 'learned', 'centers' or 'boxes', got {cfg.conditioning!r}")
    if cfg.target not in ("rgb", "flow"):
        raise ValueError(f"model.target must be 'rgb' or 'flow', got {cfg.target!r}")
    if cfg.decoder not in ("broadcast", "upsample"):
        raise ValueError(f"savi needs model.decoder 'broadcast' or 'upsample', got {cfg.decoder!r}")
    if cfg.decoder_resolution and (cfg.decoder_resolution > cfg.resolution or cfg.decoder == "upsample"):
        raise ValueError(f"model.decoder_resolution={cfg.decoder_resolution} must be <= model.resolution="
                         f"{cfg.resolution}, with decoder='broadcast'")
    if cfg.slot_dim % cfg.predictor_heads:
        raise ValueError(f"model.slot_dim={cfg.slot_dim} must divide by model.predictor_heads={cfg.predictor_heads}")
    validate_locality(cfg)
    if cfg.absent_slots not in ("keep", "drop"):
        raise ValueError(f"model.absent_slots must be 'keep' or 'drop', got {cfg.absent_slots!r}")
    # both act on conditioning rows (which objects are present; row 0 = the background): a learned
    # initialisation has none, so there they change nothing
    if cfg.absent_slots == "drop" and cfg.attention != "invariant":
        raise ValueError("model.absent_slots='drop' needs model.attention='invariant'")
    if not cfg.background_locality and not cfg.attn_locality:
        raise ValueError("model.background_locality=False needs the locality prior (model.attn_locality > 0)")
    if cfg.decoder_window and (cfg.attention != "invariant" or cfg.decoder_resolution or cfg.decoder_subpixels != 1
                               or not 2 <= cfg.decoder_window <= cfg.resolution):
        raise ValueError(f"model.decoder_window={cfg.decoder_window} needs model.attention='invariant' (slots with "
                         f"positions), model.decoder_resolution=0, model.decoder_subpixels=1 and 2 <= window <= "
                         f"model.resolution={cfg.resolution}")
    # like absent_slots and background_locality, mask_locality acts on the background's row: with a learned
    # initialisation (no conditioning rows) it changes nothing
    if not cfg.mask_locality >= 0 or (cfg.mask_locality and cfg.attention != "invariant"):
        raise ValueError(f"model.mask_locality={cfg.mask_locality!r} must be >= 0, and > 0 needs "
                         "model.attention='invariant' (slot positions)")
    if cfg.align_frames and cfg.attention != "invariant":
        raise ValueError("model.align_frames=True needs model.attention='invariant' (slots with positions)")
    if cfg.slot_motion not in ("none", "velocity"):
        raise ValueError(f"model.slot_motion must be 'none' or 'velocity', got {cfg.slot_motion!r}")
    if cfg.slot_motion != "none" and cfg.attention != "invariant":
        raise ValueError("model.slot_motion='velocity' needs model.attention='invariant' (slots with positions)")
    if cfg.attention == "invariant" and cfg.decoder != "broadcast":
        raise ValueError("savi with model.attention='invariant' needs model.decoder='broadcast' (it draws each slot "
                         f"in its own frame), got {cfg.decoder!r}")
    if (cfg.attention not in ("slot", "invariant") or cfg.background != "none"
            or cfg.mask_source not in ("decoder", "decoder+attention") or cfg.mask_prior_steps):
        raise ValueError("savi supports model.attention='slot' or 'invariant', background='none', "
                         "mask_source='decoder' or 'decoder+attention' and mask_prior_steps=0 only")
    unsupported = {"test_iters": 0, "attn_temperature": 1.0, "attn_temperature_steps": 0, "decoder_norm": "none"}
    changed = [f"model.{k}={getattr(cfg, k)!r}" for k, default in unsupported.items() if getattr(cfg, k) != default]
    if changed or cfg.slot_init == "farthest":
        raise ValueError(f"savi does not support {', '.join(changed) or 'model.slot_init=farthest'} (its corrector "
                         "runs one iteration from the predicted slots); leave them at their defaults")


def check_video(video: Tensor, resolution: int, finite: bool = True) -> None:
    """Raise a clear error unless ``video`` is a float (B, F, 3, resolution, resolution) batch with F >= 1."""
    if not isinstance(video, Tensor) or video.dim() != 5 or video.shape[2] != 3:
        got = tuple(video.shape) if isinstance(video, Tensor) else type(video).__name__
        hint = " (one image? add a frame axis: video[:, None])" if isinstance(video, Tensor) and video.dim() == 4 \
            else ""
        raise ValueError(f"video must be (B, F, 3, H, W) RGB frames, got {got}{hint}")
    if video.shape[1] < 1:
        raise ValueError("video has 0 frames; the conditioning reads the first frame, so a clip needs >= 1 frame")
    if tuple(video.shape[-2:]) != (resolution, resolution):
        raise ValueError(f"video frames must be {resolution}x{resolution} for this model, got "
                         f"{tuple(video.shape[-2:])}")
    if not video.is_floating_point():
        raise TypeError(f"video must be float in [-1, 1], got {video.dtype} (convert uint8 with x / 127.5 - 1)")
    if finite and not torch.isfinite(video).all():
        raise ValueError("video contains NaN or Inf")
