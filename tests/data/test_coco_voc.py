import sys

import numpy as np
import pytest
import torch
from real_layouts import write_coco, write_voc

from slotlab.data.coco import CocoSource
from slotlab.data.real_images import resize_crop_labels
from slotlab.data.voc import VocSource


def test_coco_label_maps_polygon_rle_overlap_and_crowd(tmp_path):
    write_coco(tmp_path, "val", 3)
    src = CocoSource(tmp_path, "val", resolution=32, mask_size=48)
    assert len(src) == 3
    assert src.image_file(0).name == "000000000998.jpg"  # ordered by image id (the file lists 1000, 999, 998)
    inst, cls = src.label_maps(0)
    assert inst.shape == cls.shape == (64, 80)
    assert inst[15, 15] == 1 and cls[15, 15] == 3  # polygon instance, category 3
    assert inst[35, 40] == 2 and cls[35, 40] == 7  # RLE instance, category 7
    assert inst[26, 28] == -1 and cls[26, 28] == 7  # overlap: ignored as an instance; the larger category id
    assert inst[55, 65] == 0 and cls[55, 65] == 0  # crowd annotation dropped
    assert inst[2, 2] == 0
    t = src.targets(torch.tensor([2, 0]))
    assert t["instances"].shape == t["classes"].shape == (2, 48, 48) and t["instances"].dtype == torch.int16
    images = src.images(slice(0, 2))
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.uint8
    assert images[1, 0, 10, 8] > 200  # the red polygon rectangle after resize 64x80 -> 32x40 and the centre crop


def test_coco_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="instances_train2017.json"):
        CocoSource(tmp_path, "train", 32)


def test_coco_without_pycocotools_is_a_clear_error(tmp_path, monkeypatch):
    write_coco(tmp_path, "val", 1)
    monkeypatch.setitem(sys.modules, "pycocotools.coco", None)
    with pytest.raises(RuntimeError, match=r"pip install 'slotlab\[real\]'"):
        CocoSource(tmp_path, "val", 32)


def test_voc_palette_pngs_with_void_border(tmp_path):
    write_voc(tmp_path, train=2, val=3)
    src = VocSource(tmp_path, "val", resolution=32, mask_size=64)
    assert len(src) == 3 and src.name == "voc2012/val"
    inst, cls = src.label_maps(1)  # image 3: second object of class 12
    assert inst[10, 10] == 1 and cls[10, 10] == 15
    assert inst[40, 50] == 2 and cls[40, 50] == 12
    assert inst[5, 10] == -1 and cls[5, 10] == -1  # 255 void border -> ignored
    assert inst[60, 2] == 0
    assert VocSource(tmp_path, "train", 32).name == "voc2012/train"  # no trainaug.txt: train.txt
    (tmp_path / "ImageSets" / "Segmentation" / "trainaug.txt").write_text("2007_000000\n")
    assert len(VocSource(tmp_path, "train", 32)) == 1


def test_voc_rejects_rgb_masks(tmp_path):
    write_voc(tmp_path, train=1, val=1)
    png = tmp_path / "SegmentationObject" / "2007_000001.png"
    from PIL import Image

    Image.open(png).convert("RGB").save(png)
    with pytest.raises(ValueError, match="palette"):
        VocSource(tmp_path, "val", 32).targets(slice(0, 1))


def test_resize_crop_labels_nearest_exact_and_centre():
    labels = np.arange(6 * 4).reshape(6, 4)  # H=6, W=4: short side 4 -> 2 halves it
    out = resize_crop_labels(labels, 2)  # (3, 2) after resize, centre row crop starts at round(0.5)=0
    assert out.tolist() == [[labels[1, 1], labels[1, 3]], [labels[3, 1], labels[3, 3]]]
