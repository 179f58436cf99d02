"""moving_sprites: deterministic, and its masks, flow and conditioning signals agree with the pixels."""

import numpy as np
import pytest
import torch

from slotlab.data.moving_sprites import BACKGROUND, forward_flow, generate_moving_sprites
from slotlab.data.video import VideoSet, build_video_splits, first_frame_signals
from slotlab.experiments import get_experiment


@pytest.fixture(scope="module")
def videos():
    return generate_moving_sprites(6, seed=3, num_frames=10)


def test_deterministic_and_indexed_by_seed_and_position(videos):
    again = generate_moving_sprites(6, seed=3, num_frames=10)
    part = generate_moving_sprites(2, seed=3, start=4, num_frames=10)
    for key in videos:
        assert np.array_equal(videos[key], again[key]), key
        assert np.array_equal(videos[key][4:], part[key]), key
    other = generate_moving_sprites(6, seed=4, num_frames=10)
    assert not np.array_equal(videos["video"], other["video"])


def test_masks_match_the_pixels(videos):
    video, labels = videos["video"], videos["labels"]
    assert (video[labels == 0] == BACKGROUND).all()
    for n in range(len(video)):
        ids = np.unique(labels[n])
        assert 3 <= len(ids) <= 6  # background and 2-5 sprites
        for i in ids[1:]:
            colours = np.unique(video[n][labels[n] == i], axis=0)
            assert len(colours) == 1 and not (colours == BACKGROUND).all()  # one colour per object, every frame
        assert set(ids[1:]) == set(np.nonzero(videos["present"][n])[0])  # every object shows in the first frame


def _flow_lands_on_the_object(videos) -> int:
    """Every visible pixel, moved by the exact flow, lands on its own object (same colour) or behind a nearer one."""
    labels, flow = videos["labels"], forward_flow(videos["labels"], videos["motion"])
    N, F, H, W = labels.shape
    checked = 0
    for n in range(N):
        for t in range(F - 1):
            ys, xs = np.nonzero(labels[n, t] > 0)
            ids = labels[n, t, ys, xs]
            ty, tx = ys + flow[n, t, ys, xs, 0].astype(int), xs + flow[n, t, ys, xs, 1].astype(int)
            assert ((ty >= 0) & (ty < H) & (tx >= 0) & (tx < W)).all()  # sprites stay inside the frame
            landed = labels[n, t + 1, ty, tx]
            # the pixel lands on its own object, or behind a sprite drawn in front (a higher id): occlusion
            assert ((landed == ids) | (landed > ids)).all()
            same = landed == ids
            assert (videos["video"][n, t + 1, ty[same], tx[same]] == videos["video"][n, t, ys[same], xs[same]]).all()
            checked += int(same.sum())
    return checked


def test_flow_moves_every_visible_pixel_onto_its_object_in_the_next_frame(videos):
    flow = forward_flow(videos["labels"], videos["motion"])
    assert (flow[videos["labels"] == 0] == 0).all()
    assert _flow_lands_on_the_object(videos) > 1000


def test_conditioning_signals_and_batches_agree_with_the_generator(videos):
    signals = first_frame_signals(torch.from_numpy(videos["labels"][:, 0]), 6)
    assert torch.equal(signals["centers"][..., :2], torch.from_numpy(videos["centers"]))
    assert torch.equal(signals["boxes"][..., :4], torch.from_numpy(videos["boxes"]))
    assert torch.equal(signals["centers"][..., 2], torch.from_numpy(videos["present"]))
    clips = VideoSet(videos["video"], videos["labels"], 6, motion=videos["motion"], clip_length=4)
    assert len(clips) == 6 * 7
    batch = clips.batch(torch.tensor([7 + 2, 0]))  # video 1 from frame 2; video 0 from frame 0
    assert batch["video"].shape == (2, 4, 3, 64, 64) and batch["masks"].shape == (2, 4, 6, 64, 64)
    expected = forward_flow(videos["labels"][1, 2:6], videos["motion"][1, 2:6])  # (4, H, W, 2)
    assert torch.equal(batch["flow"][0], torch.from_numpy(expected).permute(0, 3, 1, 2))
    assert torch.equal(batch["centers"][1], signals["centers"][0])
    rgb = torch.from_numpy(videos["video"][1, 2]).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.equal(batch["video"][0, 0], rgb)


def test_bad_clip_lengths_are_rejected(tmp_path):
    cfg = get_experiment("tiny_video").data
    cfg.cache_dir = str(tmp_path)
    cfg.clip_length = 5
    with pytest.raises(ValueError, match="clip_length=5 is longer than the videos"):
        build_video_splits(cfg)
    cfg.clip_length = 0
    with pytest.raises(ValueError, match="clip_length must be >= 1"):
        build_video_splits(cfg)


def test_write_video_cache_round_trip(tmp_path):
    from slotlab.data.video import load_video_cache, write_video_cache

    rng = np.random.default_rng(0)
    arrays = {"video": rng.integers(0, 255, (2, 3, 8, 8, 3), dtype=np.uint8),  # (N, F, H, W, 3)
              "labels": rng.integers(0, 3, (2, 3, 8, 8), dtype=np.uint8)}
    out = write_video_cache(arrays, tmp_path / "videos", name="mine", seed=None, num_objects=3)
    loaded, meta = load_video_cache(out)
    assert (meta["name"], meta["num"], meta["num_frames"], meta["image_size"], meta["num_objects"]) == \
        ("mine", 2, 3, [8, 8], 3)
    for key, value in arrays.items():
        np.testing.assert_array_equal(loaded[key], value)


def test_moving_tetrominoes_pieces_keep_their_ids_colours_and_flow():
    from slotlab.data.moving_sprites import generate_moving_tetrominoes
    from slotlab.data.shapes import TETROMINO_PIXELS

    videos = generate_moving_tetrominoes(5, seed=2, num_frames=8)
    again = generate_moving_tetrominoes(2, seed=2, start=3, num_frames=8)
    for key in videos:
        assert np.array_equal(videos[key][3:], again[key]), key
    video, labels = videos["video"], videos["labels"]
    assert labels.max() == 3 and (video[labels == 0] == 0).all()  # three pieces on black
    for n in range(5):
        for i in (1, 2, 3):
            pixels = video[n][labels[n] == i]  # (P, 3): bevel intensity times one binary colour
            channels = {tuple(p > 0) for p in pixels}
            assert len(channels) == 1 and any(next(iter(channels)))
        unoccluded = [t for t in range(8) if len(np.unique(labels[n, t])) == 4 and
                      all((labels[n, t] == i).sum() == TETROMINO_PIXELS for i in (1, 2, 3))]
        assert unoccluded  # pieces keep their 100 pixels whenever none covers another
    assert _flow_lands_on_the_object(videos) > 1000
    signals = first_frame_signals(torch.from_numpy(labels[:, 0]), 4)
    assert torch.equal(signals["centers"][..., :2], torch.from_numpy(videos["centers"]))


def test_savi_trains_on_moving_tetrominoes(tmp_path):
    from slotlab.config import apply_overrides
    from slotlab.train import train

    cfg = apply_overrides(get_experiment("tiny_video"), ["data.name=moving_tetrominoes", "data.resolution=32",
                                                        f"data.cache_dir={tmp_path / 'cache'}", "train.steps=2"])
    assert train(cfg, tmp_path / "run", progress=False)["step"] == 2
