import gzip
from pathlib import Path

import numpy as np
import pytest

from slotlab.data import generate_tetrominoes
from slotlab.data.multi_object import read_multi_object
from slotlab.data.tfrecord import (
    TFRecordError,
    encode_example,
    frame_record,
    iter_records,
    parse_example,
    write_records,
)

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "tetrominoes_mini.tfrecords"


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
