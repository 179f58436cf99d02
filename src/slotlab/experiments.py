"""Named experiment presets: the paper's configurations and small CPU presets. Each is a plain function.

Paper presets follow the official code for CLEVR and the appendix as reimplemented for Multi-dSprites and
Tetrominoes, whose exact slot size is unverified (docs/reference.md). CPU presets are slotlab's own designs,
documented in docs/design_notes.md with the measurements that justify them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from slotlab.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig
from slotlab.experiments_video import VIDEO_EXPERIMENTS

PAPER_TRAIN = dict(batch_size=64, steps=500_000, lr=4e-4, warmup_steps=10_000, decay_rate=0.5, decay_steps=100_000)


def clevr6() -> ExperimentConfig:
    """The official CLEVR6 object-discovery model: 128x128, K=7, 64-channel encoder, 8x8 upsampling decoder."""
    return ExperimentConfig(
        name="clevr6",
        description="Paper: CLEVR6 object discovery (128x128, K=7, T=3, batch 64, 500K steps).",
        model=ModelConfig(resolution=128, num_slots=7, decoder="upsample", decoder_channels=64),
        data=DataConfig(name="clevr_with_masks", train_size=70_000),
        train=TrainConfig(**PAPER_TRAIN),
    )


def multi_dsprites() -> ExperimentConfig:
    """Paper: Multi-dSprites (colored_on_grayscale), 64x64, K=6, 32-channel CNNs, full-resolution decoder."""
    return ExperimentConfig(
        name="multi_dsprites",
        description="Paper: Multi-dSprites object discovery (64x64, K=6, 32-channel CNNs, full-res decoder).",
        model=ModelConfig(resolution=64, num_slots=6, encoder_channels=32, encoder_mlp_dim=32, decoder="broadcast",
                          decoder_channels=32, decoder_layers=3),
        data=DataConfig(name="multi_dsprites", train_size=60_000),
        train=TrainConfig(**PAPER_TRAIN),
    )


def tetrominoes() -> ExperimentConfig:
    """Paper: Tetrominoes, 35x35, K=4, 32-channel CNNs, full-resolution decoder (slot size 64; 32 is possible)."""
    return ExperimentConfig(
        name="tetrominoes",
        description="Paper: Tetrominoes object discovery (35x35, K=4, 32-channel CNNs, full-res decoder).",
        model=ModelConfig(resolution=35, num_slots=4, encoder_channels=32, encoder_mlp_dim=32, decoder="broadcast",
                          decoder_channels=32, decoder_layers=3),
        data=DataConfig(name="tetrominoes", train_size=60_000),
        train=TrainConfig(**PAPER_TRAIN),
    )


def tetrominoes_cpu() -> ExperimentConfig:
    """The demo: Tetrominoes-like scenes on 2 CPU cores in ~10 minutes (slotlab's design; docs/design_notes.md).

    Changes from the paper model, each measured in docs/design_notes.md: a 3x3 encoder and a per-pixel MLP
    decoder (5x cheaper per step); the decoder draws each slot around its attention centroid (leaves the initial
    plateau sooner); masks = softmax(decoder logits + log attention), which gives the background its own slot
    within a few hundred steps; lr 1e-3 with a short warmup.
    """
    cfg = tetrominoes()
    cfg.name = "tetrominoes_cpu"
    cfg.description = "CPU preset: Tetrominoes in ~10 minutes on 2 cores (slotlab design, see README)."
    m = cfg.model
    m.slot_dim, m.mlp_hidden_dim = 32, 64
    m.encoder_kernel = 3
    m.decoder, m.decoder_channels, m.decoder_layers, m.decoder_freqs = "mlp", 32, 2, 3
    m.decoder_frame = "slot"
    m.mask_source = "decoder+attention"
    cfg.data.train_size = 20_000
    cfg.train = TrainConfig(batch_size=16, steps=100_000, max_minutes=10.0, lr=1e-3, warmup_steps=500,
                            decay_rate=0.5, decay_steps=10_000, eval_every=500, checkpoint_every=500,
                            precision="auto")
    return cfg


def tetrominoes_bg_cpu() -> ExperimentConfig:
    """The paper's Tetrominoes model with a background layer and learned initial slots, batch 16 (slotlab
    design; docs/design_notes.md): the background goes to its own layer and each slot to one piece,
    masks that sharpen with training rather than the demo's plateau. 30-minute budget on 2 cores."""
    cfg = tetrominoes()
    cfg.name = "tetrominoes_bg_cpu"
    cfg.description = "CPU preset: paper Tetrominoes model + background layer + learned slots, 30 min (slotlab)."
    cfg.model.slot_init = "learned"
    cfg.model.background = "uniform"
    cfg.data.train_size = 20_000
    cfg.train = TrainConfig(batch_size=16, steps=200_000, max_minutes=30.0, lr=4e-4, warmup_steps=500,
                            decay_rate=0.5, decay_steps=100_000, eval_every=500, checkpoint_every=500,
                            precision="auto")
    return cfg


