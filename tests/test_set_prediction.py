"""Set prediction: the AP metric on hand-worked cases, the Hungarian loss, the model, the built-in data, the CLI."""

import itertools
import json

import numpy as np
import pytest
import torch

from slotlab import metrics
from slotlab.cli import main
from slotlab.data.sprites_set import generate_sprites_set, set_targets
from slotlab.experiments import EXPERIMENTS, get_experiment
from slotlab.losses import hungarian_huber_loss, pairwise_huber
from slotlab.nn.models import SetPredictor
from slotlab.set_layout import CLEVR_LAYOUT, SPRITES_LAYOUT

SET_PRESETS = [n for n, f in EXPERIMENTS.items() if f().model.task == "set_prediction"]


def clevr_row(coords, size=0, material=0, shape=0, color=0, conf=1.0):
    row = np.zeros(19)
    row[0:3] = coords
    row[3 + size] = row[5 + material] = row[7 + shape] = row[10 + color] = 1.0
    row[18] = conf
    return row


def scene(*rows, pad_to=None):
    rows = list(rows) + [np.zeros(19)] * ((pad_to or len(rows)) - len(rows))
    return np.stack(rows)[None]  # (1, M, 19)


# ---- AP --------------------------------------------------------------------------------------------------------

def test_perfect_predictions_give_ap_one_and_slot_order_does_not_matter():
    target = np.concatenate([scene(clevr_row([0.1, 0.2, 0.3], 1, 0, 2, 5), clevr_row([0.7, 0.4, 0.5], 0, 1, 0, 3),
                                   pad_to=4),
                             scene(clevr_row([0.5, 0.5, 0.5], 1, 1, 1, 7), pad_to=4)])
    for t in metrics.AP_THRESHOLDS:
        assert metrics.average_precision(target, target, t) == 1.0
    permuted = target[:, [3, 1, 0, 2]]
    assert metrics.average_precision(permuted, target, 0.125) == 1.0
    assert metrics.average_precision(torch.tensor(permuted), torch.tensor(target), -1) == 1.0  # torch input too


def test_a_wrong_attribute_is_a_false_positive():
    target = scene(clevr_row([0.1, 0.1, 0.1], color=1), clevr_row([0.9, 0.9, 0.9], color=2))
    pred = scene(clevr_row([0.1, 0.1, 0.1], color=1, conf=0.9), clevr_row([0.9, 0.9, 0.9], color=3, conf=0.8))
    # TP then FP: recall reaches only 0.5, at precision 1
    assert metrics.average_precision(pred, target) == pytest.approx(0.5)


def test_confidence_ordering_matters():
    target = scene(clevr_row([0.1, 0.1, 0.1], color=1), clevr_row([0.9, 0.9, 0.9], color=2), np.zeros(19))
    right_a, wrong, right_c = (clevr_row([0.1, 0.1, 0.1], color=1), clevr_row([0.5, 0.5, 0.5], color=4),
                               clevr_row([0.9, 0.9, 0.9], color=2))
    def with_conf(rows, confs):
        out = [r.copy() for r in rows]
        for r, c in zip(out, confs, strict=True):
            r[18] = c
        return scene(*out)
    # ranks TP, FP, TP: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> 0.5 * 1 + 0.5 * 2/3
    good = with_conf([right_a, wrong, right_c], [0.9, 0.8, 0.7])
    assert metrics.average_precision(good, target) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # the false positive ranked first: FP, TP, TP -> precision 0, 1/2, 2/3 -> interpolated 2/3 everywhere
    bad = with_conf([right_a, wrong, right_c], [0.8, 0.9, 0.7])
    assert metrics.average_precision(bad, target) == pytest.approx(2 / 3)


def test_the_threshold_is_strict_and_in_original_units():
    target = scene(clevr_row([0.5, 0.5, 0.5]))
    pred = scene(clevr_row([0.75, 0.5, 0.5]))  # 0.25 in [0, 1] units = 1.5 in CLEVR's [-3, 3] units
    assert metrics.average_precision(pred, target, 1.5) == 0.0
    assert metrics.average_precision(pred, target, 1.5000001) == 1.0
    assert metrics.average_precision(pred, target, None) == 1.0


def test_a_target_is_claimed_once_and_there_is_no_fallback():
    target = scene(clevr_row([0.1, 0.1, 0.1]), clevr_row([0.9, 0.9, 0.9]))  # same classes, far apart
    pred = scene(clevr_row([0.1, 0.1, 0.1], conf=0.9), clevr_row([0.12, 0.1, 0.1], conf=0.8))
    # both predictions are nearest to target 0: the second is a false positive even though target 1 is free
    assert metrics.average_precision(pred, target, None) == pytest.approx(0.5)


def test_ap_rejects_bad_input():
    target = scene(clevr_row([0.1, 0.1, 0.1]))
    with pytest.raises(ValueError, match=r"\(B, K, 19\)"):
        metrics.average_precision(np.zeros((1, 2, 18)), target)
    with pytest.raises(ValueError, match="NaN"):
        metrics.average_precision(np.full((1, 2, 19), np.nan), target)
    with pytest.raises(ValueError, match="no real object"):
        metrics.average_precision(target, np.zeros((1, 1, 19)))
    with pytest.raises(ValueError, match="threshold"):
        metrics.average_precision(target, target, 0)


