"""SAVi: two training steps for each target and conditioning, slot identity across frames, clear bad-input errors."""

import dataclasses

import pytest
import torch

from slotlab.data.moving_sprites import generate_moving_sprites
from slotlab.data.video import VideoSet
from slotlab.evaluate_video import video_inputs
from slotlab.experiments import get_experiment
from slotlab.tasks import TASKS, build_model
from slotlab.train import train_step


@pytest.fixture(scope="module")
def clips():
    v = generate_moving_sprites(3, seed=0, num_frames=4, resolution=32)
    return VideoSet(v["video"], v["labels"], 6, motion=v["motion"], clip_length=3)


def _model(**changes):
    torch.manual_seed(0)
    return build_model(dataclasses.replace(get_experiment("tiny_video").model, **changes))


@pytest.mark.parametrize("target", ["rgb", "flow"])
@pytest.mark.parametrize("conditioning", ["learned", "centers", "boxes"])
def test_trains_two_steps(clips, target, conditioning):
    model = _model(target=target, conditioning=conditioning)
    task = TASKS["video"]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = [train_step(model, optimizer, task, clips.batch(torch.tensor([i, i + 2])), "fp32").item()
              for i in range(2)]
    assert all(torch.isfinite(torch.tensor(losses)))
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    for part in ("encoder", "corrector", "predictor", "decoder") + (() if conditioning == "learned" else
                                                                     ("initializer",)):
        assert any(k.startswith(part) for k in changed), part


def test_outputs_and_slot_carry_over(clips):
    model = _model(conditioning="centers").eval()
    batch = clips.batch(torch.tensor([0, 1]))
    out = model(batch["video"], batch["centers"])
    B, F, K = 2, 3, 6
    assert out["recon"].shape == (B, F, 3, 32, 32) and out["masks"].shape == (B, F, K, 1, 32, 32)
    assert out["slots"].shape == (B, F, K, 16) and out["attn"].shape == (B, F, K, 8 * 8)
    assert torch.allclose(out["masks"].sum(2), torch.ones(()))
    # the video is causal: frame 0's slots do not depend on later frames
    changed = batch["video"].clone()
    changed[:, 1:] = 0
    again = model(changed, batch["centers"])
    assert torch.allclose(again["slots"][:, 0], out["slots"][:, 0], atol=1e-6)
    assert not torch.allclose(again["slots"][:, 2], out["slots"][:, 2])
    # evaluation runs on videos longer than the training clips
    longer = model(torch.cat([batch["video"]] * 3, dim=1), batch["centers"])
    assert longer["masks"].shape[1] == 9


@pytest.mark.parametrize("conditioning", ["learned", "centers", "boxes"])
def test_invariant_corrector_trains_and_starts_at_the_objects(clips, conditioning):
    model = _model(conditioning=conditioning, attention="invariant")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for i in range(2):
        assert torch.isfinite(train_step(model, optimizer, TASKS["video"], clips.batch(torch.tensor([i, i + 2])),
                                         "fp32"))
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith("corrector.grid_") for k in changed)  # the relative-position key encoder learns
    assert not any(k.startswith("encoder.pos") for k in changed)  # positions enter only relative to the slots
    batch = clips.batch(torch.tensor([0, 1]))
    out = model.eval()(**video_inputs(model, batch))
    assert out["positions"].shape == (2, 3, 6, 2) and out["positions"].abs().max() <= 1
    if conditioning == "learned":
        return
    start = model.initial_positions(2, batch[conditioning])  # (B, K, 2): each object's first-frame centre
    present = batch["centers"][..., -1] > 0  # (B, G=6)
    signal = batch[conditioning][..., :-1]
    centre = signal if conditioning == "centers" else (signal[..., :2] + signal[..., 2:]) / 2  # (ymin, xmin, ...)
    assert torch.allclose(start[present], centre[present] * 2 - 1)
    assert torch.equal(start[~present], torch.zeros_like(start[~present]))
    # the slot positions are where the decoder draws: moving one start moves that slot's first-frame mask
    moved = batch[conditioning].clone()
    moved[..., :-1] = 1 - moved[..., :-1]  # mirror every signal
    assert not torch.allclose(model(batch["video"], moved)["masks"][:, 0], out["masks"][:, 0])


