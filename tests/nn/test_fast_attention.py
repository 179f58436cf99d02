"""Parity of the fast path (slotlab.nn.fast_attention) with the plain path: outputs and every gradient."""

import pytest
import torch

from slotlab import SlotAttention


def make(**kw):
    torch.manual_seed(0)
    defaults = dict(num_slots=4, input_dim=12, slot_dim=16, num_iters=3, mlp_hidden_dim=32)
    defaults.update(kw)
    sa = SlotAttention(**defaults)
    sa.fast_min_inputs = 0  # the fast path even on these tiny inputs
    with torch.no_grad():  # perturb every parameter so biases and LayerNorm affine terms matter
        for p in sa.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return sa


def run(sa, fast, x, loss_fn, seed=3, **call):
    """Forward + backward on one path; returns outputs, the input gradient and every parameter gradient."""
    sa.fast = fast
    sa.zero_grad()
    x = x.clone().requires_grad_()
    torch.manual_seed(seed)
    out = sa(x, **call)
    loss_fn(out).backward()
    grads = {name: p.grad for name, p in sa.named_parameters()}
    return out, x.grad, grads


def slots_loss(out):
    return out["slots"].square().sum()


def attn_loss(out):  # the autoencoder's mask_source="attention" path: gradients through attn and attns
    weights = torch.linspace(-1, 1, out["attn"].shape[-1])
    return out["slots"].sum() + (out["attn"] * weights).sum() + out["attns"][:, 0].square().sum()


def assert_close_grad(got, want, name):
    assert (got is None) == (want is None), name
    if want is not None:  # relative to the largest entry; an absolute floor for gradients that are 0 in exact maths
        tol = 1e-4 * want.abs().max().item() + 1e-5
        assert (got - want).abs().max().item() <= tol, name


def assert_parity(sa, loss_fn=slots_loss, shape=(2, 30, 12), **call):
    x = torch.randn(*shape)
    out_f, dx_f, grads_f = run(sa, True, x, loss_fn, **call)
    out_p, dx_p, grads_p = run(sa, False, x, loss_fn, **call)
    for key in ("slots", "attn", "attns", "init_slots"):
        assert out_f[key].shape == out_p[key].shape, key
        assert (out_f[key] - out_p[key]).abs().max() <= 1e-5, key
    assert_close_grad(dx_f, dx_p, "inputs")
    for name in grads_p:
        assert_close_grad(grads_f[name], grads_p[name], name)


@pytest.mark.parametrize("kw", [{}, {"qkv_bias": True}, {"implicit_grad": True}, {"slot_init": "learned"},
                                {"ln_eps": 1e-5, "eps": 1e-3},
                                {"implicit_grad": True, "straight_through": True, "slot_init": "learned"},
                                {"implicit_grad": True, "straight_through": True}])
@pytest.mark.parametrize("loss_fn", [slots_loss, attn_loss])
def test_fast_matches_plain(kw, loss_fn):
    assert_parity(make(**kw), loss_fn)


def test_fast_matches_plain_with_explicit_slots_and_per_call_sizes():
    sa = make(qkv_bias=True)
    assert_parity(sa, attn_loss, slots=torch.randn(2, 6, 16))
    assert_parity(sa, attn_loss, num_slots=3, num_iters=5)
    assert_parity(sa, attn_loss, num_iters=1)
    sa.implicit_grad = True
    assert_parity(sa, attn_loss, num_iters=1)


def test_fast_gradient_for_explicit_slots():
    sa = make()
    x, s0 = torch.randn(2, 20, 12), torch.randn(2, 4, 16)
    grads = []
    for fast in (True, False):
        sa.fast = fast
        s = s0.clone().requires_grad_()
        attn_loss(sa(x, slots=s)).backward()
        grads.append(s.grad)
    assert_close_grad(grads[0], grads[1], "slots")


def test_fast_input_dim_differs_from_slot_dim_and_frozen_parameters():
    sa = make(input_dim=5, slot_dim=8)
    sa.to_k.weight.requires_grad_(False)
    sa.gru.requires_grad_(False)
    assert_parity(sa, attn_loss, shape=(3, 17, 5))
    assert sa.to_k.weight.grad is None


def test_fast_without_grad_matches_and_input_mask_falls_back():
    sa = make()
    x, s0 = torch.randn(2, 20, 12), torch.randn(2, 4, 16)
    with torch.no_grad():
        fast = sa(x, slots=s0)
        sa.fast = False
        plain = sa(x, slots=s0)
    assert (fast["slots"] - plain["slots"]).abs().max() <= 1e-5
    assert (fast["attns"] - plain["attns"]).abs().max() <= 1e-5
    sa.fast = True
    mask = torch.zeros(2, 20, dtype=torch.bool)
    mask[:, 15:] = True
    assert sa(x, slots=s0, input_mask=mask)["attn"][:, :, 15:].abs().max() == 0


