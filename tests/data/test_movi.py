"""The MOVi reader on TFDS files built here from the release's feature specification (Kubric's movi_*.py builders:
PNG-encoded video and segmentation frames, uint16 flow as an int64 list with its range, ragged instance boxes),
written with a protobuf encoder of this test's own, not slotlab's."""

import io
import struct

import numpy as np
import pytest
from PIL import Image

from slotlab.data.movi import MoviError, convert_movi, decode_movi_example
from slotlab.data.tfrecord import TFRecordError, masked_crc32c
from slotlab.data.video import load_video_cache

F, H, W = 3, 8, 8


def _varint(v: int) -> bytes:
    out = b""
    while True:
        out += bytes([(v & 0x7F) | (0x80 if v > 0x7F else 0)])
        v >>= 7
        if not v:
            return out


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _feature(value) -> bytes:
    """tf.train.Feature: bytes_list = 1, float_list = 2 (packed), int64_list = 3 (packed)."""
    if isinstance(value, list) and isinstance(value[0], bytes):
        return _len_field(1, b"".join(_len_field(1, v) for v in value))
    value = np.asarray(value)
    if value.dtype.kind == "f":
        return _len_field(2, _len_field(1, value.astype("<f4").tobytes()))
    return _len_field(3, _len_field(1, b"".join(_varint(int(v)) for v in value.ravel())))


def _example(features: dict) -> bytes:
    entries = b"".join(_len_field(1, _len_field(1, k.encode()) + _len_field(2, _feature(v)))
                       for k, v in features.items())
    return _len_field(1, entries)  # Example.features (1) -> Features.feature map entries (1)


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _record(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


def _video(seed: int) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 256, (F, H, W, 3), dtype=np.uint8)
    seg = np.zeros((F, H, W), np.uint8)
    seg[:, :4, :4], seg[:, 4:, 4:] = 1, 2
    flow_uint16 = rng.integers(0, 65536, (F, H, W, 2))
    features = {
        "metadata/video_name": [b"scene"], "metadata/num_frames": [F], "metadata/height": [H],
        "metadata/width": [W], "metadata/num_instances": [2],
        "metadata/forward_flow_range": np.array([-3.0, 5.0], np.float32),
        "video": [_png(f) for f in video], "segmentations": [_png(s) for s in seg],
        "forward_flow": flow_uint16,
        # instance 0 visible in frames 0-2, instance 1 only in frames 1-2
        "instances/bboxes/ragged_flat_values": np.array([[0, 0, .5, .5], [0, 0, .5, .6], [0, 0, .5, .7],
                                                         [.5, .5, 1, 1], [.5, .4, 1, 1]], np.float32),
        "instances/bboxes/ragged_row_lengths_0": [3, 2],
        "instances/bbox_frames/ragged_flat_values": [0, 1, 2, 1, 2],
        "instances/bbox_frames/ragged_row_lengths_0": [3, 2],
        "instances/image_positions": np.arange(2 * F * 2, dtype=np.float32) / 20,
        "instances/mass": np.array([1.0, 2.0], np.float32),
    }
    return features, {"video": video, "labels": seg, "flow": flow_uint16 / 65535 * 8 - 3}


def test_decodes_a_record_built_from_the_feature_spec():
    features, expected = _video(0)
    item = decode_movi_example(_example(features))
    assert np.array_equal(item["video"], expected["video"])
    assert np.array_equal(item["labels"], expected["labels"])
    np.testing.assert_allclose(item["flow"], expected["flow"], atol=1e-5)
    np.testing.assert_allclose(item["boxes"], [[0, 0, .5, .5], [0, 0, 0, 0]])  # instance 1 absent in frame 0
    np.testing.assert_allclose(item["centers"], [[0, .05], [.3, .35]])


def test_converts_shards_to_a_video_cache(tmp_path):
    src = tmp_path / "movi_a" / "64x64" / "1.0.0"
    src.mkdir(parents=True)
    for shard in range(2):
        records = [_record(_example(_video(2 * shard + i)[0])) for i in range(2)]
        (src / f"movi_a-train.tfrecord-0000{shard}-of-00002").write_bytes(b"".join(records))
    out = convert_movi(src, tmp_path / "cache" / "train", "train", resolution=4, max_instances=3, progress=False)
    arrays, meta = load_video_cache(out)
    assert meta["num"] == 4 and meta["num_objects"] == 4 and arrays["video"].shape == (4, F, 4, 4, 3)
    _, expected = _video(3)
    blocks = expected["video"].reshape(F, 4, 2, 4, 2, 3).mean(axis=(2, 4))
    assert np.array_equal(arrays["video"][3], np.round(blocks).astype(np.uint8))
    assert np.array_equal(arrays["labels"][3], expected["labels"][:, ::2, ::2])
    np.testing.assert_allclose(arrays["flow"][3], expected["flow"][:, ::2, ::2] / 2, atol=2e-2)
    np.testing.assert_allclose(arrays["boxes"][0, 1], [0, 0, .5, .5])


def test_corrupt_files_and_records_are_rejected_by_name(tmp_path):
    features, _ = _video(0)
    good = _record(_example(features))
    path = tmp_path / "movi_a-train.tfrecord-00000-of-00001"
    path.write_bytes(good[:-3])  # truncated
    with pytest.raises(TFRecordError, match="movi_a-train.tfrecord-00000-of-00001"):
        convert_movi(tmp_path, tmp_path / "out", "train", progress=False)
    damaged = bytearray(good)
    damaged[40] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(TFRecordError, match="CRC mismatch at record 0"):
        convert_movi(tmp_path, tmp_path / "out", "train", progress=False)
    del features["segmentations"]
    path.write_bytes(_record(_example(features)))
    with pytest.raises(MoviError, match=r"record 0: missing MOVi features \['segmentations'\]"):
        convert_movi(tmp_path, tmp_path / "out", "train", progress=False)
    features, _ = _video(0)
    features["video"][1] = b"\x89PNG not really"
    with pytest.raises(MoviError, match="video frame 1: cannot decode PNG"):
        decode_movi_example(_example(features), "x")
    assert not (tmp_path / "out").exists()


def test_a_converted_release_trains_and_evaluates(tmp_path):
    from slotlab.config import apply_overrides
    from slotlab.experiments import get_experiment
    from slotlab.train import train

    src = tmp_path / "release"
    src.mkdir()
    for split, seeds in (("train", (0, 1, 2)), ("validation", (3, 4))):
        records = b"".join(_record(_example(_video(s)[0])) for s in seeds)
        (src / f"movi_a-{split}.tfrecord-00000-of-00001").write_bytes(records)
    for split in ("train", "validation"):
        convert_movi(src, tmp_path / "movi" / split, split, max_instances=3, progress=False)
    cfg = apply_overrides(get_experiment("tiny_video"), [
        "data.name=movi", f"data.path={tmp_path / 'movi'}", "data.train_size=3", "data.val_size=1",
        "data.test_size=1", "data.clip_length=2", "model.resolution=8", "model.decoder_resolution=0",
        "model.target=flow", "model.conditioning=boxes", "model.num_slots=4"])
    result = train(cfg, tmp_path / "run", progress=False)
    assert result["step"] == 2 and result["num_videos"] == 1 and 0 <= result["mbo"] <= 1