def test_locality_keeps_untrained_slots_at_their_objects():
    """Without the prior an untrained corrector's attention is not local: every slot's centre of mass lands near
    the image centre on the first frame, and the first-frame centres are lost; with it they stay on the objects."""
    v = generate_moving_sprites(4, seed=5, num_frames=2, resolution=32)
    batch = VideoSet(v["video"], v["labels"], 6, motion=v["motion"], clip_length=2).batch(torch.arange(4))
    present = batch["centers"][..., -1] > 0
    start = batch["centers"][..., :2][present] * 2 - 1
    error = {}
    for locality in (0.0, 0.25):
        model = _model(conditioning="centers", attention="invariant", attn_locality=locality).eval()
        with torch.no_grad():
            error[locality] = (model(batch["video"], batch["centers"])["positions"][:, 0][present] - start).norm(
                dim=-1).mean().item()
    assert error[0.25] < 0.3 < 0.6 < error[0.0], error


def test_velocity_motion_extrapolates_each_slot(clips):
    model = _model(conditioning="centers", attention="invariant", attn_locality=0.25, slot_motion="velocity")
    first, second = torch.tensor([[[0.0, 0.0], [0.5, -0.5]]]), torch.tensor([[[0.1, -0.2], [0.9, -0.4]]])
    assert torch.allclose(model.next_positions([first]), first)
    assert torch.allclose(model.next_positions([first, second]), torch.tensor([[[0.2, -0.4], [1.0, -0.3]]]))
    still = _model(conditioning="centers", attention="invariant", attn_locality=0.25, slot_motion="none")
    assert torch.equal(still.next_positions([first, second]), second)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    assert torch.isfinite(train_step(model, optimizer, TASKS["video"], clips.batch(torch.tensor([0, 1])), "fp32"))


