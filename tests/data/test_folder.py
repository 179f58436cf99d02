"""Folders of images as data: RGB conversion, fitting to the model, listing, splits, masks, errors, convert."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from slotlab.data import load_cache, read_meta
from slotlab.data.folder import FolderScenes, folder_scenes, folder_training_splits, list_images, validation_count
from slotlab.data.folder_convert import convert_folder
from slotlab.data.imageio import ImageReadError, fit, fit_image, fit_labels, read_rgb, unfit_masks


def _save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path) if mode else Image.fromarray(array).save(path)


def test_rgb_conversion_rules(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    _save(tmp_path / "l.png", grey)
    assert (read_rgb(tmp_path / "l.png") == grey[:, :, None]).all()  # L: the grey copied to R, G, B

    deep = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "i16.png")
    assert Image.open(tmp_path / "i16.png").mode.startswith("I")
    expected = np.clip(np.rint(deep / 257.0), 0, 255).astype(np.uint8)
    assert (read_rgb(tmp_path / "i16.png") == expected[:, :, None]).all()  # 16-bit: value / 257

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, [[255, 0], [128, 255]]
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    red = read_rgb(tmp_path / "a.png")[..., 0]
    assert red.tolist() == [[200, 0], [100, 200]]  # over black

    colour = np.random.default_rng(0).integers(0, 255, (5, 6, 3), dtype=np.uint8)
    Image.fromarray(colour).convert("P", palette=Image.ADAPTIVE, colors=8).save(tmp_path / "p.png")
    palette = Image.open(tmp_path / "p.png")
    assert palette.mode == "P"
    assert (read_rgb(tmp_path / "p.png") == np.asarray(palette.convert("RGB"))).all()


@pytest.mark.parametrize("size", [(35, 35), (40, 60), (60, 40), (7, 13)])
@pytest.mark.parametrize("mode", ["crop", "pad", "stretch"])
def test_fit_geometry_and_inverse(size, mode):
    R = 35
    f = fit(size, R, mode)
    rgb = np.random.default_rng(1).integers(0, 255, (*size, 3), dtype=np.uint8)
    image, _ = fit_image(rgb, R, mode)
    assert image.shape == (R, R, 3) and image.dtype == np.uint8
    if size == (R, R):
        assert (image == rgb).all()  # never resampled
    labels = np.ones(size, np.uint8)
    placed = fit_labels(labels, f)
    if mode == "pad" and size != (R, R):
        assert (placed == 0).any() and (placed == 1).any()  # padding is background
    else:
        assert (placed == 1).all()
    masks = torch.zeros(2, R, R)
    masks[1] = 1.0
    back, seen = unfit_masks(masks, f)
    assert back.shape == (2, *size) and seen.shape == size
    if mode == "crop" and size[0] != size[1]:
        assert not seen.all() and seen.any()  # the sides outside the centre crop
    else:
        assert seen.all()


def test_listing_is_recursive_sorted_and_skips_masks(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    for rel in ["b.png", "a/z.jpg", "a.png", "masks/a.png", ".hidden.png", "notes.txt", "A/c.PNG"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith("txt"):
            (tmp_path / rel).write_text("x")
        else:
            _save(tmp_path / rel, rgb)
    assert list_images(tmp_path) == ["A/c.PNG", "a.png", "a/z.jpg", "b.png"]


def test_clear_errors_name_the_file(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty folder"):
        list_images(empty)
    text = tmp_path / "text"
    text.mkdir()
    (text / "readme.txt").write_text("hello")
    with pytest.raises(ValueError, match="no image files.*readme.txt"):
        list_images(text)
    with pytest.raises(FileNotFoundError, match="not found"):
        list_images(tmp_path / "missing")

    bad = tmp_path / "bad"
    _save(bad / "good.png", np.zeros((35, 35, 3), np.uint8))
    (bad / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (bad / "zero.png").write_bytes(b"")
    scenes = folder_scenes(f"folder:{bad}", 35)  # streaming: listing reads no image
    assert scenes.files == ["corrupt.png", "good.png", "zero.png"]
    with pytest.raises(ImageReadError, match="corrupt.png: cannot read"):
        scenes.batch(slice(0, 1))
    with pytest.raises(ImageReadError, match="zero.png: empty file"):
        scenes.batch(torch.tensor([2]))
    assert scenes.batch(torch.tensor([1]))["image"].shape == (1, 3, 35, 35)

    masked = tmp_path / "masked"
    _save(masked / "x.png", np.zeros((35, 35, 3), np.uint8))
    (masked / "masks" / "x.png").mkdir(parents=True)  # a directory where the mask should be
    with pytest.raises(ImageReadError, match=r"masks/x.png: is a directory"):
        folder_scenes(f"folder:{masked}", 35).batch(slice(0, 1))


def test_masks_label_maps_and_resize(tmp_path):
    image = np.zeros((40, 60, 3), np.uint8)
    labels = np.zeros((40, 60), np.uint8)
    labels[5:20, 25:40] = 2
    labels[25:35, 28:35] = 1
    _save(tmp_path / "sub" / "s.jpg", image)
    _save(tmp_path / "masks" / "sub" / "s.png", labels)
    for mode in ("crop", "pad", "stretch"):
        batch = folder_scenes(f"folder:{tmp_path}", 20, mode).batch(slice(0, 1))
        assert batch["image"].shape == (1, 3, 20, 20)
        assert batch["masks"].shape == (1, 3, 20, 20)
        assert (batch["masks"].sum(1) == 1).all()  # one-hot
    _save(tmp_path / "masks" / "sub" / "s.png", labels[:30])
    with pytest.raises(ImageReadError, match="expected the image's size"):
        folder_scenes(f"folder:{tmp_path}", 20).batch(slice(0, 1))
    _save(tmp_path / "masks" / "sub" / "s.png", np.zeros((40, 60, 3), np.uint8))
    with pytest.raises(ImageReadError, match="single-channel"):
        folder_scenes(f"folder:{tmp_path}", 20).batch(slice(0, 1))


def test_clevr_export_layout_per_object_masks_and_bgr(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200  # red in RGB
    _save(tmp_path / "images" / "val" / "CLEVR_val_000000.png", rgb[:, :, ::-1].copy())  # written BGR
    background = np.full((8, 8), 255, np.uint8)
    obj = np.zeros((8, 8), np.uint8)
    obj[2:5, 2:5] = 255
    background[2:5, 2:5] = 0
    _save(tmp_path / "masks" / "val" / "CLEVR_val_000000_0.png", background)
    _save(tmp_path / "masks" / "val" / "CLEVR_val_000000_1.png", obj)
    scenes = folder_scenes(f"folder:{tmp_path}@val", 8)
    assert scenes.mask_layout == "objects" and scenes.bgr
    batch = scenes.batch(slice(0, 1))
    assert batch["image"][0, 0].min() > 0.5 and batch["image"][0, 2].max() < -0.99  # back to red
    assert batch["masks"][0, 1].sum() == 9 and batch["masks"][0, 0].sum() == 64 - 9


def test_splits_subfolders_or_last_ten_percent(tmp_path):
    flat = tmp_path / "flat"
    for i in range(30):
        _save(flat / f"{i:02d}.png", np.zeros((4, 4, 3), np.uint8))
    splits = folder_training_splits(f"folder:{flat}", 4)
    assert len(splits["val"]) == 3 and len(splits["train"]) == 27
    assert splits["val"].files == ["27.png", "28.png", "29.png"]
    assert validation_count(10_000) == 500 and validation_count(5) == 1
    with pytest.raises(ValueError, match="no test/ sub-folder"):
        folder_scenes(f"folder:{flat}@test", 4)

    nested = tmp_path / "nested"
    for split, n in (("train", 5), ("val", 2), ("test", 3)):
        for i in range(n):
            _save(nested / split / f"{i}.png", np.zeros((4, 4, 3), np.uint8))
    splits = folder_training_splits(f"folder:{nested}", 4)
    assert splits["train"].files[0] == "train/0.png" and len(splits["train"]) == 5 and len(splits["val"]) == 2
    assert len(folder_scenes(f"folder:{nested}@test", 4)) == 3
    assert len(folder_scenes(f"folder:{nested}", 4)) == 10  # eval on the folder: every image
    with pytest.raises(ValueError, match="data.resize"):
        FolderScenes(nested, ["train/0.png"], 4, "squash")


def test_convert_folder_to_cache(tmp_path):
    src = tmp_path / "src"
    for i in range(5):
        labels = np.zeros((10, 12), np.uint8)
        labels[2:4, 2 + i : 5 + i] = 1 + (i % 2)
        _save(src / f"{i}.png", np.full((10, 12, 3), 40 * i, np.uint8))
        _save(src / "masks" / f"{i}.png", labels)
    out = convert_folder(f"folder:{src}", tmp_path / "cache", 8, "stretch", progress=False)
    arrays, meta = load_cache(out), read_meta(out)
    assert arrays["image"].shape == (5, 8, 8, 3) and arrays["labels"].shape == (5, 8, 8)
    assert meta["num_objects"] == 3 and meta["masks"] is True and meta["source"]["resize"] == "stretch"
    assert arrays["visibility"][:, 1].tolist() == [1, 0, 1, 0, 1]
    assert (out / "files.txt").read_text().split() == [f"{i}.png" for i in range(5)]
    assert int(arrays["image"][3, 0, 0, 0]) == 120


def test_train_folder_without_val_holds_out_its_last_files(tmp_path):
    for i in range(10):
        _save(tmp_path / "train" / f"{i}.png", np.zeros((4, 4, 3), np.uint8))
    splits = folder_training_splits(f"folder:{tmp_path}", 4)
    assert splits["val"].files == ["train/9.png"] and len(splits["train"]) == 9  # disjoint


_REAL_CLEVR = next((p for p in (Path(__file__).resolve().parents[2] / "shared/data/real/clevr_with_masks_png",
                                Path(__file__).resolve().parents[3] / "shared/data/real/clevr_with_masks_png")
                    if p.is_dir()), None)


@pytest.mark.skipif(_REAL_CLEVR is None, reason="the real CLEVR-with-masks samples are not beside the repository")
def test_real_clevr_with_masks_samples():
    """X_image_I.png beside X_mask_I_J.png (0 / 255, J = 0 the background, unused slots all zero), images BGR."""
    scenes = folder_scenes(f"folder:{_REAL_CLEVR}", 128, "stretch")
    assert scenes.files == ["CLEVR_image_0.png", "CLEVR_image_1.png"]  # the masks are not listed as images
    assert scenes.mask_layout == "objects" and scenes.bgr
    labels = scenes.read_labels(scenes.files[0])
    assert labels.shape == (240, 320) and labels.max() >= 3
    raw = np.asarray(Image.open(_REAL_CLEVR / "CLEVR_image_0.png").convert("RGB"))
    assert (scenes.read(0)["image"] == fit_image(raw[:, :, ::-1].copy(), 128, "stretch")[0]).all()
    batch = scenes.batch(slice(0, 2))
    assert batch["masks"].shape[:2] == (2, 9) and (batch["masks"].sum(1) == 1).all()


def test_convert_folder_on_the_command_line(tmp_path, capsys):
    from slotlab.cli import main

    for i in range(3):
        _save(tmp_path / "src" / f"{i}.jpg", np.full((12, 10, 3), 50 * i, np.uint8))
    assert main(["data", "convert", f"folder:{tmp_path / 'src'}", "--out", str(tmp_path / "c")]) == 2
    assert "--resolution" in capsys.readouterr().err
    assert main(["data", "convert", f"folder:{tmp_path / 'src'}", "--out", str(tmp_path / "c"), "--resolution", "8",
                 "--resize", "pad", "--no-progress"]) == 0
    assert load_cache(tmp_path / "c")["image"].shape == (3, 8, 8, 3)
    assert read_meta(tmp_path / "c")["masks"] is False
