import dataclasses
import gzip
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from slotlab.cli import main
from slotlab.data import generate_tetrominoes, load_cache
from slotlab.data.convert import convert_tfrecord
from slotlab.data.multi_object import LAYOUTS, crop_and_resize, decode_scene, read_multi_object
from slotlab.data.specs import DataSpec, parse_data_spec, training_specs
from slotlab.data.stream import MultiObjectStream
from slotlab.data.tfrecord import (
    TFRecordError,
    _crc32c_bytewise,
    crc32c,
    encode_example,
    frame_record,
    iter_records,
    parse_example,
    write_records,
)
from slotlab.evaluate import evaluate
from slotlab.experiments import get_experiment
from slotlab.runs import resolve_data

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real" / "tetrominoes_mini.tfrecords"


def official_tetrominoes_records(num: int) -> tuple[list[bytes], dict]:
    """Generated scenes serialized exactly as DeepMind's tetrominoes.tfrecords (masks 0/255 [4,35,35,1])."""
    arrays = generate_tetrominoes(num, seed=5)
    records = []
    for i in range(num):
        mask = (np.eye(4, dtype=np.uint8)[arrays["labels"][i]].transpose(2, 0, 1)[..., None] * 255)
        records.append(encode_example({
            "image": arrays["image"][i], "mask": mask, "x": arrays["x"][i], "y": arrays["y"][i],
            "shape": arrays["shape"][i], "color": arrays["color"][i], "visibility": arrays["visibility"][i],
        }))
    return records, arrays


def test_round_trip_in_the_official_format(tmp_path):
    records, arrays = official_tetrominoes_records(5)
    write_records(tmp_path / "t.tfrecords", records)
    got = read_multi_object("tetrominoes", tmp_path / "t.tfrecords")
    for key in ["image", "labels", "x", "y", "shape", "color", "visibility"]:
        np.testing.assert_array_equal(got[key], arrays[key])


def test_reads_the_real_file():
    if not REAL.is_file():
        pytest.skip("real sample not present")
    got = read_multi_object("tetrominoes", REAL)
    assert got["image"].shape == (10, 35, 35, 3) and got["labels"].shape == (10, 35, 35)
    for i in range(10):
        sizes = np.bincount(got["labels"][i].ravel(), minlength=4)
        assert list(sizes[1:]) == [100, 100, 100]  # three 4-block pieces, masks partition the image
    assert set(np.unique(got["shape"][:, 1:])) <= set(range(1, 20))
    assert set(np.unique(got["color"])) <= {0.0, 1.0}


