"""Training aids (slotlab.curricula) and the model options measured beside them: each changes what it says, only
while it says, and bad combinations are named."""

import pytest
import torch

from slotlab.config import apply_overrides
from slotlab.curricula import low_resolution_twin, paint_out_objects, param_groups
from slotlab.data.tetrominoes import generate_tetrominoes
from slotlab.experiments import get_experiment
from slotlab.nn.models import SlotAttentionAutoEncoder, set_step
from slotlab.nn.slot_attention import SlotAttention
from slotlab.train import train


def tiny(*overrides):
    return apply_overrides(get_experiment("tiny"), list(overrides))


def scenes(n=8):
    data = generate_tetrominoes(n, seed=3)
    images = torch.from_numpy(data["image"]).permute(0, 3, 1, 2).float() / 127.5 - 1
    return images, torch.from_numpy(data["labels"])


def test_mixed_curriculum_keeps_one_object_first_then_a_mix_then_all():
    images, labels = scenes(16)
    first = paint_out_objects(images, labels, step=0, total_steps=300, seed=0)
    for b in range(16):
        kept = [k for k in (1, 2, 3) if torch.equal(first[b][:, labels[b] == k], images[b][:, labels[b] == k])]
        assert len(kept) == 1  # stage 1: one object per scene, the others black like the background
        dropped = (labels[b] > 0) & (labels[b] != kept[0])
        assert (first[b][:, dropped] == -1).all()
    late = paint_out_objects(images, labels, step=250, total_steps=300, seed=0)  # n uniform in {1, 2, 3}
    counts = {sum(torch.equal(late[b][:, labels[b] == k], images[b][:, labels[b] == k]) for k in (1, 2, 3))
              for b in range(16)}
    assert counts <= {1, 2, 3} and len(counts) > 1
    assert torch.equal(paint_out_objects(images, labels, 250, 300, 0), late)  # a function of the step: resumable
    assert paint_out_objects(images, labels, step=300, total_steps=300, seed=0) is images


def test_curriculum_is_refused_where_objects_overlap():
    cfg = tiny("train.object_curriculum_steps=10", "data.name=multi_dsprites", "model.resolution=64")
    from slotlab.curricula import check_curricula

    with pytest.raises(ValueError, match="never overlap"):
        check_curricula(cfg)


def test_low_resolution_twin_shares_the_models_parameters():
    cfg = tiny()
    model = SlotAttentionAutoEncoder(cfg.model)
    twin = low_resolution_twin(model, cfg, 18)
    out = twin(torch.rand(2, 3, 18, 18) * 2 - 1)
    assert out["recon"].shape == (2, 3, 18, 18)
    out["recon"].sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert sum(g.abs().sum() for g in grads if g is not None) > 0  # the twin's gradient lands on the model
    with torch.no_grad():
        model.decoder.slot_proj.bias.add_(1.0)
    assert torch.equal(twin.decoder.slot_proj.bias, model.decoder.slot_proj.bias)
    cfg.model.decoder_table = True  # a table of 2H-1 offsets depends on the resolution
    with pytest.raises(ValueError, match="decoder.table"):
        low_resolution_twin(SlotAttentionAutoEncoder(cfg.model), cfg, 18)


def test_progressive_resolution_trains_then_resumes_at_full_size(tmp_path):
    result = train(tiny("train.low_res=18", "train.low_res_steps=2", "train.steps=4"), tmp_path / "run",
                   progress=False)
    assert result["step"] == 4 and result["fg_ari"] == result["fg_ari"]  # evaluated at full resolution


def test_param_groups_scale_the_learning_rates():
    cfg = tiny("train.decoder_lr_scale=0.5", "train.slot_attention_lr_scale=2")
    model = SlotAttentionAutoEncoder(cfg.model)
    groups = param_groups(model, cfg.train)
    scales = {g["lr_scale"]: len(g["params"]) for g in groups}
    assert scales[0.5] == len(list(model.decoder.parameters()))
    assert scales[2.0] == len(list(model.slot_attention.parameters()))
    assert sum(scales.values()) == len(list(model.parameters()))
    assert param_groups(model, tiny().train) == list(model.parameters())  # default: one group, as before