def multi_dsprites_cpu() -> ExperimentConfig:
    """Multi-dSprites-like scenes on a laptop CPU (smaller budget version of the paper model)."""
    cfg = multi_dsprites()
    cfg.name = "multi_dsprites_cpu"
    cfg.description = "CPU preset: Multi-dSprites-like scenes on 2 cores (slotlab design)."
    cfg.model.slot_dim = 32
    cfg.model.mlp_hidden_dim = 64
    cfg.model.decoder_layers = 2
    cfg.data.train_size = 20_000
    cfg.train = TrainConfig(batch_size=16, steps=20_000, max_minutes=30.0, lr=1e-3, warmup_steps=500,
                            decay_rate=0.5, decay_steps=10_000, eval_every=500, checkpoint_every=500,
                            precision="auto")
    return cfg


def clevr_set() -> ExperimentConfig:
    """Paper: CLEVR set prediction (official ``SlotAttentionClassifier``): full 320x480 image squashed to 128x128,
    5x5 convs with strides 1, 2, 2, 1 to 32x32 features, K=10, T=3, per-slot MLP to the 19 CLEVR properties;
    batch 512, 150K steps, warmup 1K, decay 0.5 per 50K (official set_prediction/train.py). Needs the CLEVR_v1.0
    directory: ``--set data.path=/data/CLEVR_v1.0``."""
    return ExperimentConfig(
        name="clevr_set",
        description="Paper: CLEVR set prediction (128x128, K=10, batch 512, 150K steps); needs data.path.",
        model=ModelConfig(task="set_prediction", resolution=128, num_slots=10, encoder_channels=64,
                          encoder_strides=[1, 2, 2, 1], encoder_mlp_dim=64, set_layout="clevr"),
        data=DataConfig(name="clevr", train_size=70_000, val_size=500, test_size=10_000),
        train=TrainConfig(batch_size=512, steps=150_000, lr=4e-4, warmup_steps=1_000, decay_rate=0.5,
                          decay_steps=50_000),
    )


def sprites_set_cpu() -> ExperimentConfig:
    """Set prediction on built-in 2-D sprite scenes (data/sprites_set.py) on 2 CPU cores in ~30 minutes.

    The paper's set predictor, smaller (slotlab design; each change measured, docs/design_notes.md): 64x64
    input, 3x3 convs with strides 1, 2, 2, 1 to 16x16 features, 32 channels; K=6 for up to 5 objects; a learned
    initial vector per slot (breaks the slot symmetry: the paper's shared random init stayed at AP 2% for 1,000
    steps); the head also sees each slot's attention centroid (positions); batch 32, lr 1e-3 halving every 8K
    steps (a slower decay plateaued at AP(inf) ~86), gradient clipping at norm 1.
    """
    return ExperimentConfig(
        name="sprites_set_cpu",
        description="CPU preset: set prediction on built-in sprite scenes in ~30 minutes on 2 cores.",
        model=ModelConfig(task="set_prediction", resolution=64, num_slots=6, encoder_channels=32,
                          encoder_strides=[1, 2, 2, 1], encoder_kernel=3, encoder_mlp_dim=64, set_layout="sprites",
                          slot_init="learned", head_positions=True),
        data=DataConfig(name="sprites_set", train_size=30_000, val_size=500, test_size=1000),
        train=TrainConfig(batch_size=32, steps=200_000, max_minutes=30.0, lr=1e-3, warmup_steps=500,
                          decay_rate=0.5, decay_steps=8_000, grad_clip=1.0, eval_every=1000,
                          checkpoint_every=500, precision="auto"),
    )


def tiny_set() -> ExperimentConfig:
    """A seconds-long set-prediction configuration for tests and smoke runs."""
    cfg = sprites_set_cpu()
    cfg.name = "tiny_set"
    cfg.description = "Smoke test: a few set-prediction steps on a handful of scenes."
    m = cfg.model
    m.slot_dim = m.mlp_hidden_dim = m.head_hidden_dim = 16
    m.encoder_channels, m.encoder_mlp_dim = 8, 8
    cfg.data.train_size, cfg.data.val_size, cfg.data.test_size = 64, 16, 16
    cfg.train = TrainConfig(batch_size=4, steps=4, lr=1e-3, warmup_steps=2, decay_steps=100, log_every=1,
                            eval_every=2, checkpoint_every=2, precision="auto")
    return cfg