def test_tiny_inputs_take_the_plain_path():
    sa = make()
    sa.fast_min_inputs = 41
    x = torch.randn(2, 20, 12, requires_grad=True)
    assert sa(x)["slots"].grad_fn.name() != "_SlotIterationsBackward"
    assert sa(torch.randn(3, 20, 12, requires_grad=True))["slots"].grad_fn.name() == "_SlotIterationsBackward"


def test_autocast_takes_the_plain_path():
    sa = make()
    x, s0 = torch.randn(2, 20, 12), torch.randn(2, 4, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = sa(x, slots=s0)["slots"]
        sa.fast = False
        plain = sa(x, slots=s0)["slots"]
    assert torch.equal(fast, plain)


def test_fast_backward_twice_with_retain_graph():
    sa = make()
    x, s0 = torch.randn(2, 20, 12), torch.randn(2, 4, 16)
    grads = []
    for fast in (True, False):
        sa.fast = fast
        sa.zero_grad()
        loss = attn_loss(sa(x, slots=s0))
        loss.backward(retain_graph=True)
        loss.backward()
        grads.append(sa.to_v.weight.grad)
    assert_close_grad(grads[0], grads[1], "to_v.weight")


def test_fast_double_backward_raises():
    sa = make()
    x = torch.randn(2, 10, 12, requires_grad=True)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(sa(x)["slots"].sum(), x, create_graph=True)
    sa.fast = False
    (g,) = torch.autograd.grad(sa(x)["slots"].sum(), x, create_graph=True)
    g.sum().backward()


def test_fast_from_lucidrains_parity():
    lucid = pytest.importorskip("slot_attention")
    torch.manual_seed(1)
    theirs = lucid.SlotAttention(num_slots=5, dim=32, iters=3, hidden_dim=64)
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ours = SlotAttention.from_lucidrains(theirs)
    assert ours.fast
    ours.fast_min_inputs = 0
    x = torch.randn(3, 50, 32, requires_grad=True)
    torch.manual_seed(7)
    expected = theirs(x)
    (dx_theirs,) = torch.autograd.grad(expected.square().sum(), x)
    torch.manual_seed(7)
    init = theirs.slots_mu + theirs.slots_logsigma.exp() * torch.randn(3, 5, 32)
    got = ours(x, slots=init)["slots"]
    (dx_ours,) = torch.autograd.grad(got.square().sum(), x)
    assert (got - expected).abs().max() <= 1e-4
    assert (dx_ours - dx_theirs).abs().max() <= 1e-4 * dx_theirs.abs().max()


@pytest.mark.parametrize("fast", [True, False])
def test_implicit_grad_same_forward_different_gradient(fast):
    """Implicit differentiation (Chang et al. 2022) changes the backward only: the forward is the default's,
    bitwise, on both paths; the gradient is that of the last iteration alone, so it differs."""
    sa = make()
    x = torch.randn(2, 30, 12)
    out_d, dx_d, grads_d = run(sa, fast, x, slots_loss)
    sa.implicit_grad = True
    out_i, dx_i, grads_i = run(sa, fast, x, slots_loss)
    assert (out_d["slots"].grad_fn.name() == "_SlotIterationsBackward") == fast  # the path under test ran
    for key in ("slots", "attn", "attns", "init_slots"):
        assert torch.equal(out_d[key], out_i[key]), key
    assert grads_d["slots_mu"] is not None and grads_i["slots_mu"] is None  # the slots are detached before T
    for name, got, want in [("inputs", dx_i, dx_d), ("to_q.weight", grads_i["to_q.weight"], grads_d["to_q.weight"])]:
        assert (got - want).abs().max() > 1e-3 * want.abs().max(), name


@pytest.mark.parametrize("fast", [True, False])
def test_straight_through_sends_the_last_iterations_input_gradient_to_the_initial_slots(fast):
    """BO-QSA: the forward is the default's; the initial slots get exactly the gradient that reaches the last
    iteration's input (computed here by running that iteration alone from the slots of T - 1 iterations)."""
    sa = make(slot_init="learned", num_iters=3)
    sa.fast = fast
    x = torch.randn(2, 30, 12)
    default = sa(x)["slots"]
    sa.implicit_grad, sa.straight_through = True, True
    out = sa(x)
    assert torch.equal(out["slots"], default)
    sa.zero_grad()
    slots_loss(out).backward()
    got = sa.slots_init.grad.clone()
    with torch.no_grad():
        before_last = sa(x, num_iters=2)["slots"]
    s = before_last.clone().requires_grad_()
    sa.implicit_grad, sa.straight_through = False, False
    (want,) = torch.autograd.grad(slots_loss(sa(x, slots=s, num_iters=1)), s)
    assert (got - want.sum(dim=0, keepdim=True)).abs().max() <= 1e-4 * want.abs().max()
    with pytest.raises(ValueError, match="needs implicit_grad"):
        SlotAttention(4, 12, straight_through=True)
