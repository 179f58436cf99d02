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
- values are the plain projected inputs by default (ISA's "V2"): positions enter the slots only through the
  attention, so a slot's update is the mean of what its inputs look like, not of where they lie around it.
  ``relative_values=True`` passes the values through the same relative-position encoder as the keys (ISA's "V3",
  ``add_rel_pos_to_values`` in its release), W2 relu(W1 (v_n + G (g_n - p_k)) + c) + b2, so the update also
  carries the layout of the slot's inputs around it (its object's shape and size). Its weighted mean needs no
  per-slot values either: sum_n w_kn (W2 h_kn + b2) = W2 (sum_n w_kn h_kn) + b2, as the weights sum to 1;
- ``locality`` > 0 adds a Gaussian prior around each slot's position to its attention logits,
  -|g_n - p_k|^2 / (2 w_k^2), with a width w_k = max(``locality``, exp(a . LN(slot_k) + b)) that each slot learns
  (a = 0 and w = ``locality`` at initialisation). Without it the attention of an untrained model is not local, so
  the centre of mass of every slot lands near the image centre after the first round and given starting positions
  (SAVi's first-frame centres) are lost; with it, a slot attends around where it starts from the first step. The
  floor matters: a width free to shrink fell below the objects' size in training (to 0.14 on average in [-1, 1]
  units), so a slot saw only its object's core and drew it too small.

As in ISA: initial positions uniform in [-1, 1]^2, drawn fresh on every call; T rounds of attention + GRU + MLP and
one final round that only updates the positions. Glossary: B batch, N inputs, K slots, D slot_dim, H hidden.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from slotlab.nn.modules import build_grid
from slotlab.nn.precision import fp32, full_precision
from slotlab.nn.slot_attention import SlotCore


