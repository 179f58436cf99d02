import math

import pytest
import torch

from slotlab import SlotAttention
from slotlab.nn.slot_attention import slot_attention_reference


def make(**kw):
    torch.manual_seed(0)
    defaults = dict(num_slots=4, input_dim=12, slot_dim=16, num_iters=3, mlp_hidden_dim=32)
    defaults.update(kw)
    return SlotAttention(**defaults)


def test_shapes_and_attention_is_softmax_over_slots():
    sa = make()
    out = sa(torch.randn(2, 10, 12))
    assert out["slots"].shape == (2, 4, 16)
    assert out["attn"].shape == (2, 4, 10)
    assert out["attns"].shape == (2, 3, 4, 10)
    assert torch.allclose(out["attn"].sum(1), torch.ones(2, 10), atol=1e-6)
    assert torch.equal(out["attns"][:, -1], out["attn"])


def test_num_slots_and_num_iters_per_call():
    sa = make()
    out = sa(torch.randn(2, 10, 12), num_slots=7, num_iters=5)
    assert out["slots"].shape == (2, 7, 16) and out["attns"].shape == (2, 5, 7, 10)


def test_matches_plain_algorithm_1():
    sa = make()
    x, s0 = torch.randn(3, 20, 12), torch.randn(3, 4, 16)
    fast = sa(x, slots=s0)["slots"]
    plain = slot_attention_reference(sa, x, s0, 3)
    assert (fast - plain).abs().max() < 1e-5


def test_fresh_noise_on_every_call_but_explicit_slots_are_deterministic():
    sa = make()
    x = torch.randn(2, 10, 12)
    assert not torch.allclose(sa(x)["slots"], sa(x)["slots"])
    s0 = torch.randn(2, 4, 16)
    assert torch.equal(sa(x, slots=s0)["slots"], sa(x, slots=s0)["slots"])


def test_permutation_invariant_over_inputs():
    sa = make()
    x, s0 = torch.randn(2, 15, 12), torch.randn(2, 4, 16)
    perm = torch.randperm(15)
    a = sa(x, slots=s0)
    b = sa(x[:, perm], slots=s0)
    assert (a["slots"] - b["slots"]).abs().max() < 1e-5
    assert (a["attn"][:, :, perm] - b["attn"]).abs().max() < 1e-5


def test_permutation_equivariant_over_slots():
    sa = make()
    x, s0 = torch.randn(2, 15, 12), torch.randn(2, 4, 16)
    perm = torch.tensor([2, 0, 3, 1])
    a = sa(x, slots=s0)["slots"]
    b = sa(x, slots=s0[:, perm])["slots"]
    assert (a[:, perm] - b).abs().max() < 1e-5


def test_gradients_reach_every_parameter():
    sa = make()
    sa(torch.randn(2, 10, 12))["slots"].square().sum().backward()
    for name, p in sa.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_implicit_grad_same_forward_fewer_paths():
    sa = make()
    x, s0 = torch.randn(2, 10, 12), torch.randn(2, 4, 16)
    a = sa(x, slots=s0)["slots"]
    sa.implicit_grad = True
    b = sa(x, slots=s0.requires_grad_())["slots"]
    assert torch.equal(a, b)
    b.sum().backward()
    assert s0.grad is None  # detached before the last iteration


def test_input_mask_gives_padding_no_attention_and_no_influence():
    sa = make()
    x, s0 = torch.randn(2, 10, 12), torch.randn(2, 4, 16)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[:, 7:] = True
    out = sa(x, slots=s0, input_mask=mask)
    assert out["attn"][:, :, 7:].abs().max() == 0
    garbage = x.clone()
    garbage[:, 7:] = 100.0
    out2 = sa(garbage, slots=s0, input_mask=mask)
    truncated = sa(x[:, :7], slots=s0)
    assert (out["slots"] - out2["slots"]).abs().max() < 1e-5
    assert (out["slots"] - truncated["slots"]).abs().max() < 1e-5


def test_keras_initialisation_and_layernorm_eps():
    sa = make(slot_dim=64)
    limit = math.sqrt(6 / 65)
    assert sa.slots_mu.abs().max() <= limit and sa.slots_log_sigma.abs().max() <= limit
    assert sa.norm_inputs.eps == 1e-3 and sa.to_q.bias is None
    w = sa.gru.weight_hh  # (3D, D), orthogonal: W^T W = I
    assert torch.allclose(w.T @ w, torch.eye(64), atol=1e-5)


@pytest.mark.parametrize(
    "inputs, kwargs, match",
    [
        (torch.randn(10, 12), {}, "inputs must be"),
        (torch.randn(2, 10, 11), {}, "input_dim=12"),
        (torch.randint(0, 3, (2, 10, 12)), {}, "floating-point"),
        (torch.full((2, 10, 12), float("nan")), {}, "NaN"),
        (torch.randn(2, 10, 12), {"slots": torch.randn(2, 4, 15)}, "slot_dim=16"),
        (torch.randn(2, 10, 12), {"input_mask": torch.zeros(2, 10)}, "input_mask must be bool"),
        (torch.randn(2, 10, 12), {"input_mask": torch.ones(2, 10, dtype=torch.bool)}, "masks every input"),
        (torch.randn(2, 10, 12), {"num_iters": 0}, "num_iters"),
    ],
)
def test_bad_input_is_named(inputs, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()(inputs, **kwargs)


def test_from_lucidrains_parity():
    lucid = pytest.importorskip("slot_attention")
    torch.manual_seed(1)
    theirs = lucid.SlotAttention(num_slots=5, dim=32, iters=3, hidden_dim=64)
    with torch.no_grad():  # perturb every parameter so the test sees biases and LayerNorm affine terms
        for p in theirs.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ours = SlotAttention.from_lucidrains(theirs)
    x = torch.randn(3, 50, 32)
    torch.manual_seed(7)
    expected = theirs(x)
    torch.manual_seed(7)
    noise = torch.randn(3, 5, 32)
    init = theirs.slots_mu + theirs.slots_logsigma.exp() * noise
    got = ours(x, slots=init)["slots"]
    assert (got - expected).abs().max() <= 1e-4


def test_learned_slots_take_more_slots_at_test_time():
    torch.manual_seed(0)
    sa = SlotAttention(num_slots=4, input_dim=8, slot_dim=16, num_iters=3, mlp_hidden_dim=16, slot_init="learned")
    x = torch.randn(2, 20, 8)
    out = sa(x, num_slots=6)
    assert out["slots"].shape == (2, 6, 16) and out["attn"].shape == (2, 6, 20)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    init = sa.init_slots(2, 6, generator=g())
    assert torch.equal(init[:, :4], sa.slots_init.expand(2, -1, -1))  # the learned ones are kept ...
    assert torch.equal(init, sa.init_slots(2, 6, generator=g()))  # ... the extra ones come from the generator
    learned = sa.slots_init[0]
    extra = sa.init_slots(4000, 5)[:, 4]  # many draws of one extra slot: the learned slots' mean and spread
    assert torch.allclose(extra.mean(0), learned.mean(0), atol=0.1 * learned.std(0).max().item())
    assert torch.allclose(extra.std(0), learned.std(0, unbiased=False), rtol=0.1)
    with pytest.raises(ValueError, match="learned initial slots"):
        sa(x, num_slots=3)
