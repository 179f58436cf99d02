"""Bad input gets one clear line naming what was wrong and what was expected, never a traceback or a silent run."""

import json

import pytest
import torch

from slotlab.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("bad") / "run"
    assert main(["train", "--experiment", "tiny", "--workdir", str(path), "--no-progress"]) == 0
    return path


@pytest.mark.parametrize("override, message", [
    ("train.log_every=0", "train.log_every must be a positive number, got 0"),
    ("train.checkpoint_every=0", "train.checkpoint_every must be a positive number, got 0"),
    ("train.decay_steps=0", "train.decay_steps must be a positive number, got 0"),
    ("train.steps=-5", "train.steps must be >= 0, got -5"),
    ("train.lr=-0.01", "train.lr must be a positive number, got -0.01"),
    ("train.batch_size=0", "train.batch_size must be a positive number, got 0"),
    ("train.max_minutes=-1", "train.max_minutes must be >= 0"),
])
def test_train_config_is_validated_at_the_boundary(tmp_path, capsys, override, message):
    assert main(["train", "--experiment", "tiny", "--workdir", str(tmp_path / "x"), "--no-progress",
                 "--set", override]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # refused before anything was written


@pytest.mark.parametrize("flag, value", [("--batch-size", "0"), ("--limit", "0"), ("--num-slots", "0"),
                                         ("--num-iters", "0")])
def test_eval_counts_must_be_positive(run, capsys, flag, value):
    assert main(["eval", "--workdir", str(run), flag, value]) == 2
    assert f"{flag} must be >= 1, got 0" in capsys.readouterr().err


def test_eval_json_and_viz_out_may_name_a_folder(run, tmp_path, capsys):
    folder = tmp_path / "out"
    folder.mkdir()
    assert main(["eval", "--workdir", str(run), "--limit", "4", "--json", str(folder)]) == 0
    assert json.loads((folder / "metrics.json").read_text())["num_scenes"] == 4
    assert main(["viz", "--workdir", str(run), "--out", str(folder), "--num-scenes", "2"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {folder / 'metrics.json'}" in out
    assert f"wrote {folder / 'scenes.png'}, {folder / 'scenes_attention.png'}" in out
    assert (folder / "scenes.png").stat().st_size > 1000 and (folder / "scenes_attention.png").is_file()


def test_a_truncated_config_is_named(run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    text = (copy / "config.json").read_text()
    (copy / "config.json").write_text(text[: len(text) // 2])
    assert main(["eval", "--workdir", str(copy)]) == 2
    assert f"config {copy / 'config.json'} is corrupt or truncated" in capsys.readouterr().err


def test_image_range_is_checked_and_other_float_dtypes_are_cast(run):
    from slotlab.runs import load_model

    model, cfg = load_model(run)
    r = cfg.model.resolution
    good = torch.rand(2, 3, r, r) * 2 - 1
    with pytest.raises(ValueError, match=r"image values span \[0, 255\] but the model expects \[-1, 1\]"):
        model(torch.cat([torch.zeros(1, 3, r, r), torch.full((1, 3, r, r), 255.0)]))
    with pytest.raises(TypeError, match="convert uint8"):
        model(torch.zeros(2, 3, r, r, dtype=torch.uint8))
    torch.manual_seed(0)
    reference = model(good)["recon"]
    for dtype in (torch.float64, torch.float16, torch.bfloat16):  # cast to the model's float32
        torch.manual_seed(0)
        out = model(good.to(dtype))["recon"]
        assert out.dtype == torch.float32
        assert torch.allclose(out, reference, atol=0.05 if dtype != torch.float64 else 1e-6), dtype


def test_slot_attention_casts_inputs_and_rejects_empty_or_nan_slots():
    from slotlab.nn.slot_attention import SlotAttention

    sa = SlotAttention(num_slots=3, input_dim=8, slot_dim=8, num_iters=2, mlp_hidden_dim=16)
    x = torch.randn(2, 5, 8)
    torch.manual_seed(0)
    ref = sa(x)["slots"]
    torch.manual_seed(0)
    assert torch.allclose(sa(x.double())["slots"], ref, atol=1e-5)
    with pytest.raises(ValueError, match="K = 0"):
        sa(x, slots=torch.zeros(2, 0, 8))
    with pytest.raises(ValueError, match="NaN or Inf"):
        sa(x, slots=torch.full((2, 3, 8), float("nan")))