# ---- loss ------------------------------------------------------------------------------------------------------

def test_hungarian_loss_is_the_minimum_over_permutations_and_slot_order_invariant():
    torch.manual_seed(0)
    B, K, M, P = 3, 4, 3, 7
    pred, target = torch.rand(B, K, P), torch.rand(B, M, P)
    loss = hungarian_huber_loss(pred, target)
    padded = torch.cat([target, torch.zeros(B, K - M, P)], 1)
    cost = pairwise_huber(pred, padded)  # (B, K targets, K slots)
    brute = torch.stack([min(sum(cost[b, i, perm[i]] for i in range(K)) for perm in itertools.permutations(range(K)))
                         for b in range(B)]).mean()
    assert loss.item() == pytest.approx(brute.item(), rel=1e-6)
    assert hungarian_huber_loss(pred[:, torch.randperm(K)], target).item() == pytest.approx(loss.item(), rel=1e-6)
    # |error| <= 1 in [0, 1], so the Huber cost is half the mean squared error
    assert cost[0, 0, 0].item() == pytest.approx(0.5 * ((pred[0, 0] - padded[0, 0]) ** 2).mean().item(), rel=1e-6)


def test_hungarian_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="only 2 slots"):
        hungarian_huber_loss(torch.rand(1, 2, 5), torch.rand(1, 3, 5))
    with pytest.raises(ValueError, match="P=5"):
        hungarian_huber_loss(torch.rand(1, 2, 5), torch.rand(1, 2, 4))
    with pytest.raises(ValueError, match="NaN"):
        hungarian_huber_loss(torch.full((1, 2, 5), float("nan")), torch.rand(1, 2, 5))


# ---- data ------------------------------------------------------------------------------------------------------

def test_sprites_set_targets_match_the_pictures():
    arrays = generate_sprites_set(20, seed=3)
    again = generate_sprites_set(5, seed=3, start=15)
    assert np.array_equal(arrays["image"][15:], again["image"])  # scene i depends only on (seed, i)
    target = set_targets(arrays)  # (20, 5, 14)
    assert target.shape == (20, 5, SPRITES_LAYOUT.width)
    for i in range(20):
        real = target[i, :, SPRITES_LAYOUT.flag] == 1
        assert 2 <= real.sum() <= 5 and not target[i, ~real].any()
        for k in np.flatnonzero(real):
            ys, xs = np.nonzero(arrays["labels"][i] == k + 1)
            assert len(xs) > 0  # every object is visible (sprites do not overlap)
            # the target centre is the sprite centre: within a pixel of its pixels' mean for symmetric shapes
            if arrays["shape"][i, k + 1] != 3:  # the heart's bounding-box centre is not its centroid
                assert abs((xs.mean() + 0.5) / 64 - target[i, k, 0]) < 1.5 / 64
                assert abs((ys.mean() + 0.5) / 64 - target[i, k, 1]) < 1.5 / 64
            for _, s, e, _ in SPRITES_LAYOUT.blocks:
                assert target[i, k, s:e].sum() == 1


# ---- model and training -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", SET_PRESETS)
def test_every_set_preset_trains_two_steps(name):
    cfg = get_experiment(name)
    torch.manual_seed(0)
    model = SetPredictor(cfg.model)
    res, K, P = cfg.model.resolution, cfg.model.num_slots, model.layout.width
    image = torch.rand(2, 3, res, res) * 2 - 1
    target = torch.zeros(2, 3, P)
    target[:, :, :P - 1] = torch.rand(2, 3, P - 1)
    target[:, :2, P - 1] = 1.0
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=cfg.train.adam_eps)
    losses = []
    for _ in range(2):
        out = model(image)
        assert out["pred"].shape == (2, K, P) and out["attn"].shape[:2] == (2, K)
        loss = hungarian_huber_loss(out["pred"], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    unused = set()  # learned init: mu and sigma are not used
    if cfg.model.slot_init == "learned":
        unused = {"slot_attention.slots_mu", "slot_attention.slots_log_sigma"}
    for pname, p in model.named_parameters():
        assert (p.grad is not None) != (pname in unused), pname


def test_train_eval_viz_on_the_cli(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--experiment", "tiny_set", "--workdir", str(run), "--no-progress"]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "val" and "ap_inf" in r for r in rows)
    capsys.readouterr()
    assert main(["eval", "--workdir", str(run), "--json", str(tmp_path / "m.json")]) == 0
    printed = capsys.readouterr().out
    for label in ("APinf", "AP1", "AP0.5", "AP0.25", "AP0.125"):
        assert label in printed
    assert set(json.loads((tmp_path / "m.json").read_text())) >= {"ap_inf", "ap_0.125", "loss"}
    assert main(["viz", "--workdir", str(run), "--out", str(tmp_path / "v.png")]) == 0
    assert (tmp_path / "v.png").stat().st_size > 1000


def test_clevr_layout_is_the_official_order():
    assert CLEVR_LAYOUT.width == 19 and CLEVR_LAYOUT.flag == 18
    assert [b[0] for b in CLEVR_LAYOUT.blocks] == ["size", "material", "shape", "color"]
    assert CLEVR_LAYOUT.blocks[3][3] == ("gray", "blue", "brown", "yellow", "red", "green", "purple", "cyan")