def test_dropped_absent_slots_take_nothing_and_change_nothing(clips):
    """absent_slots='drop': the slots of absent rows get no attention and no mask, and the other slots evolve as
    in a model with only the background and the present objects' slots (the same weights, K = 1 + objects)."""
    options = dict(conditioning="centers", attention="invariant", attn_locality=0.25, slot_motion="velocity",
                   absent_slots="drop")
    model = _model(**options).eval()
    batch = clips.batch(torch.tensor([0]))
    objects = 2
    batch["centers"][:, 1 + objects:] = 0  # condition on two of the objects: the rows after them are absent
    with torch.no_grad():
        out = model(batch["video"], batch["centers"])
        small = _model(**options, num_slots=1 + objects).eval()
        small.load_state_dict(model.state_dict())
        alone = small(batch["video"], batch["centers"][:, :1 + objects])
    dropped = slice(1 + objects, None)
    assert out["masks"][:, :, dropped].max() == 0 and out["attn"][:, :, dropped].max() == 0
    assert torch.allclose(out["masks"].sum(2), torch.ones(()))
    for key in ("masks", "slots", "positions"):
        assert torch.allclose(out[key][:, :, :1 + objects], alone[key], atol=1e-5), key
    kept = _model(**options | {"absent_slots": "keep"}).eval()
    kept.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert kept(batch["video"], batch["centers"])["masks"][:, :, dropped].max() > 0.01
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    assert torch.isfinite(train_step(model.train(), optimizer, TASKS["video"], clips.batch(torch.tensor([0, 1])),
                                     "fp32"))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_background_slot_without_locality_prior(clips):
    """background_locality=False: the background slot's logits carry no prior; the objects' slots keep it."""
    model = _model(conditioning="centers", attention="invariant", attn_locality=0.25, background_locality=False)
    assert model.slot_roles(2, clips.batch(torch.tensor([0, 1]))["centers"])[1].tolist() == [[False] + [True] * 5] * 2
    sa = model.corrector
    torch.manual_seed(1)
    inputs, slots, positions = torch.randn(2, 64, 8), torch.randn(2, 6, 16), torch.rand(2, 6, 2) * 2 - 1
    local = torch.tensor([[False] + [True] * 5] * 2)
    with torch.no_grad():
        prior = sa(inputs, slots=slots, positions=positions, num_iters=0)["attn"]
        some = sa(inputs, slots=slots, positions=positions, num_iters=0, local=local)["attn"]
        sa.log_width = None  # the same module without a prior
        none = sa(inputs, slots=slots, positions=positions, num_iters=0)["attn"]
    # softmax over slots: the ratios among prior-bound slots are those of the full prior ...
    assert torch.allclose(some[:, 1:] / some[:, 1:].sum(1, keepdim=True), prior[:, 1:] / prior[:, 1:].sum(
        1, keepdim=True), atol=1e-5)
    # ... and the background's logit is the prior-free one: its odds against any slot k > 0 gain k's penalty
    logit_gap = (some[:, 0] / some[:, 1]).log() - (none[:, 0] / none[:, 1]).log()
    assert (logit_gap > -1e-4).all() and logit_gap.max() > 1
    with pytest.raises(ValueError, match="background_locality=False needs the locality prior"):
        _model(conditioning="centers", attention="invariant", attn_locality=0.0, background_locality=False)
    learned = _model(conditioning="learned", attention="invariant", attn_locality=0.25, background_locality=False,
                     absent_slots="drop")  # no conditioning rows: both change nothing
    assert learned.slot_roles(2, None) == (None, None)


def test_window_drawing_places_each_slot_and_extends_its_edges():
    """decoder_window=w: slot k's w x w drawing lands centred on its nearest pixel, the edge values extend beyond it,
    and moving a slot by whole pixels moves its drawing by as many (away from the frame's border)."""
    model = _model(conditioning="centers", attention="invariant", attn_locality=0.25, decoder_window=12,
                   decoder_resolution=0).eval()
    torch.manual_seed(0)
    slots = torch.randn(2, 3, 16)
    pixels = torch.tensor([[[10.0, 20.0], [3.0, 30.0], [16.4, 15.6]], [[25.0, 5.0], [0.0, 0.0], [31.0, 31.0]]])
    positions = pixels / 31 * 2 - 1  # (y, x) in [-1, 1] for the 32x32 frame
    with torch.no_grad():
        frame = model.draw_in_windows(slots, positions)  # (2, 3, 4, 32, 32)
        corner = pixels.round().long() - 6
        inside = (pixels - corner) / 11
        window = model.decoder(slots - model.decoder.stem.pos.offset(inside))  # (2, 3, 4, 12, 12)
    assert frame.shape == (2, 3, 4, 32, 32)
    for b in range(2):
        for k in range(3):
            y0, x0 = corner[b, k].tolist()
            # the literal placement: pad the window with its edge values far enough, then crop the frame out
            big = torch.nn.functional.pad(window[b, k][None], (40, 40, 40, 40), mode="replicate")[0]
            expected = big[:, 40 - y0:40 - y0 + 32, 40 - x0:40 - x0 + 32]
            assert torch.allclose(frame[b, k], expected, atol=1e-6), (b, k)
    with torch.no_grad():  # two pixels down and three right: the same drawing, moved
        moved = model.draw_in_windows(slots[:1, :1], positions[:1, :1] + torch.tensor([2.0, 3.0]) / 31 * 2)
    assert torch.allclose(moved[0, 0, :, 2:, 3:], frame[0, 0, :, :-2, :-3], atol=1e-5)
    with pytest.raises(ValueError, match="decoder_window=12 needs model.attention='invariant'"):
        _model(attention="slot", attn_locality=0.0, slot_motion="none", absent_slots="keep", decoder_window=12,
               decoder_resolution=0)
    with pytest.raises(ValueError, match="decoder_resolution=0"):
        _model(conditioning="centers", attention="invariant", decoder_window=12)
    with pytest.raises(ValueError, match="decoder_subpixels=1"):  # the window's grid would not be its pixels
        _model(conditioning="centers", attention="invariant", decoder_window=12, decoder_resolution=0,
               decoder_subpixels=2)