def test_farthest_point_initial_slots_are_distinct_inputs_values():
    torch.manual_seed(0)
    sa = SlotAttention(num_slots=3, input_dim=8, slot_dim=8, slot_init="farthest")
    x = sa.norm_inputs(torch.randn(2, 50, 8))
    slots = sa.farthest_slots(x, 3)
    v = sa.to_v(x)
    for b in range(2):
        picked = [int((v[b] - s).abs().sum(-1).argmin()) for s in slots[b]]
        assert len(set(picked)) == 3
        d = (v[b] - v[b].mean(0)).square().sum(-1)
        assert picked[0] == int(d.argmax())  # the first seed: the value farthest from the mean
    inputs = torch.randn(2, 50, 8)
    assert torch.equal(sa(inputs)["slots"], sa(inputs)["slots"])  # no noise: deterministic
    with pytest.raises(ValueError, match="farthest"):
        sa.init_slots(2, 3)


def test_temperature_schedule_and_decoder_norm():
    cfg = tiny("model.attn_temperature=4", "model.attn_temperature_steps=100", "model.decoder_norm=layer")
    model = SlotAttentionAutoEncoder(cfg.model)
    assert any(isinstance(m, torch.nn.LayerNorm) for m in model.decoder.body)
    set_step(model, 0)
    assert model.slot_attention.scale == pytest.approx(cfg.model.slot_dim**-0.5 / 4)
    set_step(model, 50)
    assert model.slot_attention.temperature == pytest.approx(2.5)
    set_step(model, 1000)
    assert model.slot_attention.scale == pytest.approx(cfg.model.slot_dim**-0.5)
    with pytest.raises(ValueError, match="decoder_norm"):
        SlotAttentionAutoEncoder(tiny("model.decoder_norm=layer", "model.decoder=broadcast").model)


@pytest.mark.parametrize("option", [["train.object_curriculum_steps=3"], ["model.slot_init=farthest"],
                                    ["train.decoder_lr_scale=0.5"], ["model.decoder_norm=layer"],
                                    ["model.attn_temperature=2", "model.attn_temperature_steps=3"]])
def test_each_option_trains(tmp_path, option):
    assert train(tiny(*option, "train.steps=3"), tmp_path / "run", progress=False)["step"] == 3


def test_progressive_resolution_resumes_exactly(tmp_path):
    aids = ["train.low_res=18", "train.low_res_steps=3", "train.decoder_lr_scale=0.5"]
    straight = train(tiny(*aids, "train.steps=6"), tmp_path / "a", progress=False)
    train(tiny(*aids, "train.steps=2", "train.checkpoint_every=2"), tmp_path / "b", progress=False)
    resumed = train(tiny(*aids, "train.steps=6"), tmp_path / "b", resume=True, progress=False)
    assert resumed["fg_ari"] == straight["fg_ari"] and resumed["mse"] == straight["mse"]


def test_aids_refuse_what_they_cannot_do(tmp_path):
    from slotlab.curricula import check_curricula, check_curriculum_data

    with pytest.raises(ValueError, match="torchrun nor train.compile"):
        check_curricula(tiny("train.low_res=18", "train.low_res_steps=3", "train.compile=true"))
    with pytest.raises(ValueError, match="torchrun"):
        check_curricula(tiny("train.low_res=18", "train.low_res_steps=3"), distributed=True)

    class Folder:  # a split without label maps (an image folder)
        name = "folder:/x"

    with pytest.raises(ValueError, match="label maps"):
        check_curriculum_data(Folder())
    from slotlab.nn.savi import SAVi

    with pytest.raises(ValueError, match="model.test_iters=5"):
        cfg = get_experiment("tiny_video").model
        cfg.test_iters = 5
        SAVi(cfg)
    sa = SlotAttention(num_slots=5, input_dim=8, slot_dim=8, slot_init="farthest")
    with pytest.raises(ValueError, match="only 3"):
        sa(torch.randn(1, 3, 8))
    model = SlotAttentionAutoEncoder(tiny().model)
    from slotlab.nn.models import SetPredictor

    with pytest.raises(ValueError, match="no decoder module"):
        param_groups(SetPredictor(get_experiment("tiny_set").model), tiny("train.decoder_lr_scale=2").train)
    assert len(param_groups(model, tiny("train.decoder_lr_scale=2").train)) == 3


def test_a_checkpoint_mid_schedule_loads_at_its_temperature(tmp_path):
    import slotlab

    cfg = tiny("model.attn_temperature=5", "model.attn_temperature_steps=8", "train.steps=4")
    train(cfg, tmp_path / "run", progress=False)
    loaded = slotlab.load(tmp_path / "run", checkpoint="last")
    assert loaded.model.slot_attention.temperature == pytest.approx(5 + (1 - 5) * 4 / 8)
