import socket

import pytest
import torch
from safetensors.torch import save_file

from slotlab.nn.backbone import FrozenBackbone
from slotlab.nn.vit import ARCHS, VisionTransformer, get_arch


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_every_arch_has_timms_layout(name):
    """timm's names and shapes at the native size (224; DINOv2 518); ViT-S/16 and ViT-B/16 DINO have timm's
    published sizes (22,050,664 and 86,567,656 parameters with the 1000-class head, which DINO has not)."""
    arch = get_arch(name)
    with torch.device("meta"):
        vit = VisionTransformer(arch, 518 if arch.patch_size == 14 else 224)
    state = vit.state_dict()
    C, grid = arch.embed_dim, (37 if arch.patch_size == 14 else 224 // arch.patch_size)
    assert state["pos_embed"].shape == (1, grid**2 + (0 if arch.reg_tokens else 1), C)
    assert state["patch_embed.proj.weight"].shape == (C, 3, arch.patch_size, arch.patch_size)
    assert state["blocks.11.attn.qkv.weight"].shape == (3 * C, C)
    assert state["blocks.11.mlp.fc1.weight"].shape == (4 * C, C)
    assert ("blocks.0.ls1.gamma" in state) == ("dinov2" in name)
    assert ("reg_token" in state) == ("reg4" in name)
    total = sum(p.numel() for p in vit.parameters())
    head = 1000 * C + 1000
    if name == "vit_small_patch16_dino":
        assert total + head == 22_050_664
    if name == "vit_base_patch16_dino":
        assert total + head == 86_567_656


@pytest.mark.parametrize("name", ["vit_tiny_patch16", "vit_small_patch8_dino", "vit_small_patch14_reg4_dinov2"])
def test_patch_tokens_without_prefix(name):
    arch = get_arch(name)
    res = 2 * arch.patch_size
    b = FrozenBackbone(name, "random", res)
    x = torch.rand(1, 3, res, res) * 2 - 1
    f = b(x)
    assert f.shape == (1, 4, arch.embed_dim) == (1, b.num_patches, b.feature_dim)
    assert torch.isfinite(f).all()
    assert b.vit.num_prefix_tokens == 1 + arch.reg_tokens


def _saved(tmp_path, name, res, fmt):
    torch.manual_seed(1)
    vit = VisionTransformer(get_arch(name), res)
    path = tmp_path / f"w.{fmt}"
    state = {k: v.contiguous() for k, v in vit.state_dict().items()}
    save_file(state, path) if fmt == "safetensors" else torch.save(state, path)
    return vit, path


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_local_weights_load_and_block_selection(tmp_path, fmt):
    vit, path = _saved(tmp_path, "vit_tiny_patch16", 32, fmt)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    norm = ((x + 1) / 2 - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor(
        [0.229, 0.224, 0.225])[:, None, None]
    for block in (0, 5):
        b = FrozenBackbone("vit_tiny_patch16", str(path), 32, block)
        want = vit(norm, block or None)[:, 1:]  # CLS dropped
        torch.testing.assert_close(b(x), want)
    assert b.fingerprint.startswith("sha256-")


def test_frozen_and_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the backbone tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    b = FrozenBackbone("vit_tiny_patch16", "random", 32)
    b.train()
    assert not b.training and not any(p.requires_grad for p in b.parameters())
    assert not b(torch.zeros(1, 3, 32, 32, requires_grad=True)).requires_grad
    a = FrozenBackbone("vit_tiny_patch16", "random", 32)  # "random" is one fixed network
    assert torch.equal(a.vit.pos_embed, b.vit.pos_embed)


def test_weights_must_be_asked_for_and_match(tmp_path):
    with pytest.raises(ValueError, match="backbone_weights is not set"):
        FrozenBackbone("vit_tiny_patch16", "", 32)
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        FrozenBackbone("vit_tiny_patch16", str(tmp_path / "missing.pth"), 32)
    _, path = _saved(tmp_path, "vit_small_patch16_dino", 32, "safetensors")
    with pytest.raises(ValueError, match=r"does not match model.backbone='vit_tiny_patch16'.*wrong shapes"):
        FrozenBackbone("vit_tiny_patch16", str(path), 32)
    with pytest.raises(ValueError, match="unknown model.backbone"):
        FrozenBackbone("vit_huge_patch99", "random", 32)
    with pytest.raises(ValueError, match="multiple of the backbone's patch size"):
        FrozenBackbone("vit_tiny_patch16", "random", 40)


class Payload:  # a pickle that would run code on load
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickles_with_code_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"x": Payload()}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        FrozenBackbone("vit_tiny_patch16", str(path), 32)


def test_official_dinov2_layout_with_registers_and_other_grid(tmp_path):
    """The official DINOv2 file: register_tokens, mask_token, a position embedding with the class entry, made for
    another grid; it loads into the timm layout with the grid resampled, and on the same grid it is exact."""
    torch.manual_seed(0)
    ref = VisionTransformer(get_arch("vit_small_patch14_reg4_dinov2"), 28)
    s = {k: v.clone() for k, v in ref.state_dict().items()}
    cls_pos = torch.randn(1, 1, 384) * 0.02
    official = {k: v for k, v in s.items() if k not in ("reg_token", "cls_token", "pos_embed")}
    official.update(register_tokens=s["reg_token"], cls_token=s["cls_token"] - cls_pos, mask_token=torch.zeros(1, 384),
                    pos_embed=torch.cat([cls_pos, s["pos_embed"]], dim=1))
    official = {"teacher": {f"backbone.{k}": v for k, v in official.items()}}  # a DINO-style training checkpoint
    torch.save(official, tmp_path / "dinov2.pth")
    b = FrozenBackbone("vit_small_patch14_reg4_dinov2", str(tmp_path / "dinov2.pth"), 28)
    x = torch.rand(1, 3, 28, 28) * 2 - 1
    norm = ((x + 1) / 2 - b.mean) / b.std
    torch.testing.assert_close(b(x), ref(norm)[:, 5:])
    big = FrozenBackbone("vit_small_patch14_reg4_dinov2", str(tmp_path / "dinov2.pth"), 56)  # 2x2 -> 4x4 grid
    assert big(torch.zeros(1, 3, 56, 56)).shape == (1, 16, 384)
