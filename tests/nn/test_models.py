import pytest
import torch

from slotlab.experiments import EXPERIMENTS, get_experiment
from slotlab.nn.models import SlotAttentionAutoEncoder
from slotlab.nn.modules import BroadcastDecoder, BroadcastStem, SamePadConv, UpsampleBroadcastDecoder


@pytest.mark.parametrize("name", [n for n, f in EXPERIMENTS.items() if f().model.task == "autoencoder"])
def test_every_preset_builds_and_takes_one_training_step(name):
    cfg = get_experiment(name)
    torch.manual_seed(0)
    model = SlotAttentionAutoEncoder(cfg.model)
    res, K = cfg.model.resolution, cfg.model.num_slots + (cfg.model.background != "none")  # + a background layer
    image = torch.rand(2, 3, res, res) * 2 - 1
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=cfg.train.adam_eps)
    out = model(image)
    assert out["recon"].shape == (2, 3, res, res)
    assert out["recons"].shape == (2, K, 3, res, res)
    assert out["masks"].shape == (2, K, 1, res, res)
    assert torch.allclose(out["masks"].sum(1), torch.ones(2, 1, res, res), atol=1e-5)
    assert out["slots"].shape == (2, cfg.model.num_slots, cfg.model.slot_dim)
    loss = torch.nn.functional.mse_loss(out["recon"], image)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    for pname, p in model.named_parameters():  # every trainable one (a learned slot init freezes mu, log-sigma)
        assert (p.grad is not None) == p.requires_grad, pname


def test_attention_masks_option():
    cfg = get_experiment("tiny")
    cfg.model.mask_source = "attention"
    model = SlotAttentionAutoEncoder(cfg.model)
    out = model(torch.rand(2, 3, 35, 35) * 2 - 1)
    assert torch.allclose(out["masks"].flatten(2), out["attn"])


def test_background_layer_is_one_more_flat_component():
    from slotlab.config import ModelConfig
    from slotlab.nn.models import SetPredictor, validate_model_config

    cfg = get_experiment("tiny")
    cfg.model.background, cfg.model.mask_source = "uniform", "decoder"
    model = SlotAttentionAutoEncoder(cfg.model)
    out = model(torch.rand(2, 3, 35, 35) * 2 - 1)
    K = cfg.model.num_slots
    assert out["masks"].shape == (2, K + 1, 1, 35, 35) and out["recons"].shape == (2, K + 1, 3, 35, 35)
    assert torch.allclose(out["masks"].sum(1), torch.ones(2, 1, 35, 35), atol=1e-5)
    background = out["recons"][:, K]  # (B, 3, H, W): one colour per image
    assert torch.equal(background, background[:, :, :1, :1].expand_as(background))
    assert torch.allclose(out["recon"], (out["recons"] * out["masks"]).sum(1), atol=1e-6)
    out["recon"].square().mean().backward()
    assert model.background_logit.grad is not None and model.background_color.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs model.mask_source='decoder'"):
        validate_model_config(ModelConfig(background="uniform", mask_source="attention"))
    with pytest.raises(ValueError, match="model.decoder_kernel must be an odd"):
        validate_model_config(ModelConfig(decoder_kernel=4))
    with pytest.raises(ValueError, match="need model.attention='slot'"):
        validate_model_config(ModelConfig(attention="invariant", decoder="mlp", implicit_grad=True))
    with pytest.raises(ValueError, match="is for the autoencoder"):
        SetPredictor(ModelConfig(task="set_prediction", background="uniform"))
    with pytest.raises(ValueError, match="slot_motion='velocity' is a video model option"):
        validate_model_config(ModelConfig(slot_motion="velocity"))
    with pytest.raises(ValueError, match="absent_slots='drop' is a video model option"):
        validate_model_config(ModelConfig(absent_slots="drop"))
    with pytest.raises(ValueError, match="background_locality=False is a video model option"):
        validate_model_config(ModelConfig(background_locality=False))
    with pytest.raises(ValueError, match="attn_locality=0.3 needs model.attention='invariant'"):
        validate_model_config(ModelConfig(attn_locality=0.3))
    with pytest.raises(ValueError, match="relative_values=True needs model.attention='invariant'"):
        validate_model_config(ModelConfig(relative_values=True))
    validate_model_config(ModelConfig(attention="invariant", decoder="mlp", attn_locality=0.3,
                                      relative_values=True))  # fine


@pytest.mark.parametrize("res,kernel", [((35, 35), 5), ((8, 13), 5), ((5, 5), 5), ((3, 4), 5), ((35, 35), 3),
                                        ((4, 7), 3)])
