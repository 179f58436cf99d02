"""Video presets (SAVi: Kipf et al., "Conditional Object-Centric Learning from Video", ICLR 2022).

The MOVi presets follow the paper's MOVi setup and its public configuration: 64x64 frames, a 4-layer 32-channel
5x5 CNN encoder, K=11 slots of size 128, one Slot Attention iteration per frame, a transformer-block predictor
(4 heads, MLP 256), a spatial-broadcast decoder from 8x8 with 64-channel transposed convs, 6-frame training clips,
batch 64, 100K steps, lr 2e-4 with 2.5K warmup steps and gradient clipping at 0.05; conditioning on the first
frame's boxes and optical flow as the target. Differences: the paper decays the learning rate with a cosine,
slotlab's loop exponentially (half at 100K steps); slotlab's transposed-conv decoder ends in a 3x3 conv.
``savi_sprites_cpu`` is slotlab's own design for 2 CPU cores (docs/video.md).
"""

from __future__ import annotations

from slotlab.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig

SAVI_TRAIN = dict(batch_size=64, steps=100_000, lr=2e-4, warmup_steps=2_500, decay_rate=0.5, decay_steps=100_000,
                  grad_clip=0.05)


def _savi_movi(name: str, description: str) -> ExperimentConfig:
    return ExperimentConfig(
        name=name,
        description=description,
        model=ModelConfig(task="video", resolution=64, num_slots=11, num_iters=1, slot_dim=128, mlp_hidden_dim=256,
                          encoder_channels=32, encoder_strides=[1, 1, 1, 1], encoder_mlp_dim=64, decoder="upsample",
                          decoder_channels=64, broadcast_size=8, conditioning="boxes", target="flow",
                          predictor_heads=4, predictor_mlp_dim=256),
        data=DataConfig(name="movi", train_size=9_000, val_size=125, test_size=125, num_frames=24, clip_length=6),
        train=TrainConfig(**SAVI_TRAIN),
    )


def savi_movi_a() -> ExperimentConfig:
    """Paper: SAVi on MOVi-A (converted with `slotlab data convert-movi ... --resolution 64`), boxes + flow."""
    return _savi_movi("savi_movi_a", "Paper: SAVi on MOVi-A (64x64, K=11, 6-frame clips, boxes, flow target).")


def savi_movi_c() -> ExperimentConfig:
    """Paper: SAVi on MOVi-C (realistic objects and backgrounds), the same model as MOVi-A."""
    return _savi_movi("savi_movi_c", "Paper: SAVi on MOVi-C (64x64, K=11, 6-frame clips, boxes, flow target).")


def savi_sprites_cpu() -> ExperimentConfig:
    """SAVi on built-in moving_sprites for 2 CPU cores: a strided encoder (64x64 -> 16x16 features), slot size 64,
    K=6, batch 8 clips of 6 frames, conditional on first-frame centres; a 30-minute budget with the learning rate
    halving every 1,500 steps. The corrector is slotlab's invariant Slot Attention: each slot starts at its
    object's first-frame centre, attends under a Gaussian prior around its position (width >= 0.25 of the
    half-image), moves to its attention's centre of mass and on by its last displacement (constant velocity), and is
    drawn in its own frame. The broadcast decoder runs 32-channel 3x3 convs on a 32x32 grid (its position grid
    spanning [0, 8] per axis, so the masks can sharpen early) and gives each cell's 2x2 pixels (64x64 masks); the
    masks add the log of the corrector's attention to the decoder's logits, and the object slots' mask logits fall
    off around their positions (width 0.3), so the background goes to the background's slot."""
    return ExperimentConfig(
        name="savi_sprites_cpu",
        description="SAVi on moving_sprites, 2 CPU cores: 64x64, K=6, centres, 6-frame clips, 30-min budget.",
        model=ModelConfig(task="video", resolution=64, num_slots=6, num_iters=1, slot_dim=64, mlp_hidden_dim=128,
                          encoder_channels=32, encoder_strides=[2, 2], encoder_kernel=5, encoder_mlp_dim=64,
                          decoder="broadcast", decoder_channels=32, decoder_layers=3, decoder_kernel=3,
                          decoder_pos_scale=8.0, decoder_subpixels=2, mask_source="decoder+attention",
                          mask_locality=0.3,
                          conditioning="centers", target="rgb", flow_max_magnitude=5.0, predictor_heads=4,
                          predictor_mlp_dim=128, attention="invariant", attn_locality=0.25, slot_motion="velocity"),
        data=DataConfig(name="moving_sprites", train_size=1_000, val_size=320, test_size=320, num_frames=24,
                        clip_length=6),
        train=TrainConfig(batch_size=8, steps=1_000_000, max_minutes=30.0, lr=5e-4, warmup_steps=200,
                          decay_rate=0.5, decay_steps=1_500, grad_clip=1.0, log_every=25, eval_every=0,
                          eval_every_minutes=5.0, checkpoint_every=250, num_threads=2),
    )


def tiny_video() -> ExperimentConfig:
    """Seconds-long SAVi for tests and smoke runs: 32x32, 4 frames, clips of 3."""
    cfg = savi_sprites_cpu()
    cfg.name, cfg.description = "tiny_video", "Smoke test: SAVi for a few steps on a handful of small videos."
    m = cfg.model
    m.resolution, m.decoder_resolution, m.slot_dim, m.mlp_hidden_dim, m.predictor_mlp_dim = 32, 16, 16, 16, 16
    m.encoder_channels, m.encoder_mlp_dim, m.decoder_channels, m.decoder_layers = 8, 8, 8, 2
    m.decoder_subpixels, m.mask_source, m.mask_locality = 1, "decoder", 0.0  # the plain decoder: tests vary these
    cfg.data.train_size, cfg.data.val_size, cfg.data.test_size = 8, 4, 4
    cfg.data.num_frames, cfg.data.clip_length, cfg.data.resolution = 4, 3, 32
    cfg.train = TrainConfig(batch_size=2, steps=2, lr=1e-3, warmup_steps=1, decay_steps=100, log_every=1,
                            eval_every=2, checkpoint_every=2, num_threads=1)
    return cfg


VIDEO_EXPERIMENTS = [savi_movi_a, savi_movi_c, savi_sprites_cpu, tiny_video]
