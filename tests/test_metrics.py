import math

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from slotlab import metrics


def one_hot(labels, n):  # (B, H, W) -> (B, n, H, W)
    return torch.nn.functional.one_hot(labels, n).permute(0, 3, 1, 2).float()


def test_ari_matches_scikit_learn_on_random_segmentations():
    g = torch.Generator().manual_seed(0)
    true = torch.randint(0, 4, (16, 12, 12), generator=g)
    pred = torch.randint(0, 5, (16, 12, 12), generator=g)
    pred[:4] = true[:4]  # some perfect, some random, some partial
    pred[4:8, :6] = true[4:8, :6]
    ours = metrics.ari(one_hot(true, 4), one_hot(pred, 5))
    assert ours.dtype == torch.float64 and ours.shape == (16,)
    for b in range(16):
        ref = adjusted_rand_score(true[b].flatten().numpy(), pred[b].flatten().numpy())
        assert abs(ours[b].item() - ref) < 1e-10


def test_fg_ari_matches_scikit_learn_on_foreground_pixels():
    g = torch.Generator().manual_seed(1)
    true = torch.randint(0, 4, (8, 10, 10), generator=g)
    soft = torch.rand(8, 6, 10, 10, generator=g)  # soft predictions: argmax decides
    ours = metrics.fg_ari(one_hot(true, 4), soft)
    hard = soft.argmax(1)
    for b in range(8):
        fg = true[b] > 0
        ref = adjusted_rand_score(true[b][fg].numpy(), hard[b][fg].numpy())
        assert abs(ours[b].item() - ref) < 1e-10


def test_fg_ari_ignores_background_and_is_fooled_by_blobs_while_ari_and_mbo_are_not():
    true = torch.zeros(1, 12, 12, dtype=torch.long)
    true[0, 1:4, 1:4], true[0, 8:11, 8:11] = 1, 2
    blobs = torch.zeros(1, 12, 12, dtype=torch.long)
    blobs[0, :, 6:] = 1  # two halves: each contains one object and lots of background
    assert metrics.fg_ari(one_hot(true, 3), one_hot(blobs, 2)).item() == pytest.approx(1.0)
    assert metrics.ari(one_hot(true, 3), one_hot(blobs, 2)).item() < 0.2
    assert metrics.mbo(one_hot(true, 3), one_hot(blobs, 2)).item() < 0.2
    assert metrics.mbo(one_hot(true, 3), one_hot(true, 3)).item() == 1.0


def test_mbo_hand_worked():
    true = torch.zeros(1, 4, 4, dtype=torch.long)
    true[0, 0, :2] = 1  # object 1: 2 pixels
    true[0, 3, :] = 2  # object 2: 4 pixels
    pred = torch.zeros(1, 4, 4, dtype=torch.long)
    pred[0, 0, :] = 1  # covers object 1 plus 2 bg pixels: IoU 2/4
    pred[0, 3, :2] = 2  # half of object 2: IoU 2/4; the rest of object 2 is in slot 0 with bg: IoU 2/12
    assert metrics.mbo(one_hot(true, 3), one_hot(pred, 3)).item() == pytest.approx(0.5)


def test_degenerate_cases_are_nan_safe():
    # single object, prediction in one slot: partitions agree -> 1 (as scikit-learn), not NaN
    true = torch.zeros(1, 6, 6, dtype=torch.long)
    true[0, :3] = 1
    same = torch.zeros(1, 6, 6, dtype=torch.long)
    assert metrics.fg_ari(one_hot(true, 2), one_hot(same, 3)).item() == 1.0
    # no foreground at all: undefined -> NaN, documented; never an exception
    empty = torch.zeros(1, 6, 6, dtype=torch.long)
    assert np.isnan(metrics.fg_ari(one_hot(empty, 2), one_hot(same, 3)).item())
    assert np.isnan(metrics.mbo(one_hot(empty, 2), one_hot(same, 3)).item())


def test_ties_go_to_the_lowest_slot_like_tf_argmax():
    true = one_hot(torch.zeros(1, 3, 3, dtype=torch.long), 2)
    uniform = torch.full((1, 3, 3, 3), 1 / 3)
    assert metrics.ari(true, uniform).item() == 1.0


@pytest.mark.parametrize(
    "true, pred, match",
    [
        (torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 5, 4), "disagree"),
        (torch.zeros(2, 4, 4), torch.zeros(2, 3, 4, 4), "must be"),
        (torch.full((1, 2, 4, 4), 255.0), torch.zeros(1, 3, 4, 4), "divide raw"),
        (torch.ones(1, 2, 4, 4), torch.zeros(1, 3, 4, 4), "more than one group"),
        (torch.zeros(1, 2, 4, 4), torch.full((1, 3, 4, 4), float("nan")), "NaN"),
    ],
)
def test_bad_masks_are_named(true, pred, match):
    with pytest.raises(ValueError, match=match):
        metrics.fg_ari(true, pred)


def test_mean_and_sem_leaves_out_nan_items():
    values = {"a": [torch.tensor([1.0, float("nan"), 3.0]), torch.tensor([5.0], dtype=torch.float64)],
              "b": [torch.tensor([float("nan")])], "c": [torch.tensor([2.0])], "d": []}
    out = metrics.mean_and_sem(values)
    kept = np.array([1.0, 3.0, 5.0])
    assert out["a"] == pytest.approx(kept.mean())
    assert out["a_sem"] == pytest.approx(kept.std(ddof=1) / np.sqrt(3))
    assert math.isnan(out["b"]) and math.isnan(out["b_sem"])
    assert out["c"] == 2.0 and math.isnan(out["c_sem"])
    assert math.isnan(out["d"]) and math.isnan(out["d_sem"])