def dinosaur_coco() -> ExperimentConfig:
    """DINOSAUR on COCO 2017 (Seitzer et al., ICLR 2023; official ``bridging/dinosaur/coco_feat_rec_dino_base16``
    config, MLP decoder): frozen ViT-B/16 DINO, 224x224 centre crops, the output of block 12 (196 x 768
    features); input MLP 768-768-256; Slot Attention K=7, slot size 256, T=3, MLP 1024; decoder MLP with three
    hidden layers of 2048; batch 64, Adam lr 4e-4, warmup 10K, decay 0.5 per 100K, 500K steps, gradient
    clipping 1.0. Needs the weights and the data: ``--set model.backbone_weights=FILE --data coco:DIR``."""
    return ExperimentConfig(
        name="dinosaur_coco",
        description="Paper: DINOSAUR on COCO (ViT-B/16 DINO features, K=7, MLP decoder); needs weights + data.",
        model=ModelConfig(task="features", resolution=224, num_slots=7, num_iters=3, slot_dim=256,
                          mlp_hidden_dim=1024, decoder_channels=2048, decoder_layers=3,
                          backbone="vit_base_patch16_dino"),
        data=DataConfig(name="coco", train_size=117_287, val_size=1_000, test_size=5_000),
        train=TrainConfig(batch_size=64, steps=500_000, lr=4e-4, warmup_steps=10_000, decay_rate=0.5,
                          decay_steps=100_000, grad_clip=1.0, eval_every=5_000, checkpoint_every=5_000),
    )


def dinosaur_voc() -> ExperimentConfig:
    """DINOSAUR on PASCAL VOC 2012: as :func:`dinosaur_coco` with K=6 and 300K steps (official
    ``voc2012_trainaug_feat_rec_dino_base16_auto``, whose decoder is autoregressive; this preset keeps the MLP
    decoder). Trains on trainaug when ``ImageSets/Segmentation/trainaug.txt`` exists (10,582 images), else
    train; evaluates on the 1,449 val images. ``--set model.backbone_weights=FILE --data voc:DIR``."""
    cfg = dinosaur_coco()
    cfg.name = "dinosaur_voc"
    cfg.description = "Paper: DINOSAUR on PASCAL VOC 2012 (ViT-B/16 DINO, K=6, MLP decoder); needs weights + data."
    cfg.model.num_slots = 6
    cfg.data = DataConfig(name="voc", train_size=10_582, val_size=250, test_size=1_449)
    cfg.train.steps = 300_000
    return cfg


def tiny() -> ExperimentConfig:
    """A seconds-long configuration for tests and smoke runs."""
    cfg = tetrominoes_cpu()
    cfg.name = "tiny"
    cfg.description = "Smoke test: a few steps on a handful of scenes."
    cfg.model.slot_dim = 16
    cfg.model.mlp_hidden_dim = 16
    cfg.model.encoder_channels = 8
    cfg.model.encoder_mlp_dim = 8
    cfg.model.decoder_channels = 8
    cfg.data.train_size, cfg.data.val_size, cfg.data.test_size = 64, 16, 16
    cfg.train = TrainConfig(batch_size=4, steps=4, lr=1e-3, warmup_steps=2, decay_steps=100, log_every=1,
                            eval_every=2, checkpoint_every=2, precision="auto")
    return cfg


EXPERIMENTS: dict[str, Callable[[], ExperimentConfig]] = {
    f.__name__: f for f in [clevr6, multi_dsprites, tetrominoes, tetrominoes_cpu, tetrominoes_bg_cpu,
                            multi_dsprites_cpu, tiny,
                            clevr_set, sprites_set_cpu, tiny_set, *VIDEO_EXPERIMENTS,
                            dinosaur_coco, dinosaur_voc]
}


def get_experiment(name: str) -> ExperimentConfig:
    """The preset called ``name``; unknown names raise KeyError with the nearest match."""
    if name not in EXPERIMENTS:
        close = difflib.get_close_matches(name, EXPERIMENTS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown experiment {name!r}{hint} (available: {', '.join(EXPERIMENTS)})")
    return EXPERIMENTS[name]()