def test_aligned_window_is_centred_on_the_image_point():
    """With model.align_frames a window is centred on the image point of the slot's attention-grid position: the
    drawing equals the unaligned one at the grid position that names the same pixel."""
    from slotlab.nn.savi import grid_to_image

    aligned = _model(conditioning="centers", decoder_window=12, decoder_resolution=0, align_frames=True).eval()
    plain = _model(conditioning="centers", decoder_window=12, decoder_resolution=0).eval()
    plain.load_state_dict(aligned.state_dict())
    torch.manual_seed(0)
    slots, positions = torch.randn(2, 3, 16), torch.rand(2, 3, 2) * 2 - 1
    pixels = grid_to_image((positions + 1) / 2, aligned.encoder.feature_resolution) * 32 - 0.5  # pixel indices
    with torch.no_grad():
        got = aligned.draw_in_windows(slots, positions)
        expected = plain.draw_in_windows(slots, pixels / 31 * 2 - 1)
        assert not torch.allclose(plain.draw_in_windows(slots, positions), expected, atol=1e-4)
    assert torch.allclose(got, expected, atol=1e-5)


def test_window_model_trains(clips):
    model = _model(conditioning="centers", decoder_window=12, decoder_resolution=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    loss = train_step(model, optimizer, TASKS["video"], clips.batch(torch.tensor([0, 1])), "fp32")
    assert torch.isfinite(loss)
    assert all(not torch.equal(v, before[k]) for k, v in model.decoder.state_dict().items())
    out = model.eval()(clips.batch(torch.tensor([0]))["video"], clips.batch(torch.tensor([0]))["centers"])
    assert out["masks"].shape == (1, 3, 6, 1, 32, 32) and torch.allclose(out["masks"].sum(2), torch.ones(()))


def test_bad_inputs_get_clear_errors(clips):
    model = _model(conditioning="centers")
    batch = clips.batch(torch.tensor([0]))
    with pytest.raises(ValueError, match=r"video must be \(B, F, 3, H, W\).*add a frame axis"):
        model(batch["video"][:, 0], batch["centers"])
    with pytest.raises(ValueError, match="0 frames"):
        model(batch["video"][:, :0], batch["centers"])
    with pytest.raises(ValueError, match="needs the first frame's centers"):
        model(batch["video"])
    with pytest.raises(ValueError, match=r"conditioning must be \(B=1, G, 3\)"):
        model(batch["video"], batch["boxes"])
    too_many = torch.cat([batch["centers"], batch["centers"][:, 1:3]], dim=1)  # 8 rows, objects in rows 6-7
    with pytest.raises(ValueError, match="more than the model.num_slots=6 slots"):
        model(batch["video"], too_many)
    padded = torch.cat([batch["centers"], torch.zeros(1, 3, 3)], dim=1)  # extra rows, all absent: fine
    assert model(batch["video"], padded)["slots"].shape[2] == 6
    with pytest.raises(ValueError, match="model.conditioning must be"):
        _model(conditioning="masks")
    with pytest.raises(ValueError, match="model.target must be"):
        _model(target="depth")
    with pytest.raises(ValueError, match="attention='invariant' needs model.decoder='broadcast'"):
        _model(attention="invariant", decoder="upsample", decoder_resolution=0)
    with pytest.raises(ValueError, match="slot_motion='velocity' needs model.attention='invariant'"):
        _model(attention="slot", attn_locality=0.0, slot_motion="velocity", absent_slots="keep")
    with pytest.raises(ValueError, match="attn_locality=0.2 needs model.attention='invariant'"):
        _model(attention="slot", slot_motion="none", attn_locality=0.2, absent_slots="keep")
    with pytest.raises(ValueError, match="absent_slots must be 'keep' or 'drop'"):
        _model(absent_slots="hide")
    with pytest.raises(ValueError, match="absent_slots='drop' needs model.attention='invariant'"):
        _model(conditioning="centers", attention="slot", attn_locality=0.0, absent_slots="drop")
    with pytest.raises(ValueError, match="mask_locality=0.3 must be >= 0, and > 0 needs"):
        _model(attention="slot", slot_motion="none", attn_locality=0.0, absent_slots="keep", mask_locality=0.3)
    with pytest.raises(ValueError, match="mask_locality=-1.0 must be >= 0"):
        _model(mask_locality=-1.0)
    with pytest.raises(ValueError, match="relative_values=True needs model.attention='invariant'"):
        _model(attention="slot", slot_motion="none", attn_locality=0.0, absent_slots="keep", relative_values=True)


def test_decoder_plus_attention_masks(clips):
    """model.mask_source="decoder+attention": masks = softmax over slots of the decoder's mask logits plus the log of
    the corrector's attention on the same frame, upsampled from the feature grid; it trains."""
    model = _model(mask_source="decoder+attention").eval()
    batch = clips.batch(torch.tensor([0, 1]))
    out = model(batch["video"], batch["centers"])
    model.cfg.mask_source = "decoder"  # the same weights, the decoder's masks alone
    plain = model(batch["video"], batch["centers"])
    h, w = model.encoder.feature_resolution
    log_attn = out["attn"].clamp(min=1e-6).log().unflatten(-1, (h, w)).flatten(0, 1)  # (B*F, K, h, w)
    prior = torch.nn.functional.interpolate(log_attn, size=(32, 32), mode="bilinear").unflatten(0, (2, 3))
    expected = (plain["masks"][:, :, :, 0].log() + prior).softmax(dim=2)  # (B, F, K, H, W)
    assert (out["masks"][:, :, :, 0] - expected).abs().max() < 1e-5
    assert not torch.allclose(out["masks"], plain["masks"], atol=1e-3)
    model = _model(mask_source="decoder+attention")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    assert torch.isfinite(train_step(model, optimizer, TASKS["video"], batch, "fp32"))
    with pytest.raises(ValueError, match="mask_source='decoder' or 'decoder\\+attention'"):
        _model(mask_source="attention")


def test_mask_locality_gives_far_pixels_to_the_background_slot(clips):
    """model.mask_locality=s: every object slot's mask logits lose |g - p_k|^2 / (2 s^2) around its position, the
    background's slot (0) nothing; a narrow prior leaves far pixels to the background's slot, and the model trains
    (with values relative to the slots too)."""
    model = _model(mask_locality=0.3, relative_values=True)
    positions = torch.tensor([[[0.0, 0.0], [0.5, -1.0], [-1.0, 1.0], [0.2, 0.2], [0.0, 0.0], [1.0, 1.0]]])
    penalty = model.mask_penalty(positions)  # (1, K, 1, H, W)
    H = model.cfg.resolution
    assert penalty.shape == (1, 6, 1, H, W := H) and torch.equal(penalty[:, 0], torch.zeros(1, 1, H, W))
    g = torch.linspace(-1, 1, H)
    k, i, j = 1, 5, 20
    literal = ((g[i] - positions[0, k, 0]) ** 2 + (g[j] - positions[0, k, 1]) ** 2) / (2 * 0.3**2)
    assert torch.allclose(penalty[0, k, 0, i, j], literal)
    assert penalty[0, 2, 0, 0, -1] == 0 and penalty[0, 2, 0, -1, 0] > 40  # zero at its position, large far off
    batch = clips.batch(torch.tensor([0, 1]))
    narrow = _model(mask_locality=0.02).eval()
    out = narrow(batch["video"], batch["centers"])
    masks = out["masks"][:, :, :, 0]  # (B, F, K, H, W)
    far = narrow.mask_penalty(out["positions"].flatten(0, 1))[:, 1:].amin(1)  # (B*F, 1, H, W)
    far = far.unflatten(0, masks.shape[:2])[:, :, 0] > 50  # (B, F, H, W): pixels away from every object slot
    assert far.sum() > 100 and (masks.argmax(2)[far] == 0).all()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for i in range(2):
        assert torch.isfinite(train_step(model, optimizer, TASKS["video"], clips.batch(torch.tensor([i, i + 1])),
                                         "fp32"))
    outs = []
    for locality in (0.0, 0.02):  # a learned initialisation has no background row: no effect
        model = _model(conditioning="learned", mask_locality=locality).eval()
        torch.manual_seed(1)  # the same initial positions
        outs.append(model(batch["video"])["masks"])
    assert torch.equal(*outs)


@pytest.mark.parametrize("name", ["savi_movi_a", "savi_sprites_cpu"])  # savi_movi_c: the same model (checked)
def test_every_video_preset_builds_and_takes_a_training_step(name):
    assert get_experiment("savi_movi_c").model == get_experiment("savi_movi_a").model
    cfg = get_experiment(name)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    res, K = cfg.model.resolution, cfg.model.num_slots
    video = torch.rand(1, 2, 3, res, res) * 2 - 1
    width = {"centers": 3, "boxes": 5}.get(cfg.model.conditioning)
    conditioning = None if width is None else torch.rand(1, K, width)
    out = model(video, conditioning)
    assert out["masks"].shape == (1, 2, K, 1, res, res)
    out["recon"].square().mean().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith(("encoder", "decoder")))


