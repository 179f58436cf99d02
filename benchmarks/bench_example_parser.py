"""The tf.train.Example parser of slotlab.data.tfrecord against protobuf (upb) with the Example schema, built here
at run time (the same messages as tensorflow/core/example/{example,feature}.proto), on synthetic records in the
multi_object_datasets layout (one 1-byte string per pixel). Prints one line per record size.

    PYTHONPATH=src python benchmarks/bench_example_parser.py
"""
import time

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.internal import api_implementation

from slotlab.data.tfrecord import encode_example, parse_example

fd = descriptor_pb2.FileDescriptorProto(name="ex.proto", package="tfx", syntax="proto3")
def msg(name, fields):
    m = fd.message_type.add(name=name)
    for num, (fname, ftype, label, tname) in enumerate(fields, 1):
        f = m.field.add(name=fname, number=num, type=ftype, label=label)
        if tname:
            f.type_name = tname
    return m
T, L = descriptor_pb2.FieldDescriptorProto, descriptor_pb2.FieldDescriptorProto
msg("BytesList", [("value", T.TYPE_BYTES, L.LABEL_REPEATED, None)])
msg("FloatList", [("value", T.TYPE_FLOAT, L.LABEL_REPEATED, None)])
msg("Int64List", [("value", T.TYPE_INT64, L.LABEL_REPEATED, None)])
feat = msg("Feature", [("bytes_list", T.TYPE_MESSAGE, L.LABEL_OPTIONAL, ".tfx.BytesList"),
                       ("float_list", T.TYPE_MESSAGE, L.LABEL_OPTIONAL, ".tfx.FloatList"),
                       ("int64_list", T.TYPE_MESSAGE, L.LABEL_OPTIONAL, ".tfx.Int64List")])
entry = fd.message_type.add(name="FeaturesEntry")
entry.field.add(name="key", number=1, type=T.TYPE_STRING, label=L.LABEL_OPTIONAL)
entry.field.add(name="value", number=2, type=T.TYPE_MESSAGE, label=L.LABEL_OPTIONAL, type_name=".tfx.Feature")
entry.options.map_entry = True
feats = fd.message_type.add(name="Features")
feats.nested_type.add().CopyFrom(entry)
fd.message_type.remove(entry)
feats.field.add(name="feature", number=1, type=T.TYPE_MESSAGE, label=L.LABEL_REPEATED,
                type_name=".tfx.Features.FeaturesEntry")
msg("Example", [("features", T.TYPE_MESSAGE, L.LABEL_OPTIONAL, ".tfx.Features")])
pool = descriptor_pool.DescriptorPool()
pool.Add(fd)
Example = message_factory.GetMessageClass(pool.FindMessageTypeByName("tfx.Example"))
print("protobuf backend:", api_implementation.Type())

rng = np.random.default_rng(0)
for name, (H, W, G) in {"tetrominoes 35x35, G=4": (35, 35, 4), "clevr 240x320, G=11": (240, 320, 11)}.items():
    rec = encode_example({"image": rng.integers(0, 255, (H, W, 3), dtype=np.uint8),
                          "mask": rng.integers(0, 255, (G, H, W, 1), dtype=np.uint8),
                          "x": rng.random(G).astype(np.float32)})
    n = 10 if "clevr" in name else 200
    t = time.perf_counter()
    for _ in range(n):
        ours = parse_example(rec)
    hand = (time.perf_counter() - t) / n * 1000
    t = time.perf_counter()
    for _ in range(n):
        ex = Example()
        ex.ParseFromString(rec)
        f = ex.features.feature
        img = np.frombuffer(b"".join(f["image"].bytes_list.value), np.uint8)
        mask = np.frombuffer(b"".join(f["mask"].bytes_list.value), np.uint8)
        x = np.asarray(f["x"].float_list.value, np.float32)
    pb = (time.perf_counter() - t) / n * 1000
    assert np.array_equal(img, ours["image"]) and np.array_equal(mask, ours["mask"])
    print(f"{name}: {len(rec) / 1e6:.2f} MB  hand parser {hand:.2f} ms  protobuf {pb:.2f} ms  ({pb / hand:.0f}x)")