def test_corrupt_record_is_named(tmp_path):
    records, _ = official_tetrominoes_records(3)
    good = b"".join(frame_record(r) for r in records)
    raw = bytearray(good)
    raw[len(raw) // 2] ^= 0xFF  # flip a byte inside record 1
    (tmp_path / "bad.tfrecords").write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(TFRecordError, match="CRC mismatch at record 1"):
        read_multi_object("tetrominoes", tmp_path / "bad.tfrecords")
    (tmp_path / "cut.tfrecords").write_bytes(gzip.compress(good[:-10]))
    with pytest.raises(TFRecordError, match="truncated"):
        list(iter_records(tmp_path / "cut.tfrecords"))


def test_wrong_kind_missing_fields_and_empty_file(tmp_path):
    write_records(tmp_path / "other.tfrecords", [encode_example({"image": np.zeros(64 * 64 * 3, np.uint8)})])
    with pytest.raises(TFRecordError, match="missing fields"):
        read_multi_object("tetrominoes", tmp_path / "other.tfrecords")
    write_records(tmp_path / "empty.tfrecords", [])
    with pytest.raises(TFRecordError, match="no records"):
        read_multi_object("tetrominoes", tmp_path / "empty.tfrecords")
    with pytest.raises(FileNotFoundError):
        read_multi_object("tetrominoes", tmp_path / "nope.tfrecords")


def test_example_codec_round_trip():
    ex = parse_example(encode_example({"a": np.arange(5, dtype=np.uint8), "f": np.array([1.5, -2.0], np.float32),
                                       "i": np.array([3, -4, 2**40])}))
    np.testing.assert_array_equal(ex["a"], np.arange(5))
    np.testing.assert_array_equal(ex["f"], [1.5, -2.0])
    np.testing.assert_array_equal(ex["i"], [3, -4, 2**40])


# ---------------------------------------------------------------------------------------------------------------
# Every kind, in the exact official layout, read back through the CLI's --data path


def random_scene(kind: str, rng: np.random.Generator, num_objects: int | None = None) -> tuple[dict, dict]:
    """(the official record fields, the expected labels (H, W) and image (H, W, 3)) of a random scene of ``kind``."""
    layout = LAYOUTS[kind]
    (H, W), G = layout.image_size, layout.num_masks
    bg = layout.num_background
    n = num_objects if num_objects is not None else G - bg
    labels = rng.integers(0, bg, (H, W))  # background regions first
    for k in range(n):  # object k: a rectangle painted over what is there (occlusion)
        r, c = rng.integers(0, H - 4), rng.integers(0, W - 4)
        labels[r : r + rng.integers(3, H // 2), c : c + rng.integers(3, W // 2)] = bg + k
    present = np.isin(np.arange(G), labels)
    mask = (np.eye(G, dtype=np.uint8)[labels] * 255)  # (H, W, G)
    mask = mask[..., None] if layout.mask_order == "HWG" else mask.transpose(2, 0, 1)[..., None]
    image = rng.integers(0, 256, (H, W, layout.channels), dtype=np.uint8)
    fields = {"image": image, "mask": mask}
    for name, width in layout.floats.items():
        value = present.astype(np.float32) if name == "visibility" else rng.random((G, width), np.float32)
        fields[name] = value if name == "visibility" else value.squeeze(1) if width == 1 else value
    for name in layout.codes:
        fields[name] = (rng.integers(1, 4, G) * present).astype(np.uint8)
    expected_image = np.repeat(image, 3, axis=2) if layout.channels == 1 else image
    return fields, {"labels": labels.astype(np.uint8), "image": expected_image, "present": present}


def write_kind(path, kind: str, num: int, seed: int = 0, objects: list[int] | None = None) -> list[dict]:
    rng = np.random.default_rng(seed)
    scenes = [random_scene(kind, rng, None if objects is None else objects[i]) for i in range(num)]
    write_records(path, [encode_example(fields) for fields, _ in scenes])
    return [expected for _, expected in scenes]


KINDS = sorted(LAYOUTS)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_reads_back_through_data_spec(tmp_path, kind):
    layout = LAYOUTS[kind]
    objects = [3, 7, 2] if layout.max_objects else None  # clevr6 drops the 7-object scene
    expected = write_kind(tmp_path / "f.tfrecords", kind, 3, objects=objects)
    scenes = resolve_data(f"{kind}:{tmp_path / 'f.tfrecords'}", get_experiment("tiny"))
    keep = [e for e, n in zip(expected, objects or [0] * 3, strict=True) if not layout.max_objects or n <= 6]
    assert len(scenes) == len(keep)
    assert scenes.num_objects == layout.num_masks and scenes.num_background == layout.num_background
    assert scenes.images.dtype == torch.uint8 and scenes.images.shape[1:] == (3, *layout.output_size)
    if layout.crop is None:
        for i, e in enumerate(keep):
            np.testing.assert_array_equal(scenes.labels[i].numpy(), e["labels"])
            np.testing.assert_array_equal(scenes.images[i].permute(1, 2, 0).numpy(), e["image"])
    else:  # CLEVR protocol: crop rows 29:221, cols 64:256; nearest for labels, bilinear for the image
        (r0, r1), (c0, c1) = layout.crop
        for i, e in enumerate(keep):
            crop = torch.from_numpy(e["labels"][r0:r1, c0:c1])[None, None].float()
            want = torch.nn.functional.interpolate(crop, size=(128, 128), mode="nearest-exact")[0, 0]
            np.testing.assert_array_equal(scenes.labels[i].numpy(), want.numpy())
            image = torch.from_numpy(e["image"][r0:r1, c0:c1]).permute(2, 0, 1)[None].float()
            want = torch.nn.functional.interpolate(image, size=(128, 128), mode="bilinear", align_corners=False)
            assert (scenes.images[i].float() - want[0]).abs().max() <= 0.5
    masks = scenes.batch(slice(0, len(scenes)))["masks"]
    assert torch.all(masks.sum(1) == 1)  # a partition


def test_clevr_resize_is_half_pixel_bilinear_without_antialias():
    layout = LAYOUTS["clevr_with_masks"]
    image = np.zeros((240, 320, 3), np.uint8)
    image[29:221, 64:256] = np.arange(192, dtype=np.uint8)[None, :, None]  # a horizontal ramp in the crop
    out = crop_and_resize({"image": image, "labels": np.zeros((240, 320), np.uint8)}, layout)
    # half-pixel centres: output column j samples input x = (j + 0.5) * 1.5 - 0.5, so column 0 -> 0.25, 1 -> 1.75
    np.testing.assert_array_equal(out["image"][0, :3, 0], [0, 2, 3])  # round(0.25), round(1.75), round(3.25)
    assert out["image"].shape == (128, 128, 3) and out["labels"].shape == (128, 128)


def test_multi_dsprites_mask_is_stored_hwg():
    rng = np.random.default_rng(1)
    fields, expected = random_scene("multi_dsprites_colored_on_grayscale", rng)
    assert fields["mask"].shape == (64, 64, 6, 1)
    scene = decode_scene("multi_dsprites", parse_example(encode_example(fields)), "test")
    np.testing.assert_array_equal(scene["labels"], expected["labels"])
    assert scene["color"].shape == (6, 3) and scene["orientation"].shape == (6,)


def test_objects_room_fg_ari_drops_all_four_background_masks(tmp_path):
    """A model that puts sky, floor and both walls in one slot and each object in its own is perfect on FG-ARI;
    counted with one background mask (as other datasets) it would be penalised."""
    expected = write_kind(tmp_path / "room.tfrecords", "objects_room_six_objects", 2, seed=3)
    scenes = resolve_data(f"objects_room_six_objects:{tmp_path / 'room.tfrecords'}", get_experiment("tiny"))
    merged = [np.maximum(e["labels"].astype(np.int64) - 3, 0) for e in expected]  # bg 0-3 -> one slot 0

    class Oracle(torch.nn.Module):
        def forward(self, image, num_slots=None, num_iters=None):
            masks = torch.nn.functional.one_hot(torch.from_numpy(np.stack(merged)), 8).permute(0, 3, 1, 2).float()
            return {"masks": masks[: len(image)], "recon": image}

    result = evaluate(Oracle(), scenes)
    assert result["fg_ari"] == pytest.approx(1.0) and result["mbo"] == pytest.approx(1.0)
    one_bg = dataclasses.replace(scenes, num_background=1)
    assert evaluate(Oracle(), one_bg)["fg_ari"] < 0.99


def test_real_tetrominoes_through_the_data_spec():
    if not REAL.is_file():
        pytest.skip("real sample not present")
    scenes = resolve_data(f"tetrominoes:{REAL}@2:7", get_experiment("tiny"))
    assert len(scenes) == 5 and scenes.resolution == 35 and scenes.num_background == 1


# ---------------------------------------------------------------------------------------------------------------
# Data specs, streaming, conversion


def test_parse_data_spec_ranges_and_names():
    assert parse_data_spec("tetrominoes:/d/t.tfrecords") == DataSpec("tetrominoes", "/d/t.tfrecords")
    assert parse_data_spec("tetrominoes:/d/t.tfrecords@5:9") == DataSpec("tetrominoes", "/d/t.tfrecords", 5, 9)
    assert parse_data_spec("cache:/d/x@:9") == DataSpec("cache", "/d/x", 0, 9)
    assert parse_data_spec("clevr6:/d/c@test320") == DataSpec("clevr6", "/d/c", 90_000, 100_000, 320)
    assert parse_data_spec("multi_dsprites:/d/m@train") == DataSpec("multi_dsprites", "/d/m", 0, 60_000)
    for bad, message in [("tetris:/x", "expected KIND:PATH"), ("tetrominoes:/x@9:5", "empty range"),
                         ("objects_room_six_objects:/x@train", "no range named")]:
        with pytest.raises(ValueError, match=message):
            parse_data_spec(bad)


def test_training_specs_hold_out_validation_after_the_training_range():
    train, val = training_specs("tetrominoes:/t", None, 320)
    assert (train.start, train.stop, val.start, val.limit) == (0, 60_000, 60_000, 320)
    train, val = training_specs("tetrominoes:/t@0:8", "tetrominoes:/v", 320)
    assert (train.stop, val.path) == (8, "/v")
    with pytest.raises(ValueError, match="nothing is held out"):
        training_specs("objects_room_empty_room:/t", None, 320)


def test_stream_two_workers_see_every_record_once(tmp_path):
    records, _ = official_tetrominoes_records(7)
    write_records(tmp_path / "t.tfrecords", records)
    stream = MultiObjectStream("tetrominoes", tmp_path / "t.tfrecords", start=1)
    loader = torch.utils.data.DataLoader(stream, batch_size=2, num_workers=2)
    batches = list(loader)
    seen = torch.cat([b["index"] for b in batches]).tolist()
    assert sorted(seen) == list(range(1, 7))
    assert batches[0]["image"].shape[1:] == (3, 35, 35) and batches[0]["masks"].shape[1:] == (4, 35, 35)
    ranks = [[int(x["index"]) for x in MultiObjectStream("tetrominoes", tmp_path / "t.tfrecords", 0, 5, r, 2)]
             for r in range(2)]
    assert ranks == [[0, 2, 4], [1, 3]]


def test_convert_then_read_the_cache(tmp_path, capsys):
    records, arrays = official_tetrominoes_records(6)
    write_records(tmp_path / "t.tfrecords", records)
    assert main(["data", "convert", f"tetrominoes:{tmp_path / 't.tfrecords'}", "--out", str(tmp_path / "c"),
                 "--start", "1", "--stop", "5", "--no-progress"]) == 0
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["num"] == 4 and meta["start"] == 1 and meta["source"]["records"] == [1, 5]
    cached = load_cache(tmp_path / "c")
    np.testing.assert_array_equal(cached["labels"], arrays["labels"][1:5])
    np.testing.assert_array_equal(cached["color"], arrays["color"][1:5])
    scenes = resolve_data(f"cache:{tmp_path / 'c'}@1:3", get_experiment("tiny"))
    np.testing.assert_array_equal(scenes.labels.numpy(), arrays["labels"][2:4])


def test_convert_objects_room_keeps_num_background(tmp_path):
    write_kind(tmp_path / "r.tfrecords", "objects_room", 3)
    convert_tfrecord("objects_room", tmp_path / "r.tfrecords", tmp_path / "c", progress=False, chunk=2)
    assert json.loads((tmp_path / "c" / "meta.json").read_text())["num_background"] == 4
    assert resolve_data(f"cache:{tmp_path / 'c'}", get_experiment("tiny")).num_background == 4


def test_train_and_eval_on_tfrecord_data_from_the_cli(tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO)
    records, _ = official_tetrominoes_records(12)
    write_records(tmp_path / "t.tfrecords", records)
    run, data = tmp_path / "run", f"tetrominoes:{tmp_path / 't.tfrecords'}"
    assert main(["train", "--experiment", "tiny", "--workdir", str(run), "--no-progress", "--data", f"{data}@0:8",
                 "--set", "data.val_size=2"]) == 0
    assert json.loads((run / "data.json").read_text())["data"] == f"{data}@0:8"
    assert main(["train", "--experiment", "tiny", "--workdir", str(run), "--no-progress", "--resume",
                 "--set", "train.steps=5"]) == 0  # --resume reads the specs it was trained on
    assert f"training on {data}@0:8" in caplog.text
    resume = ["train", "--experiment", "tiny", "--workdir", str(run), "--no-progress", "--resume",
              "--set", "train.steps=6", "--data", f"{data}@0:4", "--val-data", f"{data}@4:5"]
    assert main(resume) == 2  # other data: only when asked for
    assert "--allow-change data" in capsys.readouterr().err
    assert main([*resume, "--allow-change", "data"]) == 0
    assert f"training on {data}@0:4, validating on {data}@4:5" in caplog.text
    assert json.loads((run / "data.json").read_text())["data"] == f"{data}@0:4"
    assert main(["eval", "--workdir", str(run), "--data", f"{data}@10:12"]) == 0
    out = capsys.readouterr().out
    assert "FG-ARI" in out and "(2 scenes)" in out


# ---------------------------------------------------------------------------------------------------------------
# Bad files: each error names the file and the record


def test_crc_lanes_match_the_bytewise_crc():
    from slotlab.data.tfrecord import _crc32c_numpy

    rng = np.random.default_rng(0)
    for n in (5, 5000, 65536, 100_003):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert crc32c(data) == _crc32c_numpy(data) == _crc32c_bytewise(data)
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value


def test_crc_backend_without_google_crc32c_is_a_clear_error(monkeypatch):
    import sys

    from slotlab.data import tfrecord

    monkeypatch.setitem(sys.modules, "google_crc32c", None)  # as if not installed
    tfrecord._crc32c_backend.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="pip install google-crc32c"):
            crc32c(b"abc")
        monkeypatch.setenv("SLOTLAB_CRC32C", "numpy")
        tfrecord._crc32c_backend.cache_clear()
        assert crc32c(b"123456789") == 0xE3069283
    finally:
        tfrecord._crc32c_backend.cache_clear()


def test_file_of_another_kind_is_named(tmp_path):
    write_kind(tmp_path / "m.tfrecords", "multi_dsprites_colored_on_grayscale", 2)
    with pytest.raises(TFRecordError, match=r"m.tfrecords: record 0: .*looks like a multi_dsprites_colored_on_gray"):
        read_multi_object("tetrominoes", tmp_path / "m.tfrecords")
    with pytest.raises(TFRecordError, match=r"record 0: mask has .*expected 5x64x64"):
        read_multi_object("multi_dsprites_colored_on_colored", tmp_path / "m.tfrecords")


def test_wrong_sizes_are_named(tmp_path):
    records, arrays = official_tetrominoes_records(3)
    fields = {"image": arrays["image"][0][:30], "mask": np.zeros((4, 35, 35, 1), np.uint8), "x": arrays["x"][0],
              "y": arrays["y"][0], "shape": arrays["shape"][0], "color": arrays["color"][0],
              "visibility": arrays["visibility"][0]}
    write_records(tmp_path / "w.tfrecords", records[:2] + [encode_example(fields)])
    with pytest.raises(TFRecordError, match=r"w.tfrecords: record 2: image has 3150 bytes, expected 35x35x3"):
        read_multi_object("tetrominoes", tmp_path / "w.tfrecords")


def test_missing_keys_are_named(tmp_path):
    records, _ = official_tetrominoes_records(2)
    write_records(tmp_path / "k.tfrecords", [records[0], encode_example({"image": np.zeros(3675, np.uint8)})])
    with pytest.raises(TFRecordError, match=r"k.tfrecords: record 1: missing fields \['mask'"):
        read_multi_object("tetrominoes", tmp_path / "k.tfrecords")


def test_empty_or_short_range_is_an_error(tmp_path):
    records, _ = official_tetrominoes_records(3)
    write_records(tmp_path / "s.tfrecords", records)
    with pytest.raises(TFRecordError, match=r"s.tfrecords: no records in range \[5, 8\): the file holds 3"):
        read_multi_object("tetrominoes", tmp_path / "s.tfrecords", 5, 8)
    with pytest.raises(TFRecordError, match=r"an incomplete range \[1, 9\): the file holds 3"):
        read_multi_object("tetrominoes", tmp_path / "s.tfrecords", 1, 9)
    assert main(["eval", "--workdir", str(tmp_path), "--data", "tetrominoes:x@4:2"]) == 2


def test_truncated_file_names_the_record(tmp_path):
    records, _ = official_tetrominoes_records(3)
    raw = b"".join(frame_record(r) for r in records)
    (tmp_path / "cut.tfrecords").write_bytes(gzip.compress(raw[: len(raw) - 100]))
    with pytest.raises(TFRecordError, match=r"cut.tfrecords: truncated data at record 2"):
        read_multi_object("tetrominoes", tmp_path / "cut.tfrecords")
    (tmp_path / "gz.tfrecords").write_bytes(gzip.compress(raw)[:-30])  # the GZIP stream itself cut short
    with pytest.raises(TFRecordError, match=r"gz.tfrecords: (cannot decompress|truncated) .*record 2"):
        read_multi_object("tetrominoes", tmp_path / "gz.tfrecords")


def test_real_clevr_with_masks_scenes_through_the_protocol(tmp_path):
    """The two real CLEVR-with-masks scenes (exported as PNG) packed in the official record layout."""
    folder = REAL.parent / "clevr_with_masks_png"
    if not folder.is_dir():
        pytest.skip("real sample not present")
    from PIL import Image

    records, objects = [], []
    for i in range(2):
        image = np.asarray(Image.open(folder / f"CLEVR_image_{i}.png"))[..., ::-1]  # the PNGs hold BGR
        mask = np.stack([np.asarray(Image.open(folder / f"CLEVR_mask_{i}_{k}.png")) for k in range(11)])[..., None]
        visibility = mask.reshape(11, -1).any(1).astype(np.float32)
        objects.append(int(visibility[1:].sum()))
        floats = {name: np.zeros(11, np.float32) for name in ("x", "y", "z", "rotation")}
        codes = {name: (visibility > 0).astype(np.uint8) for name in ("size", "material", "shape", "color")}
        records.append(encode_example({"image": np.ascontiguousarray(image), "mask": mask, **floats,
                                       "pixel_coords": np.zeros((11, 3), np.float32), "visibility": visibility,
                                       **codes}))
    write_records(tmp_path / "c.tfrecords", records)
    assert objects == [7, 8]
    scenes = resolve_data(f"clevr_with_masks:{tmp_path / 'c.tfrecords'}", get_experiment("tiny"))
    assert scenes.images.shape == (2, 3, 128, 128) and scenes.num_objects == 11
    # the crop (rows 29:221, cols 64:256) cuts objects 4 and 6 of scene 0 out entirely; the rest survive the resize
    assert [np.unique(scenes.labels[i].numpy()).tolist() for i in range(2)] == [[0, 1, 2, 3, 5, 7], list(range(9))]
    with pytest.raises(TFRecordError, match="no scenes of clevr6"):  # both have more than 6 objects
        read_multi_object("clevr6", tmp_path / "c.tfrecords")