def test_broadcast_stem_is_exact(res, kernel):
    torch.manual_seed(0)
    stem = BroadcastStem(slot_dim=6, channels=5, resolution=res, kernel_size=kernel)
    slots = torch.randn(4, 6)
    assert (stem(slots) - stem.plain(slots)).abs().max() < 1e-5


@pytest.mark.parametrize("kernel,pos_scale", [(5, 1.0), (3, 1.0), (3, 16.0)])
def test_broadcast_decoder_fast_equals_plain(kernel, pos_scale):
    torch.manual_seed(0)
    dec = BroadcastDecoder(8, (12, 12), channels=6, num_layers=2, kernel_size=kernel, pos_scale=pos_scale)
    slots = torch.randn(2, 3, 8)
    fast = dec(slots)
    dec.fast_stem = False
    assert (fast - dec(slots)).abs().max() < 1e-4 * pos_scale


def test_decoder_subpixels_shuffles_the_output_conv_into_pixels():
    from slotlab.config import ModelConfig
    from slotlab.nn.models import build_decoder

    torch.manual_seed(0)
    dec = BroadcastDecoder(8, (6, 5), channels=6, num_layers=2, kernel_size=3, subpixels=2)
    slots = torch.randn(2, 3, 8)
    out = dec(slots)
    assert out.shape == (2, 3, 4, 12, 10)
    cells = dec.body(dec.stem.plain(slots.flatten(0, 1)))  # (6, 16, 6, 5): 4 channels x 2 x 2 pixels per cell
    assert torch.allclose(out[1, 2, :, 5, 3], cells[5, :, 2, 1].view(4, 2, 2)[:, 1, 1], atol=1e-5)
    dec.channels_last, dec.fast_stem = False, False
    assert torch.allclose(dec(slots), out, atol=1e-5)
    assert build_decoder(ModelConfig(resolution=16, decoder="broadcast", decoder_subpixels=2)).resolution == (8, 8)
    for bad in (dict(decoder="broadcast", decoder_subpixels=3), dict(decoder="mlp", decoder_subpixels=2),
                dict(decoder="broadcast", decoder_subpixels=0)):
        with pytest.raises(ValueError, match="decoder_subpixels"):
            build_decoder(ModelConfig(resolution=16, **bad))


def test_decoder_pos_scale_scales_the_grid_and_is_refused_elsewhere():
    from slotlab.config import ModelConfig
    from slotlab.nn.models import build_decoder

    torch.manual_seed(0)
    plain = BroadcastDecoder(8, (12, 12), channels=6, num_layers=2, kernel_size=3)
    steep = BroadcastDecoder(8, (12, 12), channels=6, num_layers=2, kernel_size=3, pos_scale=4.0)
    steep.load_state_dict(plain.state_dict())
    with torch.no_grad():  # the same map on a 4x grid: 4x the slope
        plain.stem.pos.proj.weight.mul_(4.0)
    slots = torch.randn(2, 3, 8)
    assert torch.allclose(steep(slots), plain(slots), atol=1e-5)
    for bad in (dict(decoder="broadcast", decoder_pos_scale=0.0), dict(decoder="mlp", decoder_pos_scale=2.0)):
        with pytest.raises(ValueError, match="decoder_pos_scale"):
            build_decoder(ModelConfig(resolution=16, **bad))


def test_same_padding_matches_tf_rule():
    # TF SAME, stride 2, k=5, even input: output ceil(H/2), padding 1 before and 2 after
    conv = SamePadConv(1, 1, 5, stride=2)
    x = torch.randn(1, 1, 8, 8)
    ref = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 2, 1, 2)), conv.weight, conv.bias, stride=2)
    assert conv(x).shape == (1, 1, 4, 4) and torch.allclose(conv(x), ref)


def test_upsample_decoder_reaches_resolution():
    dec = UpsampleBroadcastDecoder(16, (32, 32), channels=4, broadcast=(4, 4))
    assert dec(torch.randn(1, 2, 16)).shape == (1, 2, 4, 32, 32)
    with pytest.raises(ValueError, match="cannot reach"):
        UpsampleBroadcastDecoder(16, (35, 35), channels=4)


@pytest.mark.parametrize(
    "image, match",
    [
        (torch.rand(2, 35, 35, 3), "RGB"),
        (torch.rand(2, 3, 32, 32), "35x35"),
        (torch.randint(0, 255, (2, 3, 35, 35), dtype=torch.uint8), "float"),
        (torch.full((2, 3, 35, 35), float("inf")), "NaN or Inf"),
    ],
)
def test_bad_images_are_named(image, match):
    model = SlotAttentionAutoEncoder(get_experiment("tiny").model)
    with pytest.raises((ValueError, TypeError), match=match):
        model(image)


