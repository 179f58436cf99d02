import pytest
import torch

from slotlab.config import ModelConfig
from slotlab.evaluate_features import scene_metrics
from slotlab.experiments import get_experiment
from slotlab.nn.dinosaur import Dinosaur, feature_loss, masks_to_image
from slotlab.tasks import build_model


def small(**kw):
    cfg = ModelConfig(task="features", num_slots=3, slot_dim=16, mlp_hidden_dim=16, decoder_channels=24,
                      decoder_layers=2)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return Dinosaur(cfg, feature_dim=12, num_patches=16)


def test_forward_shapes_alpha_and_recomposition():
    model = small()
    feats = torch.randn(2, 16, 12)
    out = model(feats)
    assert out["recon"].shape == (2, 16, 12) and out["recons"].shape == (2, 3, 16, 12)
    assert out["masks"].shape == (2, 3, 16) and out["slots"].shape == (2, 3, 16)
    torch.testing.assert_close(out["masks"].sum(1), torch.ones(2, 16))
    torch.testing.assert_close(out["recon"], (out["recons"] * out["masks"][..., None]).sum(1))
    assert out["attns"].shape == (2, 3, 3, 16)


def test_gradients_reach_every_parameter():
    model = small()
    feature_loss(model(torch.randn(2, 16, 12)), torch.randn(2, 16, 12)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_wrong_features_are_a_clear_error():
    with pytest.raises(ValueError, match=r"features must be \(B, N=16, C=12\)"):
        small()(torch.randn(2, 9, 12))


@pytest.mark.parametrize("name,K", [("dinosaur_coco", 7), ("dinosaur_voc", 6)])
def test_presets_build_the_papers_model(name, K):
    cfg = get_experiment(name)
    model = build_model(cfg.model)
    assert isinstance(model, Dinosaur) and model.num_patches == 196 and model.feature_dim == 768
    assert model.slot_attention.num_slots == K and model.slot_attention.slot_dim == 256
    widths = [m.out_features for m in model.decoder.mlp if isinstance(m, torch.nn.Linear)]
    assert widths == [2048, 2048, 2048, 769]
    assert cfg.train.batch_size == 64 and cfg.train.grad_clip == 1.0


def test_masks_to_image_and_metrics_at_image_resolution():
    masks = torch.zeros(1, 2, 4)  # 2x2 patch grid: slot 0 the left column, slot 1 the right
    masks[0, 0, [0, 2]] = 1
    masks[0, 1, [1, 3]] = 1
    up = masks_to_image(masks, 8)
    assert up.shape == (1, 2, 8, 8)
    labels = torch.zeros(1, 8, 8, dtype=torch.int16)
    labels[0, :, :4] = 1
    labels[0, :, 4:] = 2
    classes = torch.where(labels > 0, 9, 0).to(torch.int16)
    m = scene_metrics(up, labels, classes)
    assert m["fg_ari"].item() == pytest.approx(1.0) and m["mbo"].item() == pytest.approx(1.0)
    assert m["mbo_c"].item() == pytest.approx(0.5)  # one class over both halves: best IoU 1/2
    labels[0, 0, :] = -1  # ignored pixels change nothing here
    labels[0, 0, 5] = 1  # ... but a wrong label counts against unless ignored
    worse = scene_metrics(up, labels, classes)["mbo"].item()
    labels[0, 0, 5] = -1
    assert worse < scene_metrics(up, labels, classes)["mbo"].item() == pytest.approx(1.0)
