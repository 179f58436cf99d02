"""The fast path of Slot Attention: the same mathematics as ``SlotAttention.step``, with less work over the N inputs.

Three exact rewrites (x = LayerNorm(inputs), (B, N, Din); a = softmax over slots, a_nj for input n and slot j):

1. **k and v are never built.** k_n . q_j = x_n . (Wk^T q_j) + bk . q_j, so with q' = scale * q Wk (B, K, Din) and
   c = scale * q bk (B, K) the logits are x q'^T + c; and sum_n a_nj v_n = (a^T x)_j Wv^T + (sum_n a_nj) bv. The two
   (B*N, Din) x (Din, D) projections (one GEMM forward, two backward each) disappear; per iteration the only
   N-sized work is one skinny product for the logits and one for the weighted sum, both on x.
2. **+eps and the weighted mean on the small side.** With s_j = sum_n a_nj and v_sum = sum_n v_n,
   updates_j = sum_n (a_nj + eps) v_n / sum_n (a_nj + eps) = ((a^T v)_j + eps v_sum) / (s_j + N eps):
   neither a + eps nor the renormalised attention is materialised.
3. **A hand-written backward** (``_SlotIterations``): the N-sized products are done by hand; everything small
   (LayerNorm + q projection on the slots, GRU, MLP: (B*K, D)-sized) is recorded by autograd in the forward, from
   detached leaves, and differentiated with ``torch.autograd.grad`` in the backward. The gradient for x is
   *deferred*: instead of 2T skinny products each added into dx, one product at the end,
   dx = [ddots_1..T ; a_1..T ; 1]^T (B, N, 2TK+1) @ [q'_1..T ; dY_1..T ; d(sum_n x_n)] (B, 2TK+1, Din).
   The (B, 2TK+1, N) buffer is allocated in the forward: the attention is written into its middle rows, the
   backward writes the logit gradients into its first rows and ones into its last.

Attention is kept as (B, K, N): the softmax over K then runs vectorised along N (a softmax over a last axis of
size K = 7 measured more than 20x slower on CPU).

Only x, that buffer and (B, K, *)-sized tensors are kept for the backward. Double backward (``create_graph=True``)
is not supported and raises; the plain path (``fast=False``) has it.
Glossary: B batch, N inputs, K slots, D slot_dim, T iterations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def queries(sa: nn.Module, slots: Tensor) -> tuple[Tensor, Tensor | None]:
    """Slots (B, K, D) -> keys-folded queries q' = scale * q Wk (B, K, Din) and logit offsets scale * q bk (B, K)."""
    q = sa.to_q(sa.norm_slots(slots))  # (B, K, D)
    q_x = torch.matmul(q, sa.to_k.weight) * sa.scale  # (B, K, Din)
    offset = None if sa.to_k.bias is None else torch.matmul(q, sa.to_k.bias) * sa.scale  # (B, K)
    return q_x, offset


def update(sa: nn.Module, attn_x: Tensor, attn_sum: Tensor, x_sum: Tensor, n: int, slots_prev: Tensor) -> Tensor:
    """The weighted mean of the values, then GRU and residual MLP, from the small sums only.

    attn_x = a^T x (B, K, Din), attn_sum = sum_n a (B, K), x_sum = sum_n x (B, Din), slots_prev (B, K, D).
    """
    weighted = F.linear(attn_x, sa.to_v.weight)  # (B, K, D) = sum_n a_nk (v_n - bv)
    v_sum = F.linear(x_sum, sa.to_v.weight)  # (B, D) = sum_n (v_n - bv)
    if sa.to_v.bias is not None:
        weighted = weighted + attn_sum.unsqueeze(-1) * sa.to_v.bias
        v_sum = v_sum + n * sa.to_v.bias
    updates = (weighted + sa.eps * v_sum.unsqueeze(1)) / (attn_sum + n * sa.eps).unsqueeze(-1)  # (B, K, D)
    return sa.refine(updates, slots_prev)