class InvariantSlotAttention(SlotCore):
    """Slot Attention whose keys encode positions relative to each slot; returns slots and their positions.

    The shared parts (sizes, projections, GRU, MLP, initial slots, initialisation) are :class:`SlotCore`'s; this
    module adds the relative-position key encoder (``grid_proj``, ``grid_hidden``, ``grid_out``) and the grid of
    input positions for ``resolution`` (H, W), N = H * W.
    """

    def __init__(self, num_slots: int, input_dim: int, resolution: tuple[int, int], slot_dim: int = 64,
                 num_iters: int = 3, mlp_hidden_dim: int = 128, grid_hidden_dim: int = 64, eps: float = 1e-8,
                 ln_eps: float = 1e-3, slot_init: str = "random", locality: float = 0.0,
                 relative_values: bool = False) -> None:
        key_layers = {
            "grid_proj": nn.Linear(2, slot_dim),  # G: relative position -> key space
            "grid_hidden": nn.Linear(slot_dim, grid_hidden_dim),  # W1, c
            "grid_out": nn.Linear(grid_hidden_dim, slot_dim),  # W2, b2
        }
        super().__init__(num_slots, input_dim, slot_dim, num_iters, mlp_hidden_dim, eps, qkv_bias=False,
                         ln_eps=ln_eps, slot_init=slot_init, key_layers=key_layers)
        grid = build_grid(*resolution)[0, :2].flatten(1).T * 2 - 1  # (N, 2), (y, x) in [-1, 1]
        self.register_buffer("grid", grid, persistent=False)
        if not locality >= 0:
            raise ValueError(f"InvariantSlotAttention: locality must be >= 0 (0 = no prior), got {locality!r}")
        self.locality, self.log_width = locality, None
        self.relative_values = relative_values
        if locality > 0:  # the Gaussian prior's log-width per slot, a linear function of the normalised slot
            self.log_width = nn.Linear(slot_dim, 1)
            nn.init.zeros_(self.log_width.weight)
            nn.init.constant_(self.log_width.bias, float(torch.tensor(locality).log()))

    def forward(self, inputs: Tensor, *, num_slots: int | None = None, num_iters: int | None = None,
                slots: Tensor | None = None, positions: Tensor | None = None, active: Tensor | None = None,
                local: Tensor | None = None) -> dict[str, Tensor]:
        """inputs (B, N, input_dim) with N = H * W of ``resolution``.

        ``active`` (B, K) bool: slots that take part (default all); an inactive slot gets no attention (its
        softmax share is 0; at least one slot per example must be active). ``local`` (B, K) bool: slots under the
        locality prior (default all; ``locality`` > 0).

        T rounds of attention update the slots and their positions; one more round, from the final slots, only
        updates the positions. Returns ``slots`` (B, K, D), ``positions`` (B, K, 2) in [-1, 1] (y, x),
        ``attns`` (B, T, K, N) the attention (softmax over slots) of the T rounds that updated the slots, as
        :class:`SlotAttention`, and ``attn`` (B, K, N) the final round's, which placed the slots (:class:`SlotCore`).
        """
        B, N, _ = inputs.shape
        if N != self.grid.shape[0]:
            raise ValueError(f"InvariantSlotAttention: expected N = {self.grid.shape[0]} inputs, got {N}")
        if active is not None and not active.any(dim=1).all():
            raise ValueError("InvariantSlotAttention: every example needs at least one active slot")
        num_iters = self.iterations(num_iters)
        if slots is None:
            slots = self.init_slots(B, num_slots or self.num_slots)
        K = slots.shape[1]
        if positions is None:
            positions = torch.rand(B, K, 2, device=inputs.device, dtype=inputs.dtype) * 2 - 1

        x = self.norm_inputs(inputs)
        k, v = self.to_k(x), fp32(self.to_v(x))  # (B, N, D); v in fp32 under autocast, for the weighted mean
        A = self.grid_hidden.weight @ self.grid_proj.weight  # (H, 2): W1 G
        c = self.grid_hidden.weight @ self.grid_proj.bias + self.grid_hidden.bias  # (H,)
        u = self.grid_hidden(k) - self.grid_hidden.bias + self.grid @ A.T + c  # (B, N, H): W1 k_n + A g_n + c
        if self.relative_values:  # the same encoder for the values: W1 v_n + A g_n + c, in fp32 as v
            u_v = fp32(self.grid_hidden(v) - self.grid_hidden.bias + self.grid @ A.T + c)  # (B, N, H)

        attns = []
        for round_ in range(num_iters + 1):
            shift = (positions @ A.T)[:, :, None]  # (B, K, 1, H): A p_k, the slots' positions in the encoder
            h = torch.relu(u[:, None] - shift)  # (B, K, N, H)
            normed = self.norm_slots(slots)  # (B, K, D)
            q = self.to_q(normed) * self.scale  # (B, K, D)
            q_h = q @ self.grid_out.weight  # (B, K, H): W2^T q
            logits = torch.einsum("bkh,bknh->bkn", q_h, h) + (q @ self.grid_out.bias)[:, :, None]  # (B, K, N)
            if self.log_width is not None:  # Gaussian prior around each slot's position
                penalty = self.locality_penalty(normed, positions)  # (B, K, N)
                logits = logits - (penalty if local is None else penalty * local[:, :, None])
            if active is not None:  # inactive slots take no share of any input
                logits = logits.masked_fill(~active[:, :, None], float("-inf"))
            attn = fp32(logits).softmax(dim=1)  # softmax over slots (fp32 under autocast, as what follows)
            weights = attn + self.eps
            weights = weights / weights.sum(dim=-1, keepdim=True)  # (B, K, N), weighted mean over inputs
            with full_precision(weights):
                positions = weights @ self.grid  # (B, K, 2) centre of mass
                updates = None
                if round_ < num_iters and self.relative_values:  # W2 (sum_n w_kn h_kn) + b2, h from the values
                    h_v = torch.relu(u_v[:, None] - fp32(shift))  # (B, K, N, H)
                    updates = self.grid_out(torch.einsum("bkn,bknh->bkh", weights, h_v))  # (B, K, D)
                elif round_ < num_iters:
                    updates = weights @ v  # (B, K, D)
            if round_ < num_iters:  # the last round only updates the positions
                attns.append(attn)
                slots = self.refine(updates, slots)
        attns = torch.stack(attns, dim=1) if attns else attn[:, None][:, :0]  # T = 0: (B, 0, K, N)
        return {"slots": slots, "positions": positions, "attn": attn, "attns": attns}

    def locality_penalty(self, normed_slots: Tensor, positions: Tensor) -> Tensor:
        """|g_n - p_k|^2 / (2 w_k^2), (B, K, N), from the LayerNorm-ed slots (B, K, D) and their positions (B, K, 2):
        subtracted from the logits (``locality`` > 0)."""
        width = self.log_width(normed_slots).exp().clamp(min=self.locality)  # (B, K, 1)
        dist2 = (self.grid.square().sum(-1) - 2 * positions @ self.grid.T
                 + positions.square().sum(-1, keepdim=True))  # (B, K, N)
        return dist2 / (2 * width.square())

    def reference_logits(self, inputs: Tensor, slots: Tensor, positions: Tensor) -> Tensor:
        """The literal per-slot keys W2 relu(W1 (k_n + G (g_n - p_k)) + c) + b2 and their logits, for tests."""
        x = self.norm_inputs(inputs)
        k = self.to_k(x)  # (B, N, D)
        rel = self.grid[None, None] - positions[:, :, None]  # (B, K, N, 2)
        keys = self.grid_out(torch.relu(self.grid_hidden(k[:, None] + self.grid_proj(rel))))  # (B, K, N, D)
        q = self.to_q(self.norm_slots(slots)) * self.scale
        return torch.einsum("bkd,bknd->bkn", q, keys)
