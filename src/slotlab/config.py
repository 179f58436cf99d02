"""Typed experiment configuration: nested dataclasses with defaults in code, dotted-key overrides, JSON round trip.

An experiment is one :class:`ExperimentConfig`; named presets live in :mod:`slotlab.experiments`. The CLI's
``--set train.lr=1e-3`` overrides a field that must exist (unknown keys get a "did you mean" suggestion) and is
cast to the field's type. The resolved config is saved as ``config.json`` next to every run.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ModelConfig:
    task: str = "autoencoder"  # a name in slotlab.tasks.TASKS: "autoencoder" (object discovery), "set_prediction",
    #                            "video" (SAVi)
    resolution: int = 128  # input and output images are resolution x resolution
    num_slots: int = 7  # K
    num_iters: int = 3  # T
    test_iters: int = 0  # T in evaluation when a call gives none (0: num_iters); chosen on validation scenes
    slot_dim: int = 64  # D
    mlp_hidden_dim: int = 128  # Slot Attention's residual MLP
    encoder_channels: int = 64
    encoder_strides: list[int] = field(default_factory=lambda: [1, 1, 1, 1])  # one conv per entry
    encoder_kernel: int = 5
    encoder_mlp_dim: int = 64
    decoder: str = "upsample"  # "upsample" (CLEVR), "broadcast" (full resolution), "mlp" (per pixel)
    decoder_channels: int = 64
    decoder_layers: int = 3  # broadcast: convs before the output conv; mlp: hidden layers
    decoder_kernel: int = 5  # broadcast decoder: kernel of its convs before the 3x3 output conv
    decoder_pos_scale: float = 1.0  # broadcast decoder: its position grid's coordinates multiplied by this (slotlab)
    decoder_subpixels: int = 1  # broadcast decoder: its grid is 1/r of the drawing and its output conv gives each
    #                             cell's r x r pixels (pixel shuffle; slotlab)
    decoder_freqs: int = 0  # mlp decoder: Fourier frequencies of the pixel coordinates
    decoder_table: bool = False  # mlp decoder in slot frames: a learned feature per relative pixel offset
    decoder_freq_steps: int = 0  # mlp decoder: open the frequency bands coarse-to-fine over these steps (0 = all)
    broadcast_size: int = 8  # upsample decoder: broadcast grid side
    fast_stem: bool = True  # broadcast decoder: exact cheaper first layer
    implicit_grad: bool = False  # detach slots before the last iteration (Chang et al. 2022)
    straight_through: bool = False  # with implicit_grad: that gradient goes to the initial slots (BO-QSA)
    attention: str = "slot"  # "slot" (the paper) or "invariant" (slot-centric frames, Biza et al. 2023; the mlp or
    #                          broadcast decoder; for video, docs/video.md)
    slot_init: str = "random"  # "random" (paper: shared mu, sigma), "learned" (one vector per slot, BO-QSA) or
    #                            "farthest" (farthest-point seeds among the inputs' values; slotlab)
    attn_temperature: float = 1.0  # attention logits divided by this at step 0 ...
    attn_temperature_steps: int = 0  # ... falling linearly to 1 over these steps (0 = always 1)
    decoder_norm: str = "none"  # mlp decoder: "layer" puts a LayerNorm before each hidden ReLU
    grid_hidden_dim: int = 64  # invariant: hidden size of the relative-position key encoder
    relative_values: bool = False  # invariant: the values pass through the relative-position encoder too (ISA's
    #                                "V3"), so a slot's update carries its inputs' layout around it (shape, size)
    attn_locality: float = 0.0  # invariant: a learned Gaussian prior on each slot's attention around its position,
    #                             its smallest (and initial) width in [-1, 1] image units (0 = none; slotlab option)
    decoder_frame: str = "image"  # mlp decoder: "image" coordinates, or each slot's "slot" frame (translation)
    #                               or "slot_scale" (translation and scale), from its attention (ISA)
    mask_source: str = "decoder"  # alpha masks from the decoder's 4th channel (paper), "attention", or
    #                               "decoder+attention": softmax(decoder logits + w * log attention) (slotlab)
    background: str = "none"  # "uniform": one more mask component, a flat colour read from the image (slotlab)
    mask_prior_steps: int = 0  # decoder+attention: w falls linearly from 1 to 0 over these steps (0 = w stays 1)
    head_hidden_dim: int = 64  # set prediction: hidden size of the per-slot property MLP
    head_positions: bool = False  # set prediction: the head also sees each slot's attention centroid (slotlab)
    set_layout: str = "clevr"  # set prediction: target layout ("clevr": P=19, "sprites": P=14; set_layout.py)
    conditioning: str = "learned"  # video: initial slots "learned", or from first-frame "centers" or "boxes"
    target: str = "rgb"  # video: reconstruct the "rgb" frames or the optical "flow" (as a colour-wheel picture)
    flow_max_magnitude: float = 5.0  # video, target="flow": flow (pixels) at full colour saturation
    slot_motion: str = "none"  # video, invariant attention: "velocity" starts each slot on the next frame where its
    #                            last two centres extrapolate to (constant velocity); "none": where it was (slotlab)
    absent_slots: str = "keep"  # video, conditional, invariant: "keep" (SAVi: the slots of absent conditioning rows
    #                             compete too) or "drop" (no attention, no mask; slotlab); learned init: no effect
    background_locality: bool = True  # video, conditional, attn_locality: False = the background slot (conditioning
    #                                   row 0) attends without the prior (slotlab); learned init: no effect
    align_frames: bool = False  # video, invariant: a slot's position names the same image point in the attention's
    #                             grid, the decoder's and the conditioning (cells at their pixels' centres; slotlab)
    mask_locality: float = 0.0  # video, conditional, invariant: object slots' mask logits get -|g - p_k|^2 / (2 s^2)
    #                             around their positions (the background's slot none), so background pixels, which
    #                             any slot can paint, go to the background's slot (0 = none; slotlab); learned
    #                             init: no effect
    predictor_heads: int = 4  # video: attention heads of the predictor's transformer block
    predictor_mlp_dim: int = 256  # video: MLP size of the predictor and of the conditioning encoder
    decoder_resolution: int = 0  # video: the decoder draws at this size, upsampled (bilinear) to resolution (0 = same)
    decoder_window: int = 0  # video, invariant: each slot drawn at full resolution in a window of this many pixels
    #                          around its position, its edge values extended beyond (0 = the whole frame; slotlab)
    backbone: str = "vit_base_patch16_dino"  # features task: the frozen ViT (slotlab.nn.vit.ARCHS)
    backbone_weights: str = ""  # features task: a local .safetensors / .pth file, or "random" (tests); never fetched
    backbone_block: int = 0  # features task: read the output of this block (1-based; 0 = the last, DINOSAUR)


@dataclass
class DataConfig:
    name: str = "tetrominoes"  # built-in: "tetrominoes", "multi_dsprites", "sprites_set"; on disk: "clevr"
    seed: int = 0  # generator seed; scene i depends only on (seed, i)
    train_size: int = 60_000  # scenes [0, train_size) train ...
    val_size: int = 320  # ... the next val_size pick the checkpoint and draw the curves ...
    test_size: int = 320  # ... and the next test_size are only for the final report
    cache_dir: str = ""  # where generated data is cached ("" = ~/.cache/slotlab)
    path: str = ""  # real datasets read from disk (e.g. name="clevr": the CLEVR_v1.0 directory)
    resize: str = "crop"  # --data folder:DIR images to the model's resolution: "crop", "pad" or "stretch"
    num_frames: int = 24  # video: frames per generated video (evaluation runs on whole videos)
    resolution: int = 64  # video: frame size of generated videos (H = W)
    clip_length: int = 6  # video: training clips of this many consecutive frames
    feature_cache: str = "fp16"  # features task: backbone features cached on disk, "fp16", "fp32" or "none"
    mask_size: int = 320  # COCO / VOC: ground-truth masks resized (short side) and centre-cropped to this for metrics


@dataclass
class TrainConfig:
    batch_size: int = 64
    steps: int = 500_000
    max_minutes: float = 0.0  # wall-clock budget for training (0 = none); the run stops cleanly when it is spent
    lr: float = 4e-4
    warmup_steps: int = 10_000
    decay_rate: float = 0.5
    decay_steps: int = 100_000
    adam_eps: float = 1e-8
    grad_clip: float = 0.0  # 0 = none (the paper has none)
    seed: int = 0
    log_every: int = 50
    eval_every: int = 1000  # steps between validation FG-ARI/ARI/mBO evaluations
    eval_every_minutes: float = 0.0  # if > 0, evaluate on this wall-clock period instead of eval_every
    checkpoint_every: int = 1000
    report_test: bool = False  # also log test-split metrics at each evaluation (for curves; never for selection)
    num_threads: int = 0  # torch threads (0 = all cores)
    precision: str = "fp32"  # "bf16": forward in bf16 autocast; softmaxes, losses, metrics in fp32 (precision.py);
    #                           "auto": bf16 only where the hardware runs it natively, else fp32
    compile: bool = False  # torch.compile the encoder, decoder and head; eager if it fails (compilation.py)
    compile_mode: str = "default"  # torch.compile mode: "default", "reduce-overhead" (CUDA graphs), "max-autotune"
    device: str = "auto"  # "auto" (the GPU when CUDA is available, else the CPU), "cpu", "cuda" or "cuda:N"
    # training aids (slotlab.curricula), all off by default:
    object_curriculum_steps: int = 0  # mixed curriculum on the number of objects over these steps (Tetrominoes)
    low_res: int = 0  # progressive resolution: train at low_res x low_res pixels ...
    low_res_steps: int = 0  # ... for these steps, then at model.resolution
    decoder_lr_scale: float = 1.0  # the decoder's learning rate, as a multiple of the schedule's
    slot_attention_lr_scale: float = 1.0  # Slot Attention's learning rate, as a multiple of the schedule's


@dataclass
class ExperimentConfig:
    name: str = "custom"
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, d: dict) -> ExperimentConfig:
        cfg = cls()
        for key, value in _flatten(d).items():
            if key not in REMOVED:
                set_value(cfg, key, value)
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> ExperimentConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config not found: {path} (is this a slotlab run directory?)")
        try:
            content = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"config {path} is corrupt or truncated ({err}); expected the JSON that slotlab "
                             "wrote there") from None
        if not isinstance(content, dict):
            raise ValueError(f"config {path} is not a slotlab config (expected a JSON object)")
        return cls.from_dict(content)


def validate_train_config(tc: TrainConfig) -> None:
    """Refuse values that would crash later or train the wrong way (a negative lr is gradient ascent)."""
    positive = {"batch_size": tc.batch_size, "log_every": tc.log_every, "checkpoint_every": tc.checkpoint_every,
                "decay_steps": tc.decay_steps, "lr": tc.lr, "decay_rate": tc.decay_rate, "adam_eps": tc.adam_eps}
    for key, value in positive.items():
        if not value > 0 or value != value or value == float("inf"):
            raise ValueError(f"train.{key} must be a positive number, got {value!r}")
    not_negative = {"steps": tc.steps, "warmup_steps": tc.warmup_steps, "eval_every": tc.eval_every,
                    "max_minutes": tc.max_minutes, "eval_every_minutes": tc.eval_every_minutes,
                    "grad_clip": tc.grad_clip, "num_threads": tc.num_threads}
    for key, value in not_negative.items():
        if not value >= 0 or value == float("inf"):
            raise ValueError(f"train.{key} must be >= 0, got {value!r}")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def all_keys(cfg: ExperimentConfig) -> list[str]:
    return list(_flatten(cfg.to_dict()).keys())


def _cast(value, typ, key: str):
    origin = typing.get_origin(typ)
    if origin is list:
        (inner,) = typing.get_args(typ)
        if isinstance(value, str):
            value = [v for v in value.strip("[]").split(",") if v.strip()]
        return [_cast(v, inner, key) for v in value]
    if typ is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"config key {key}: expected a boolean (true/false), got {value!r}")
    try:
        if typ is int and isinstance(value, str):
            return int(float(value)) if float(value).is_integer() else int(value)
        return typ(value)
    except (TypeError, ValueError):
        raise ValueError(f"config key {key}: expected {typ.__name__}, got {value!r}") from None


# old key -> its current name: config.json files and --set written with the old name keep working
ALIASES = {"model.kind": "model.task"}
# keys that config.json files of earlier versions may hold and that no longer exist (they had no effect)
REMOVED = {"train.num_workers"}


def set_value(cfg: ExperimentConfig, key: str, value) -> None:
    """Set dotted ``key`` (e.g. ``train.lr``) on ``cfg``, casting ``value`` to the field's type (old names in
    :data:`ALIASES` are accepted)."""
    key = ALIASES.get(key, key)
    parts = key.split(".")
    obj = cfg
    for i, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(obj)}
        if part not in fields:
            close = difflib.get_close_matches(key, all_keys(cfg), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise KeyError(f"unknown config key {key!r}{hint}")
        if i == len(parts) - 1:
            hints = typing.get_type_hints(type(obj))
            if dataclasses.is_dataclass(hints[part]):
                raise KeyError(f"config key {key!r} is a section; set one of its fields, e.g. {key}.<field>")
            setattr(obj, part, _cast(value, hints[part], key))
        else:
            obj = getattr(obj, part)
            if not dataclasses.is_dataclass(obj):
                raise KeyError(f"unknown config key {key!r}: {'.'.join(parts[: i + 1])} is not a section")


def apply_overrides(cfg: ExperimentConfig, overrides: list[str]) -> ExperimentConfig:
    """Apply ``key=value`` strings in order."""
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value, e.g. train.lr=1e-3")
        key, value = item.split("=", 1)
        set_value(cfg, key.strip(), value.strip())
    return cfg
