"""Video metrics: float64 parity with scikit-learn over all pixels of all frames, and the slot-swap case."""

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from slotlab import metrics


def _onehot(labels: torch.Tensor, n: int) -> torch.Tensor:
    """(B, F, H, W) ids -> (B, F, n, H, W) one-hot."""
    return torch.nn.functional.one_hot(labels, n).permute(0, 1, 4, 2, 3).float()


def test_video_metrics_match_sklearn_on_random_videos():
    g = torch.Generator().manual_seed(0)
    true = torch.randint(0, 4, (3, 5, 6, 7), generator=g)
    pred = torch.randint(0, 5, (3, 5, 6, 7), generator=g)
    fg = metrics.video_fg_ari(_onehot(true, 4), _onehot(pred, 5))
    ari = metrics.video_ari(_onehot(true, 4), _onehot(pred, 5))
    frame = metrics.per_frame_fg_ari(_onehot(true, 4), _onehot(pred, 5))
    assert fg.dtype == torch.float64
    for b in range(3):
        t, p = true[b].flatten().numpy(), pred[b].flatten().numpy()
        assert fg[b].item() == pytest.approx(adjusted_rand_score(t[t > 0], p[t > 0]), abs=1e-12)
        assert ari[b].item() == pytest.approx(adjusted_rand_score(t, p), abs=1e-12)
        per = [adjusted_rand_score(true[b, f].flatten()[true[b, f].flatten() > 0], pred[b, f].flatten()[
            true[b, f].flatten() > 0]) for f in range(5)]
        assert frame[b].item() == pytest.approx(np.mean(per), abs=1e-12)


def test_slot_swap_is_penalised_by_video_fg_ari_only():
    # two objects, two frames; the prediction is perfect in each frame, but slots 1 and 2 swap objects in frame 2
    true = torch.zeros(1, 2, 4, 4, dtype=torch.long)
    true[:, :, :2, :2], true[:, :, 2:, 2:] = 1, 2
    pred = true.clone()
    pred[0, 1][true[0, 1] == 1], pred[0, 1][true[0, 1] == 2] = 2, 1
    t, p = _onehot(true, 3), _onehot(pred, 3)
    assert metrics.per_frame_fg_ari(t, p).item() == pytest.approx(1.0)
    swapped = metrics.video_fg_ari(t, p).item()
    flat_t, flat_p = true.flatten().numpy(), pred.flatten().numpy()
    assert swapped == pytest.approx(adjusted_rand_score(flat_t[flat_t > 0], flat_p[flat_t > 0]), abs=1e-12)
    assert swapped < 0.5
    assert metrics.video_fg_ari(t, t).item() == pytest.approx(1.0)
    # mBO of spatio-temporal masks: each object's best slot covers half of its tube
    assert metrics.video_mbo(t, p).item() == pytest.approx(1 / 3)
    assert metrics.video_mbo(t, t).item() == pytest.approx(1.0)


def test_video_metrics_reject_images():
    with pytest.raises(ValueError, match=r"\(B, F, G, H, W\)"):
        metrics.video_fg_ari(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4))