def attention(x: Tensor, q_x: Tensor, offset: Tensor | None) -> Tensor:
    """Softmax over slots of the logits q' x^T + offset: (B, N, Din), (B, K, Din), (B, K) -> (B, K, N)."""
    if offset is None:
        logits = torch.bmm(q_x, x.transpose(1, 2))  # (B, K, N)
    else:
        logits = torch.baddbmm(offset.unsqueeze(-1), q_x, x.transpose(1, 2))  # (B, K, N)
    return logits.softmax(dim=1)


def iterate(sa: nn.Module, x: Tensor, slots: Tensor, num_iters: int, buf: Tensor | None = None,
            saved: dict | None = None) -> tuple[Tensor, Tensor]:
    """T iterations, the N-sized work without autograd; x (B, N, Din), slots (B, K, D) -> slots, attns (B, T, K, N).

    With ``buf`` (B, 2TK+1, N) the attention of iteration t is written to rows [TK + tK, TK + (t+1)K). With
    ``saved``, the small parts (queries; weighted mean, GRU, MLP) are recorded as autograd graphs from leaf inputs,
    one pair per iteration, which the backward differentiates (so they are not re-run there).
    """
    B, N, _ = x.shape
    K = slots.shape[1]
    record = saved is not None
    x_sum = x.sum(dim=1)  # (B, Din)
    if record:
        saved["x_sum"] = x_sum.requires_grad_()
    attns = []
    for t in range(num_iters):
        if record:
            slots = slots.detach().requires_grad_()
        with torch.set_grad_enabled(record):
            q_x, offset = queries(sa, slots)  # (B, K, Din), (B, K)
        with torch.no_grad():
            a = attention(x, q_x, offset)  # (B, K, N)
            attn_x = torch.bmm(a, x)  # (B, K, Din)
            attn_sum = a.sum(dim=-1)  # (B, K)
        if buf is not None:
            buf[:, (num_iters + t) * K:(num_iters + t + 1) * K] = a
        attns.append(a)
        with torch.set_grad_enabled(record):
            new_slots = update(sa, attn_x.requires_grad_(record), attn_sum.requires_grad_(record), x_sum, N, slots)
        if record:
            saved["steps"].append((slots, q_x, offset, attn_x, attn_sum, new_slots))
        slots = new_slots
    return slots.detach(), torch.stack(attns, dim=1)