def test_slot_frames_follow_the_attention():
    from slotlab.nn.modules import slot_frames

    attn = torch.zeros(1, 2, 5 * 5)
    attn[0, 0, 0] = 1.0  # slot 0 attends only the top-left pixel
    attn[0, 1] = 1.0  # slot 1 attends everything uniformly
    centers, scales = slot_frames(attn, (5, 5))
    assert torch.allclose(centers[0, 0], torch.tensor([-1.0, -1.0]))
    assert torch.allclose(centers[0, 1], torch.zeros(2), atol=1e-6)
    assert scales[0, 0].min() >= 0.05 and torch.allclose(scales[0, 1], torch.full((2,), 0.5**0.5), atol=1e-5)


@pytest.mark.parametrize("table", [False, True])
def test_slot_frame_decoder_is_translation_equivariant(table):
    from slotlab.nn.modules import MLPDecoder

    torch.manual_seed(0)
    dec = MLPDecoder(8, (9, 9), hidden=16, num_layers=2, num_freqs=2, table=table)
    if table:
        with torch.no_grad():
            dec.table.normal_()
    slots = torch.randn(1, 1, 8)
    step = 2 / 8  # one pixel on the [-1, 1] grid of 9 pixels
    a = dec(slots, torch.tensor([[[0.0, 0.0]]]))
    b = dec(slots, torch.tensor([[[step, 2 * step]]]))  # centre moved 1 row down, 2 columns right
    assert torch.allclose(a[..., 2:7, 2:7], b[..., 3:8, 4:9], atol=1e-5)


def test_mask_prior_curriculum_ends_with_the_decoders_masks():
    from slotlab.nn.models import set_step

    cfg = get_experiment("tiny")
    cfg.model.mask_source, cfg.model.mask_prior_steps = "decoder+attention", 10
    model = SlotAttentionAutoEncoder(cfg.model)
    image = torch.rand(2, 3, 35, 35) * 2 - 1
    set_step(model, 5)
    assert model.mask_prior_weight.item() == 0.5
    set_step(model, 10)
    torch.manual_seed(3)
    with_prior_off = model(image)["masks"]
    cfg2 = get_experiment("tiny")
    plain = SlotAttentionAutoEncoder(cfg2.model)
    plain.load_state_dict(model.state_dict())
    torch.manual_seed(3)
    assert torch.allclose(plain(image)["masks"], with_prior_off, atol=1e-6)
    assert "mask_prior_weight" in model.state_dict()  # saved in checkpoints, so eval uses the trained weight


@pytest.mark.parametrize("attention", ["slot", "invariant"])
def test_model_variants_build_and_use_their_options(attention):
    from slotlab.nn.invariant import InvariantSlotAttention

    cfg = get_experiment("tiny")
    cfg.model.decoder, cfg.model.attention, cfg.model.slot_init = "mlp", attention, "learned"
    model = SlotAttentionAutoEncoder(cfg.model)
    assert isinstance(model.slot_attention, InvariantSlotAttention) == (attention == "invariant")
    assert model.slot_attention.slots_init.shape == (1, 4, cfg.model.slot_dim)
    image = torch.rand(2, 3, 35, 35) * 2 - 1
    out = model(image)
    out["recon"].sum().backward()
    assert model.slot_attention.slots_init.grad.abs().sum() > 0
    assert model(image, num_slots=6)["slots"].shape[1] == 6  # more slots than learned: extra ones drawn around them
    with pytest.raises(ValueError, match="learned"):
        model(image, num_slots=3)


