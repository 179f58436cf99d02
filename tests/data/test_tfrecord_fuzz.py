"""Fuzzing the Example parser: mutated payloads re-framed with correct CRCs, so the parser, not the checksum, meets
them. Every one ends in a TFRecordError naming the file and the record; none in another exception."""

import numpy as np
import pytest

from slotlab.data.multi_object import iter_scenes
from slotlab.data.tfrecord import TFRecordError, encode_example, write_records

G, H, W = 4, 35, 35


def _payload(labels_seed, values_rng):
    """A valid tetrominoes Example (the official field layout): labels from ``labels_seed``, the image and the
    float factors from ``values_rng``."""
    labels = np.random.default_rng(labels_seed).integers(0, G, (H, W))
    mask = (np.arange(G)[:, None, None] == labels[None]).astype(np.uint8) * 255  # (G, H, W) partition
    image = values_rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    floats = {k: values_rng.random(G * w).astype(np.float32)
              for k, w in (("x", 1), ("y", 1), ("shape", 1), ("color", 3), ("visibility", 1))}
    return encode_example({"image": image, "mask": mask[..., None], **floats})


def _value_offsets(seed):
    """A payload and the offsets of its image and float bytes (any value is valid there): where payloads with
    other values differ."""
    base = _payload(seed, np.random.default_rng(100))
    differ = np.zeros(len(base), bool)
    for variant in range(3):
        other = _payload(seed, np.random.default_rng(200 + variant))
        assert len(other) == len(base)
        differ |= np.frombuffer(other, np.uint8) != np.frombuffer(base, np.uint8)
    return base, differ


def _mutate(rng, payload: bytes, structural: np.ndarray) -> bytes:
    """One random structural mutation: flip, overwrite, insert, delete, duplicate or truncate."""
    data = bytearray(payload)
    pos = int(rng.choice(structural))
    op = rng.integers(6)
    if op == 0:
        data[pos] ^= 1 << int(rng.integers(8))
    elif op == 1:
        data[pos] = (data[pos] + int(rng.integers(1, 256))) % 256
    elif op == 2:
        data[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 4)), dtype=np.uint8).tobytes()
    elif op == 3:
        del data[pos : pos + int(rng.integers(1, 4))]
    elif op == 4:
        span = int(rng.integers(1, 16))
        data[pos:pos] = data[pos : pos + span]
    else:
        del data[pos:]
    return bytes(data)


def test_one_thousand_mutated_examples_with_valid_crcs_end_in_named_errors(tmp_path):
    base, value_bytes = _value_offsets(0)
    structural = np.flatnonzero(~value_bytes)
    assert len(structural) > 10_000  # tags, lengths, names and the mask values
    write_records(tmp_path / "ok.tfrecords", [base])  # the unmutated payload reads
    assert len(list(iter_scenes("tetrominoes", tmp_path / "ok.tfrecords"))) == 1
    rng = np.random.default_rng(1)
    path = tmp_path / "f.tfrecords"
    outcomes = {"named error": 0, "other": []}
    for case in range(1000):
        mutated = _mutate(rng, base, structural)
        records = [base, mutated]  # the mutation is record 1
        write_records(path, records, compression=None)
        try:
            list(iter_scenes_plain(path))
        except TFRecordError as err:
            if f"{path}: record 1" in str(err):
                outcomes["named error"] += 1
                continue
            outcomes["other"].append((case, f"unnamed: {err}"))
        except Exception as err:  # noqa: BLE001 - what the test looks for
            outcomes["other"].append((case, f"{type(err).__name__}: {err}"))
        else:
            outcomes["other"].append((case, "accepted"))
    assert outcomes["other"] == [] and outcomes["named error"] == 1000, outcomes["other"][:5]


def iter_scenes_plain(path):
    """iter_scenes over an uncompressed file (the gzip layer is not what is fuzzed)."""
    import slotlab.data.multi_object as mo

    original = mo.iter_indexed_records
    mo.iter_indexed_records = lambda *a, **k: original(*a, **{**k, "compression": None})
    try:
        yield from iter_scenes("tetrominoes", path)
    finally:
        mo.iter_indexed_records = original


@pytest.mark.parametrize("payload", [b"", b"\x0a", b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", b"\x0b",
                                     b"\x0a\x03\x0a\x01\xff", b"\x0a\x05\x0a\x03\x0a\x01\xc3"])
def test_records_with_valid_framing_that_are_not_examples_are_named(tmp_path, payload):
    path = tmp_path / "bad.tfrecords"
    write_records(path, [payload])
    with pytest.raises(TFRecordError, match=f"{path}: record 0"):
        list(iter_scenes("tetrominoes", path))