def test_align_frames_names_one_image_point_in_every_grid():
    """With model.align_frames a slot's position means the same image point to the attention grid, the decoder grid
    and the conditioning: an object centred on attention cell i starts there, and cell i's centre lands on the
    decoder grid's point over the same pixels; without it the grids share the numbers instead."""
    from slotlab.nn.savi import grid_to_image, image_to_grid

    model = _model(align_frames=True)
    (h, w), dh = model.encoder.feature_resolution, model.decoder.resolution[0]
    i = torch.arange(h, dtype=torch.float32)
    x = torch.rand(5, 2)
    assert torch.allclose(grid_to_image(image_to_grid(x, (h, w)), (h, w)), x, atol=1e-6)
    centres = torch.stack([(i + 0.5) / h, (i + 0.5) / w], -1)  # (h, 2): the image points of cells (i, i)
    conditioning = torch.cat([centres, torch.ones(h, 1)], -1)[None, : model.cfg.num_slots]  # (1, K, 3)
    start = model.initial_positions(1, conditioning)[0]  # (K, 2) in the attention grid's [-1, 1]
    k = torch.arange(len(start), dtype=torch.float32)
    assert torch.allclose(start, (k / (h - 1) * 2 - 1)[:, None].expand(-1, 2), atol=1e-6)
    drawn = model.decoder_centres(start)  # (K, 2) on the decoder's [0, 1]
    expected = ((k + 0.5) / h * dh - 0.5) / (dh - 1)  # decoder cell coordinate of the same image point
    assert torch.allclose(drawn, expected[:, None].expand(-1, 2), atol=1e-6)
    plain = _model()
    assert torch.allclose(plain.decoder_centres(start), (start + 1) / 2)
    with pytest.raises(ValueError, match="align_frames"):
        _model(align_frames=True, attention="slot", attn_locality=0.0, slot_motion="none")