def test_frequency_bands_open_coarse_to_fine():
    from slotlab.nn.models import set_step

    cfg = get_experiment("tiny")
    cfg.model.decoder, cfg.model.decoder_freqs, cfg.model.decoder_freq_steps = "mlp", 4, 100
    model = SlotAttentionAutoEncoder(cfg.model)
    set_step(model, 0)
    assert model.decoder.band_weights.sum() == 0
    set_step(model, 50)  # alpha = 2: bands 0 and 1 open, 2 and 3 closed
    assert model.decoder.band_weights.tolist() == [1.0, 1.0, 0.0, 0.0]
    set_step(model, 100)
    assert model.decoder.band_weights.tolist() == [1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("scale", [1.0, 8.0])
def test_relative_position_embedding_is_a_slot_offset(scale):
    from slotlab.nn.modules import SoftPositionEmbed, build_grid

    torch.manual_seed(0)
    pos = SoftPositionEmbed(6, (7, 9), scale=scale)
    c = torch.tensor([0.3, 0.8])  # (y, x) in grid units
    grid = build_grid(7, 9)[0, :2]  # (2, H, W)
    rel = grid - c[:, None, None]
    rel4 = torch.cat([rel, 1 - rel]) * scale  # the embedding of the relative coordinates, on the scaled grid
    expected = torch.einsum("ihw,ci->chw", rel4, pos.proj.weight) + pos.proj.bias[:, None, None]
    got = pos.embedding()[0] - pos.offset(c)[:, None, None]
    assert torch.allclose(got, expected, atol=1e-6)


def _frame_decoder(table: bool):
    from slotlab.nn.modules import MLPDecoder

    torch.manual_seed(0)
    decoder = MLPDecoder(8, (7, 9), hidden=16, num_layers=2, num_freqs=2, table=table)
    if table:
        torch.nn.init.normal_(decoder.table)  # zeros at init; a random table makes every offset distinct
    return decoder


@pytest.mark.parametrize("table", [False, True])
def test_slot_frame_decoder_is_translation_and_scale_equivariant(table):
    """In a slot's frame (model.decoder_frame="slot"/"slot_scale"; model.decoder_table adds a learned feature per
    pixel offset), moving the center by m pixels moves the drawing by m pixels, and a scale of 1/2 draws at pixel
    offset m what scale 1 draws at 2m."""
    decoder = _frame_decoder(table)
    slots = torch.randn(1, 1, 8)
    step = torch.tensor([2 / 6, 2 / 8])  # one pixel on the [-1, 1] grid of 7 x 9
    center = torch.tensor([[[-1 + 3 * step[0], -1 + 4 * step[1]]]])  # pixel (3, 4)
    with torch.no_grad():
        out = decoder(slots, center)[0, 0]  # (4, 7, 9)
        moved = decoder(slots, center + step)[0, 0]  # center at pixel (4, 5)
        half = decoder(slots, center, torch.full((1, 1, 2), 0.5))[0, 0]
    assert torch.allclose(moved[:, 1:, 1:], out[:, :-1, :-1], atol=1e-5)
    assert not torch.allclose(moved, out, atol=1e-3)
    for m in (-1, 1):  # offset m from the center at scale 1/2 = offset 2m at scale 1
        assert torch.allclose(half[:, 3 + m, 4 + m], out[:, 3 + 2 * m, 4 + 2 * m], atol=1e-5)
    if table:  # the table is used: a changed entry changes the drawing
        with torch.no_grad():
            decoder.table.add_(1.0)
            assert not torch.allclose(decoder(slots, center)[0, 0], out, atol=1e-3)


def test_slot_scale_frame_and_table_in_the_autoencoder():
    cfg = get_experiment("tiny").model
    cfg.decoder, cfg.decoder_frame, cfg.decoder_table = "mlp", "slot_scale", True
    torch.manual_seed(0)
    model = SlotAttentionAutoEncoder(cfg)
    image = torch.rand(2, 3, cfg.resolution, cfg.resolution) * 2 - 1
    slots = model.slot_attention.init_slots(2, cfg.num_slots)
    out = model(image, slots=slots)
    out["recon"].square().sum().backward()
    assert model.decoder.table.grad is not None and model.decoder.table.grad.abs().sum() > 0
    cfg2 = get_experiment("tiny").model
    cfg2.decoder, cfg2.decoder_frame, cfg2.decoder_table = "mlp", "slot", True
    translation_only = SlotAttentionAutoEncoder(cfg2)
    translation_only.load_state_dict(model.state_dict())
    with torch.no_grad():
        other = translation_only(image, slots=slots)["recon"]
    assert not torch.allclose(other, out["recon"].detach(), atol=1e-4)  # the attention's spread scales the frame


@pytest.mark.parametrize("attention", ["slot", "invariant"])
def test_test_iters_apply_in_eval_mode_only(attention):
    cfg = get_experiment("tiny").model
    cfg.attention, cfg.test_iters = attention, 5
    cfg.decoder = "mlp"
    model = SlotAttentionAutoEncoder(cfg)
    image = torch.rand(2, 3, cfg.resolution, cfg.resolution) * 2 - 1
    assert model(image)["attns"].shape[1] == cfg.num_iters  # training mode: the training T
    model.eval()
    assert model(image)["attns"].shape[1] == 5
    assert model(image, num_iters=2)["attns"].shape[1] == 2  # an explicit T wins
    cfg.test_iters = -1
    with pytest.raises(ValueError, match="model.test_iters"):
        SlotAttentionAutoEncoder(cfg)