class _SlotIterations(torch.autograd.Function):
    """(x, initial slots, the iteration's parameters) -> (final slots, attns), with the hand-written backward."""

    @staticmethod
    def forward(ctx, sa, num_iters, implicit_grad, x, slots, *params):
        B, N, _ = x.shape
        K = slots.shape[1]
        width = 2 * num_iters * K + 1
        buf = x.new_empty(B, width, N)  # [logit grads (backward) ; attention ; ones]
        saved = {"steps": []}
        slots_out, attns = iterate(sa, x, slots, num_iters, buf, saved)
        ctx.num_iters, ctx.implicit_grad, ctx.saved = num_iters, implicit_grad, saved
        ctx.straight_through = implicit_grad and sa.straight_through
        ctx.params = params
        ctx.save_for_backward(x)
        ctx.buf = buf  # not save_for_backward: the backward rewrites its gradient rows (fully, on every call)
        ctx.set_materialize_grads(False)
        return slots_out, attns

    @staticmethod
    def backward(ctx, d_slots, d_attns):
        if torch.is_grad_enabled():  # create_graph=True: the hand-written backward is not itself differentiable
            raise RuntimeError("SlotAttention's fast path has no double backward; use SlotAttention(fast=False)")
        (x,), buf = ctx.saved_tensors, ctx.buf
        T, saved, params = ctx.num_iters, ctx.saved, ctx.params
        B, _, Din = x.shape
        K = saved["steps"][0][0].shape[1]
        need_x = ctx.needs_input_grad[3]
        live = [i for i, p in enumerate(params) if ctx.needs_input_grad[5 + i]]
        live_params = [params[i] for i in live]
        d_params: list[Tensor | None] = [None] * len(params)
        rows = x.new_zeros(B, 2 * T * K + 1, Din)  # [q'_1..T ; dY_1..T ; d x_sum]
        x_sum = saved["x_sum"]  # (B, Din), a leaf of the small graphs
        d_init_straight = None  # straight_through: the last iteration's input-slot gradient, for the initial slots
        for t in reversed(range(T)):
            slots_t, q_x, offset, attn_x, attn_sum, out = saved["steps"][t]  # leaves and outputs of the graphs
            a = buf[:, (T + t) * K:(T + t + 1) * K]  # (B, K, N)
            d_a = None if d_attns is None else d_attns[:, t]  # (B, K, N)
            d_slots_t = None
            if d_slots is not None:  # through the update: GRU, MLP, weighted mean
                grads = torch.autograd.grad(out, [attn_x, attn_sum, x_sum, slots_t, *live_params], d_slots,
                                            allow_unused=True, retain_graph=True)
                d_attn_x, d_attn_sum, d_slots_t = grads[0], grads[1], grads[3]
                _accumulate(d_params, live, grads[4:])
                if grads[2] is not None:
                    rows[:, -1] += grads[2]
                rows[:, (T + t) * K:(T + t + 1) * K] = d_attn_x
                # d a = dY x^T + d s (broadcast over N)
                d_a_t = torch.baddbmm(d_attn_sum.unsqueeze(-1), d_attn_x, x.transpose(1, 2))  # (B, K, N)
                d_a = d_a_t if d_a is None else d_a_t.add_(d_a)
            if d_a is None:  # nothing reaches this iteration
                buf[:, t * K:(t + 1) * K] = 0
            else:  # softmax backward over slots, then the logits' gradients
                d_logits = torch._softmax_backward_data(d_a, a, 1, a.dtype)  # (B, K, N)
                buf[:, t * K:(t + 1) * K] = d_logits
                rows[:, t * K:(t + 1) * K] = q_x.detach()
                d_q_x = torch.bmm(d_logits, x)  # (B, K, Din)
                outs, grads_out = [q_x], [d_q_x]
                if offset is not None:
                    outs.append(offset)
                    grads_out.append(d_logits.sum(dim=-1))  # (B, K)
                grads = torch.autograd.grad(outs, [slots_t, *live_params], grads_out, allow_unused=True,
                                            retain_graph=True)  # a second backward (retain_graph) needs them
                _accumulate(d_params, live, grads[1:])
                d_slots_t = grads[0] if d_slots_t is None else d_slots_t + grads[0]
            if ctx.implicit_grad and t == T - 1:
                d_init_straight = d_slots_t if ctx.straight_through else None
                d_slots = None
            else:
                d_slots = d_slots_t
        if d_init_straight is not None:
            d_slots = d_init_straight if d_slots is None else d_slots + d_init_straight
        d_x = None
        if need_x:
            buf[:, -1] = 1
            d_x = torch.bmm(buf.transpose(1, 2), rows)  # (B, N, Din)
        return (None, None, None, d_x, d_slots, *d_params)


def _accumulate(total: list, live: list[int], grads) -> None:
    for i, g in zip(live, grads, strict=True):
        if g is not None:
            total[i] = g if total[i] is None else total[i] + g


def iteration_parameters(sa: nn.Module) -> list[Tensor]:
    """The parameters the iterations use (all but the input LayerNorm and the slot initialisation)."""
    parts = [sa.norm_slots, sa.to_q, sa.to_k, sa.to_v, sa.gru, sa.norm_mlp, sa.mlp]
    return [p for part in parts for p in part.parameters()]


def fast_iterations(sa: nn.Module, x: Tensor, slots: Tensor, num_iters: int) -> tuple[Tensor, Tensor]:
    """x = LayerNorm(inputs) (B, N, Din), initial slots (B, K, D) -> final slots (B, K, D), attns (B, T, K, N)."""
    params = iteration_parameters(sa)
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or slots.requires_grad
                                              or any(p.requires_grad for p in params))
    if not needs_grad:
        return iterate(sa, x, slots, num_iters)
    return _SlotIterations.apply(sa, num_iters, sa.implicit_grad, x, slots, *params)
