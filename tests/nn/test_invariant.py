import pytest
import torch

from slotlab.nn.invariant import InvariantSlotAttention
from slotlab.nn.slot_attention import SlotAttention


def make():
    torch.manual_seed(0)
    return InvariantSlotAttention(4, 12, (5, 6), slot_dim=16, num_iters=3, mlp_hidden_dim=32, grid_hidden_dim=8)


def test_shapes_and_positions_are_attention_centres():
    sa = make()
    out = sa(torch.randn(2, 30, 12))
    assert out["slots"].shape == (2, 4, 16) and out["positions"].shape == (2, 4, 2)
    assert out["attns"].shape == (2, 3, 4, 30)  # the T rounds that updated the slots, as plain Slot Attention
    assert torch.allclose(out["attn"].sum(1), torch.ones(2, 30), atol=1e-6)
    w = out["attn"] + sa.eps
    w = w / w.sum(-1, keepdim=True)
    assert torch.allclose(out["positions"], w @ sa.grid, atol=1e-6)
    assert out["positions"].abs().max() <= 1


def test_fast_logits_equal_the_literal_per_slot_keys():
    sa = make()
    x, slots, positions = torch.randn(2, 30, 12), torch.randn(2, 4, 16), torch.rand(2, 4, 2) * 2 - 1
    out = sa(x, slots=slots, positions=positions, num_iters=0)  # one round: attention from the given state
    expected = sa.reference_logits(x, slots, positions).softmax(dim=1)
    assert (out["attn"] - expected).abs().max() < 1e-5


def test_attention_outputs_agree_with_plain_slot_attention():
    """Both modules: ``attns`` (B, T, K, N), softmax over slots, one map per slot update; ``attn`` assigns the
    inputs to the final slots (here the extra round that places them, computed from the final slots)."""
    sa = make()
    plain = SlotAttention(4, 12, 16, 3, 32)
    x = torch.randn(2, 30, 12)
    out, ref = sa(x), plain(x)
    assert out["attns"].shape == ref["attns"].shape == (2, 3, 4, 30)
    assert out["attn"].shape == ref["attn"].shape == (2, 4, 30)
    assert torch.allclose(out["attns"].sum(2), torch.ones(2, 3, 30), atol=1e-6)
    s0, p0 = torch.randn(2, 4, 16), torch.rand(2, 4, 2) * 2 - 1
    full = sa(x, slots=s0, positions=p0)
    for t in range(3):  # round t's attention is the final attention of a run stopped after t updates
        assert torch.allclose(full["attns"][:, t], sa(x, slots=s0, positions=p0, num_iters=t)["attn"], atol=1e-6)
    assert sa(x, slots=s0, positions=p0, num_iters=0)["attns"].shape == (2, 0, 4, 30)


def test_relative_values_equal_the_literal_per_slot_values():
    """``relative_values``: a slot's update is the attention-weighted mean of W2 relu(W1 (v_n + G (g_n - p_k)) + c)
    + b2, its values measured from where the slot was; the default update is the mean of the plain values."""
    x, slots, positions = torch.randn(2, 30, 12), torch.randn(2, 4, 16), torch.rand(2, 4, 2) * 2 - 1
    for relative in (False, True):
        sa = make()
        sa.relative_values = relative
        out = sa(x, slots=slots, positions=positions, num_iters=1)
        w = out["attns"][:, 0] + sa.eps
        w = w / w.sum(-1, keepdim=True)  # (B, K, N)
        v = sa.to_v(sa.norm_inputs(x))  # (B, N, D)
        rel = sa.grid[None, None] - positions[:, :, None]  # (B, K, N, 2)
        values = sa.grid_out(torch.relu(sa.grid_hidden(v[:, None] + sa.grid_proj(rel)))) if relative \
            else v[:, None].expand(-1, 4, -1, -1)  # (B, K, N, D)
        expected = sa.refine(torch.einsum("bkn,bknd->bkd", w, values), slots)
        assert (out["slots"] - expected).abs().max() < 1e-5


def test_keys_depend_only_on_relative_position():
    """Moving a slot and the features under it together leaves its logits unchanged (translation equivariance)."""
    sa = make()
    feats = torch.randn(1, 5, 6, 12)
    shifted = torch.roll(feats, shifts=1, dims=2)  # move everything one column right
    slots = torch.randn(1, 4, 16)
    p = torch.tensor([[[0.0, -0.2], [0.1, 0.0], [-0.5, -0.6], [0.3, -0.2]]])
    step = torch.tensor([0.0, 2 / 5])  # one column on the [-1, 1] grid of width 6
    a = sa.reference_logits(feats.flatten(1, 2), slots, p).reshape(1, 4, 5, 6)
    b = sa.reference_logits(shifted.flatten(1, 2), slots, p + step).reshape(1, 4, 5, 6)
    assert torch.allclose(a[..., :, :5], b[..., :, 1:], atol=1e-5)


def test_gradients_reach_every_parameter():
    sa = make()
    out = sa(torch.randn(2, 30, 12))
    (out["slots"].square().sum() + out["positions"].sum()).backward()
    for name, p in sa.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_locality_prior_is_the_gaussian_log_density_around_each_slot():
    torch.manual_seed(0)
    sa = InvariantSlotAttention(3, 8, (4, 5), slot_dim=16, num_iters=1, locality=0.3)
    slots, positions = torch.randn(2, 3, 16), torch.rand(2, 3, 2) * 2 - 1
    literal = ((sa.grid[None, None] - positions[:, :, None]) ** 2).sum(-1) / (2 * 0.3**2)  # (B, K, N)
    assert torch.allclose(sa.locality_penalty(sa.norm_slots(slots), positions), literal, atol=1e-5)
    with torch.no_grad():
        sa.log_width.weight.normal_()  # widths that depend on the slot
    width = sa.log_width(sa.norm_slots(slots)).exp().clamp(min=0.3)[..., None]  # (B, K, 1, 1): never below 0.3
    assert (width > 0.3).any()
    literal = ((sa.grid[None, None] - positions[:, :, None]) ** 2).sum(-1) / (2 * width[..., 0] ** 2)
    assert torch.allclose(sa.locality_penalty(sa.norm_slots(slots), positions), literal, atol=1e-4)
    # a narrow prior keeps each slot's attention centre at its starting position
    narrow = InvariantSlotAttention(3, 8, (16, 16), slot_dim=16, num_iters=1, locality=0.05)
    start = torch.tensor([[[-0.5, -0.5], [0.0, 0.5], [0.5, -0.25]]])
    out = narrow(torch.randn(1, 256, 8), positions=start)
    assert (out["positions"] - start).abs().max() < 0.2  # pulled a little towards its Voronoi cell
    with pytest.raises(ValueError, match="locality must be >= 0"):
        InvariantSlotAttention(3, 8, (4, 5), locality=-1.0)
