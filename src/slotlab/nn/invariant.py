"""Translation-equivariant Slot Attention with slot-centric reference frames.

After Biza et al., "Invariant Slot Attention: Object Discovery with Slot-Centric Reference Frames" (ICML 2023):
each slot carries a position p_k (the centre of mass of its attention), and the keys a slot sees are built from
the input features plus an encoding of the pixel position *relative to the slot*, g_n - p_k. Slot vectors thus
describe an object's appearance independently of where it is, and a decoder that draws each slot in its own frame
(:class:`slotlab.nn.modules.MLPDecoder` with ``centers``) reuses what it learned about a shape at every position.

slotlab's variant (documented deviations from the ISA release):
- the relative-position key encoder is ``W2 relu(W1 (k_n + G (g_n - p_k)))`` without ISA's pre-LayerNorm, which
  lets the logits be computed without materialising per-slot keys: with h_kn = relu(u_n - A p_k) where
  u_n = W1 k_n + A g_n + c and A = W1 G, the logit is (W2^T q_k) . h_kn + q_k . b2 — O(B K N H) additions instead
  of O(B K N H D) multiply-adds;
- values are the plain projected inputs (ISA's "V2"); positions enter the slots only through the attention.

As in ISA: initial positions uniform in [-1, 1]^2, drawn fresh on every call; T rounds of attention + GRU + MLP and
one final round that only updates the positions. Glossary: B batch, N inputs, K slots, D slot_dim, H hidden.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from slotlab.nn.modules import build_grid
from slotlab.nn.precision import fp32, full_precision
from slotlab.nn.slot_attention import keras_reset_


class InvariantSlotAttention(nn.Module):
    """Slot Attention whose keys encode positions relative to each slot; returns slots and their positions."""

    def __init__(self, num_slots: int, input_dim: int, resolution: tuple[int, int], slot_dim: int = 64,
                 num_iters: int = 3, mlp_hidden_dim: int = 128, grid_hidden_dim: int = 64, eps: float = 1e-8,
                 ln_eps: float = 1e-3, slot_init: str = "random") -> None:
        super().__init__()
        self.num_slots, self.num_iters, self.eps = num_slots, num_iters, eps
        self.slot_dim = slot_dim
        self.scale = slot_dim**-0.5
        self.norm_inputs = nn.LayerNorm(input_dim, eps=ln_eps)
        self.norm_slots = nn.LayerNorm(slot_dim, eps=ln_eps)
        self.norm_mlp = nn.LayerNorm(slot_dim, eps=ln_eps)
        self.to_q = nn.Linear(slot_dim, slot_dim, bias=False)
        self.to_k = nn.Linear(input_dim, slot_dim, bias=False)
        self.to_v = nn.Linear(input_dim, slot_dim, bias=False)
        self.grid_proj = nn.Linear(2, slot_dim)  # G: relative position -> key space
        self.grid_hidden = nn.Linear(slot_dim, grid_hidden_dim)  # W1, c
        self.grid_out = nn.Linear(grid_hidden_dim, slot_dim)  # W2, b2
        self.gru = nn.GRUCell(slot_dim, slot_dim)
        self.mlp = nn.Sequential(nn.Linear(slot_dim, mlp_hidden_dim), nn.ReLU(), nn.Linear(mlp_hidden_dim, slot_dim))
        self.slots_mu = nn.Parameter(torch.empty(1, 1, slot_dim))
        self.slots_log_sigma = nn.Parameter(torch.empty(1, 1, slot_dim))
        self.slot_init = slot_init
        if slot_init == "learned":  # one learned initial vector per slot (BO-QSA): K is fixed
            self.slots_init = nn.Parameter(torch.empty(1, num_slots, slot_dim))
            for unused in (self.slots_mu, self.slots_log_sigma):  # kept for checkpoints; no gradient, no update
                unused.requires_grad_(False)
        elif slot_init != "random":
            raise ValueError(f"InvariantSlotAttention: slot_init must be 'random' or 'learned', got {slot_init!r}")
        grid = build_grid(*resolution)[0, :2].flatten(1).T * 2 - 1  # (N, 2), (y, x) in [-1, 1]
        self.register_buffer("grid", grid, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        keras_reset_(self)

    def forward(self, inputs: Tensor, *, num_slots: int | None = None, num_iters: int | None = None,
                slots: Tensor | None = None, positions: Tensor | None = None) -> dict[str, Tensor]:
        """inputs (B, N, input_dim) with N = H * W of ``resolution``.

        Returns ``slots`` (B, K, D), ``positions`` (B, K, 2) in [-1, 1] (y, x), ``attn`` (B, K, N) the final
        round's attention (softmax over slots) and ``attns`` (B, T + 1, K, N).
        """
        B, N, _ = inputs.shape
        if N != self.grid.shape[0]:
            raise ValueError(f"InvariantSlotAttention: expected N = {self.grid.shape[0]} inputs, got {N}")
        num_iters = self.num_iters if num_iters is None else num_iters
        if slots is None and self.slot_init == "learned":
            if num_slots not in (None, self.num_slots):
                raise ValueError(f"slot_init='learned' has K={self.num_slots}; got num_slots={num_slots}")
            slots = self.slots_init.expand(B, -1, -1)
        elif slots is None:
            K = num_slots or self.num_slots
            mu = self.slots_mu.expand(B, K, -1)
            slots = mu + self.slots_log_sigma.exp() * torch.randn_like(mu)
        K = slots.shape[1]
        if positions is None:
            positions = torch.rand(B, K, 2, device=inputs.device, dtype=inputs.dtype) * 2 - 1

        x = self.norm_inputs(inputs)
        k, v = self.to_k(x), fp32(self.to_v(x))  # (B, N, D); v in fp32 under autocast, for the weighted mean
        A = self.grid_hidden.weight @ self.grid_proj.weight  # (H, 2): W1 G
        c = self.grid_hidden.weight @ self.grid_proj.bias + self.grid_hidden.bias  # (H,)
        u = self.grid_hidden(k) - self.grid_hidden.bias + self.grid @ A.T + c  # (B, N, H): W1 k_n + A g_n + c

        attns = []
        for round_ in range(num_iters + 1):
            h = torch.relu(u[:, None] - (positions @ A.T)[:, :, None])  # (B, K, N, H)
            q = self.to_q(self.norm_slots(slots)) * self.scale  # (B, K, D)
            q_h = q @ self.grid_out.weight  # (B, K, H): W2^T q
            logits = torch.einsum("bkh,bknh->bkn", q_h, h) + (q @ self.grid_out.bias)[:, :, None]  # (B, K, N)
            attn = fp32(logits).softmax(dim=1)  # softmax over slots (fp32 under autocast, as what follows)
            attns.append(attn)
            weights = attn + self.eps
            weights = weights / weights.sum(dim=-1, keepdim=True)  # (B, K, N), weighted mean over inputs
            with full_precision(weights):
                positions = weights @ self.grid  # (B, K, 2) centre of mass
                updates = weights @ v if round_ < num_iters else None  # (B, K, D)
            if round_ < num_iters:  # the last round only updates the positions
                slots = self.gru(updates.reshape(B * K, -1), slots.reshape(B * K, -1)).reshape(B, K, -1)
                slots = slots + self.mlp(self.norm_mlp(slots))
        return {"slots": slots, "positions": positions, "attn": attns[-1], "attns": torch.stack(attns, dim=1)}

    def reference_logits(self, inputs: Tensor, slots: Tensor, positions: Tensor) -> Tensor:
        """The literal per-slot keys W2 relu(W1 (k_n + G (g_n - p_k)) + c) + b2 and their logits, for tests."""
        x = self.norm_inputs(inputs)
        k = self.to_k(x)  # (B, N, D)
        rel = self.grid[None, None] - positions[:, :, None]  # (B, K, N, 2)
        keys = self.grid_out(torch.relu(self.grid_hidden(k[:, None] + self.grid_proj(rel))))  # (B, K, N, D)
        q = self.to_q(self.norm_slots(slots)) * self.scale
        return torch.einsum("bkd,bknd->bkn", q, keys)
