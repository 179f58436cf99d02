"""Slot Attention (Locatello et al., "Object-Centric Learning with Slot Attention", NeurIPS 2020, Algorithm 1).

A set of N input vectors is mapped to K slots by T rounds of attention whose softmax runs over the *slots*, so the
slots compete for the inputs; each round a GRU and a residual MLP refine the slots. Faithful to the official
TensorFlow code (google-research/slot_attention/model.py), including its Keras defaults:

- LayerNorm epsilon 1e-3 (Keras), not PyTorch's 1e-5;
- q, k, v projections without bias; q scaled by slot_dim ** -0.5;
- softmax over slots, then + eps, then normalised over the inputs (a weighted mean);
- GRU state = the slots *before* LayerNorm; residual MLP after the GRU;
- learned mu and log-sigma (glorot-uniform init), with fresh Gaussian noise on every call, train and test;
- glorot-uniform kernels, zero biases, orthogonal GRU recurrent kernel.

Glossary: B batch, N inputs, K slots, D slot_dim, T iterations.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slotlab.nn.fast_attention import fast_iterations
from slotlab.nn.precision import fp32, full_precision


def _noise_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped like ``x`` (on its device, in its dtype), from ``generator`` if given (drawn on
    the generator's device, then moved: the same numbers on any device)."""
    if generator is None:  # randn_like: traceable by torch.compile with a symbolic batch size
        return torch.randn_like(x, memory_format=torch.contiguous_format)
    noise = torch.randn(x.shape, dtype=x.dtype, generator=generator, device=generator.device)
    return noise.to(x.device)


class SlotCore(nn.Module):
    """What every Slot Attention module shares: the sizes, the LayerNorms, the q / k / v projections, the GRU and
    residual MLP that refine the slots, the initial-slot distribution (or learned initial slots), and their
    Keras-equivalent initialisation. :class:`SlotAttention` and
    :class:`slotlab.nn.invariant.InvariantSlotAttention` add their attention on top.

    ``key_layers`` ({name: module}) are further layers of a subclass's key path, registered right after the
    projections: the registration order fixes the order of the parameters, and with it of the optimizer state
    saved in checkpoints.

    Both modules return ``slots`` (B, K, D), ``attn`` (B, K, N) and ``attns`` (B, T, K, N): the attention
    (softmax over slots) that produced each of the T slot updates, and ``attn``, the attention that assigns the
    inputs to the final slots (the masks of ``model.mask_source="attention"``).
    """

    def __init__(self, num_slots: int, input_dim: int, slot_dim: int, num_iters: int, mlp_hidden_dim: int,
                 eps: float, *, qkv_bias: bool, ln_eps: float, slot_init: str,
                 key_layers: dict[str, nn.Module] | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        for key, value in [("num_slots", num_slots), ("input_dim", input_dim), ("slot_dim", slot_dim),
                           ("num_iters", num_iters), ("mlp_hidden_dim", mlp_hidden_dim)]:
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: {key} must be a positive int, got {value!r}")
        if slot_init not in ("random", "learned", "farthest"):
            raise ValueError(f"{name}: slot_init must be 'random', 'learned' or 'farthest', got {slot_init!r}")
        self.num_slots = num_slots
        self.input_dim = input_dim
        self.slot_dim = slot_dim
        self.num_iters = num_iters
        self.test_iters: int | None = None  # T in eval mode when a call gives none (None: num_iters); see iterations
        self.eps = eps
        self.temperature = 1.0  # attention logits are divided by it (a training schedule may set it; models.set_step)
        self.slot_init = slot_init

        self.norm_inputs = nn.LayerNorm(input_dim, eps=ln_eps)
        self.norm_slots = nn.LayerNorm(slot_dim, eps=ln_eps)
        self.norm_mlp = nn.LayerNorm(slot_dim, eps=ln_eps)
        self.to_q = nn.Linear(slot_dim, slot_dim, bias=qkv_bias)
        self.to_k = nn.Linear(input_dim, slot_dim, bias=qkv_bias)
        self.to_v = nn.Linear(input_dim, slot_dim, bias=qkv_bias)
        for key, layer in (key_layers or {}).items():
            self.add_module(key, layer)
        self.gru = nn.GRUCell(slot_dim, slot_dim)
        self.mlp = nn.Sequential(nn.Linear(slot_dim, mlp_hidden_dim), nn.ReLU(), nn.Linear(mlp_hidden_dim, slot_dim))
        self.slots_mu = nn.Parameter(torch.empty(1, 1, slot_dim))
        self.slots_log_sigma = nn.Parameter(torch.empty(1, 1, slot_dim))
        if slot_init == "learned":  # one learned initial vector per slot (BO-QSA); more slots: see init_slots
            self.slots_init = nn.Parameter(torch.empty(1, num_slots, slot_dim))
            for unused in (self.slots_mu, self.slots_log_sigma):  # kept for checkpoints; no gradient, no update
                unused.requires_grad_(False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Keras-equivalent initialisation (glorot-uniform kernels, zero biases, orthogonal recurrent kernel)."""
        keras_reset_(self)

    @property
    def scale(self) -> float:
        """The attention logits' scale: slot_dim ** -0.5 (the paper) divided by ``temperature``."""
        return self.slot_dim**-0.5 / self.temperature

    def iterations(self, num_iters: int | None) -> int:
        """T for a call: ``num_iters`` when given, else ``test_iters`` in eval mode (when set), else ``num_iters``
        of the constructor. A model trained with implicit gradients approaches a fixed point of the update, so more
        iterations at test time than in training can help; ``model.test_iters`` is chosen on validation scenes."""
        if num_iters is not None:
            return num_iters
        return self.test_iters if (self.test_iters and not self.training) else self.num_iters

    def init_slots(self, batch_size: int, num_slots: int, generator: torch.Generator | None = None) -> Tensor:
        """Initial slots (B, K, D): mu + sigma * noise, a fresh draw on every call (``slot_init="random"``), or the
        learned ones (``"learned"``). With learned slots, ``num_slots`` above the trained K keeps the K learned
        slots and draws the extra ones around them: noise with the mean and the standard deviation (over the K
        learned slots, per dimension) of the learned vectors. Fewer slots than K are refused (which learned slots
        to drop is undefined). ``generator`` (on any device) makes the noise reproducible. ``"farthest"`` depends
        on the inputs: :meth:`SlotAttention.farthest_slots`."""
        if self.slot_init == "farthest":
            raise ValueError(f"{type(self).__name__}: slot_init='farthest' seeds the slots from the inputs; "
                             "call the module on them (SlotAttention.farthest_slots)")
        if self.slot_init == "learned":
            learned = self.slots_init.expand(batch_size, -1, -1)  # (B, K, D)
            extra = num_slots - self.num_slots
            if extra == 0:
                return learned
            if extra < 0:
                raise ValueError(f"slot_init='learned' has K={self.num_slots} learned initial slots; "
                                 f"num_slots={num_slots} would drop some (more than K are allowed)")
            mu = self.slots_init.mean(dim=1, keepdim=True).expand(batch_size, extra, -1)  # (B, extra, D)
            sigma = self.slots_init.std(dim=1, unbiased=False, keepdim=True)  # (1, 1, D)
            return torch.cat([learned, mu + sigma * _noise_like(mu, generator)], dim=1)
        mu = self.slots_mu.expand(batch_size, num_slots, -1)
        return mu + self.slots_log_sigma.exp() * _noise_like(mu, generator)

    def refine(self, updates: Tensor, slots_prev: Tensor) -> Tensor:
        """GRU (state = the slots before LayerNorm) then the residual MLP: (B, K, D), (B, K, D) -> (B, K, D)."""
        B, K, D = updates.shape
        slots = self.gru(updates.reshape(B * K, D), slots_prev.reshape(B * K, D)).reshape(B, K, D)
        return slots + self.mlp(self.norm_mlp(slots))


class SlotAttention(SlotCore):
    """The Slot Attention module.

    Args:
        num_slots: default K (can be overridden per call).
        input_dim: feature size of the inputs.
        slot_dim: D, size of each slot (64 in the paper).
        num_iters: default T (3 in the paper; can be overridden per call).
        mlp_hidden_dim: hidden size of the residual MLP (128 in the paper).
        eps: added to the attention after the softmax, before the weighted mean (1e-8 in the paper).
        qkv_bias: give q, k, v a bias (False in the paper; True to match lucidrains' slot-attention).
        ln_eps: LayerNorm epsilon (1e-3 = Keras, as the paper; 1e-5 to match PyTorch-default ports).
        implicit_grad: detach the slots before the last iteration (Chang et al., 2022). Changes gradients only.
        straight_through: with ``implicit_grad``, the gradient stopped before the last iteration goes straight to
            the initial slots instead (BO-QSA's bi-level optimisation, Jia et al. 2023: the learned initial slots
            are then trained as if they were the last iteration's input). Changes gradients only.
        slot_init: "random" (the paper: mu + sigma * noise, shared by all slots) or "learned" (one learned initial
            vector per slot, as BO-QSA, Jia et al. 2023: breaks the symmetry between slots; a call may ask for more
            slots than K, not fewer: :meth:`SlotCore.init_slots`).
        fast: use the fast path (:mod:`slotlab.nn.fast_attention`: same mathematics, k and v never built, a
            hand-written backward; no double backward) whenever the call allows it (no ``input_mask``, no
            autocast) and has at least ``fast_min_inputs`` = 2048 inputs B*N (below that, per-call overhead makes
            it slower than the plain path). False runs the plain path, the reference the parity tests compare
            against. Both are attributes too.
    """

    def __init__(
        self,
        num_slots: int,
        input_dim: int,
        slot_dim: int = 64,
        num_iters: int = 3,
        mlp_hidden_dim: int = 128,
        eps: float = 1e-8,
        *,
        qkv_bias: bool = False,
        ln_eps: float = 1e-3,
        implicit_grad: bool = False,
        straight_through: bool = False,
        slot_init: str = "random",
        fast: bool = True,
    ) -> None:
        if straight_through and not implicit_grad:
            raise ValueError("SlotAttention: straight_through=True needs implicit_grad=True (it routes the gradient "
                             "that implicit_grad stops)")
        super().__init__(num_slots, input_dim, slot_dim, num_iters, mlp_hidden_dim, eps, qkv_bias=qkv_bias,
                         ln_eps=ln_eps, slot_init=slot_init)
        self.implicit_grad = implicit_grad
        self.straight_through = straight_through
        self.fast = fast
        self.fast_min_inputs = 2048  # B*N; measured break-even of the fast path on a 2-core CPU (docs/performance.md)
        self.check_finite = True  # models that validate their own inputs turn this per-call check off

    def forward(
        self,
        inputs: Tensor,
        *,
        num_slots: int | None = None,
        num_iters: int | None = None,
        slots: Tensor | None = None,
        input_mask: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Run T iterations of Slot Attention.

        Args:
            inputs: (B, N, input_dim) features.
            num_slots: K for this call (default: the constructor's); ignored when ``slots`` is given.
            num_iters: T for this call (default: the constructor's).
            slots: explicit initial slots (B, K, D); default: a fresh draw from N(mu, sigma^2).
            input_mask: (B, N) bool, True marks *padded* inputs that receive no attention.

        Returns:
            ``slots`` (B, K, D) final slots; ``attns`` (B, T, K, N) every iteration's attention (softmax over
            slots, before the renormalisation over inputs); ``attn`` (B, K, N) the last iteration's, ``attns[:, -1]``
            (:class:`SlotCore`); ``init_slots`` (B, K, D) the initial slots used.
        """
        num_iters = self.iterations(num_iters)
        self._check(inputs, num_slots, num_iters, slots, input_mask)
        dtype = self.norm_inputs.weight.dtype  # the dtype rule: floating inputs are cast to the module's dtype
        if inputs.dtype != dtype and not torch.is_autocast_enabled(inputs.device.type):
            inputs = inputs.to(dtype)
            slots = None if slots is None else slots.to(dtype)
        B, N, _ = inputs.shape
        inputs = self.norm_inputs(inputs)
        if slots is None and self.slot_init == "farthest":
            slots = self.farthest_slots(inputs, num_slots or self.num_slots, input_mask)
        elif slots is None:
            slots = self.init_slots(B, num_slots or self.num_slots).to(inputs.dtype)
        init_slots = slots

        if self._use_fast(inputs, input_mask):
            slots, attns = fast_iterations(self, inputs, slots, num_iters)
            return {"slots": slots, "attn": attns[:, -1], "attns": attns, "init_slots": init_slots}
        k = self.to_k(inputs) * self.scale  # (B, N, D); scaling k equals scaling q, and is done once, not T times
        v = fp32(self.to_v(inputs))  # (B, N, D); fp32 under bf16 autocast, for the weighted mean
        keep = None if input_mask is None else (~input_mask).unsqueeze(1).to(inputs.dtype)  # (B, 1, N)

        attns = []
        for it in range(num_iters):
            if self.implicit_grad and it == num_iters - 1:
                slots = slots.detach()
                if self.straight_through:  # same value; the gradient goes to the initial slots (BO-QSA)
                    slots = slots + (init_slots - init_slots.detach())
            slots, attn = self.step(slots, k, v, keep)
            attns.append(attn)
        return {"slots": slots, "attn": attns[-1], "attns": torch.stack(attns, dim=1), "init_slots": init_slots}

    def farthest_slots(self, inputs: Tensor, num_slots: int, input_mask: Tensor | None = None) -> Tensor:
        """Data-dependent initial slots (``slot_init="farthest"``): the values v = to_v(x) of K inputs picked by
        farthest-point sampling in value space, the first the farthest from the mean value, each next one the
        farthest from those already picked. (B, N, Din) normalised inputs -> (B, K, D); the choice has no gradient,
        the picked values do (through to_v). Deterministic: no noise."""
        available = inputs.shape[1] if input_mask is None else int((~input_mask).sum(dim=1).min())
        if num_slots > available:
            raise ValueError(f"{type(self).__name__}: slot_init='farthest' picks K={num_slots} distinct inputs, but "
                             f"an item has only {available} (unpadded) inputs")
        v = self.to_v(inputs)  # (B, N, D)
        with torch.no_grad():
            points = v.detach().float()
            B = points.shape[0]
            rows = torch.arange(B, device=points.device)
            keep = torch.ones_like(points[..., 0]) if input_mask is None else (~input_mask).float()  # (B, N)
            mean = (points * keep[..., None]).sum(1, keepdim=True) / keep.sum(1, keepdim=True)[..., None]
            distance = (points - mean).square().sum(-1)  # (B, N) from the mean of the real inputs
            if input_mask is not None:
                distance = distance.masked_fill(input_mask, -math.inf)
            picks = []
            for _ in range(num_slots):
                pick = distance.argmax(dim=1)  # (B,)
                picks.append(pick)
                to_pick = (points - points[rows, pick][:, None]).square().sum(-1)  # (B, N)
                distance = torch.minimum(distance, to_pick) if len(picks) > 1 else to_pick
                if input_mask is not None:
                    distance = distance.masked_fill(input_mask, -math.inf)
            index = torch.stack(picks, dim=1)  # (B, K)
        return v.gather(1, index[..., None].expand(-1, -1, v.shape[-1])).to(inputs.dtype)

    def _use_fast(self, inputs: Tensor, input_mask: Tensor | None) -> bool:
        return (self.fast and input_mask is None and inputs.shape[0] * inputs.shape[1] >= self.fast_min_inputs
                and not torch.is_autocast_enabled(inputs.device.type))

    def step(self, slots: Tensor, k: Tensor, v: Tensor, keep: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One iteration: (B, K, D) slots, (B, N, D) scaled keys and values -> new slots, attention (B, K, N)."""
        q = self.to_q(self.norm_slots(slots))  # (B, K, D)
        logits = torch.bmm(q, k.transpose(1, 2))  # (B, K, N)
        # softmax over slots: slots compete for every input; in fp32 under autocast, as is what follows (precision.py)
        attn = fp32(logits).softmax(dim=1)
        if keep is not None:
            attn = attn * keep  # padded inputs get no attention
        weights = attn + self.eps
        if keep is not None:
            weights = weights * keep
        weights = weights / weights.sum(dim=-1, keepdim=True)  # weighted mean over the inputs
        with full_precision(weights):
            updates = torch.bmm(weights, v)  # (B, K, D)
        return self.refine(updates, slots), attn

    def _check(self, inputs, num_slots, num_iters, slots, input_mask) -> None:
        if not isinstance(inputs, Tensor) or inputs.dim() != 3 or inputs.shape[-1] != self.input_dim:
            got = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
            raise ValueError(f"SlotAttention: inputs must be (B, N, input_dim={self.input_dim}), got {got}")
        if not inputs.is_floating_point():
            raise TypeError(f"SlotAttention: inputs must be a floating-point tensor, got {inputs.dtype}")
        if inputs.shape[1] == 0:
            raise ValueError("SlotAttention: inputs have N = 0 elements; need at least one input")
        # a NaN or Inf makes the sum non-finite: one cheap pass; the full check only when the sum overflows
        if self.check_finite and not torch.isfinite(inputs.sum()) and not torch.isfinite(inputs).all():
            raise ValueError("SlotAttention: inputs contain NaN or Inf")
        if num_iters < 1:
            raise ValueError(f"SlotAttention: num_iters must be >= 1, got {num_iters}")
        if num_slots is not None and num_slots < 1:
            raise ValueError(f"SlotAttention: num_slots must be >= 1, got {num_slots}")
        if slots is not None:
            B = inputs.shape[0]
            if slots.dim() != 3 or slots.shape[0] != B or slots.shape[2] != self.slot_dim:
                raise ValueError(
                    f"SlotAttention: slots must be (B={B}, K, slot_dim={self.slot_dim}), got {tuple(slots.shape)}"
                )
            if num_slots is not None and num_slots != slots.shape[1]:
                raise ValueError(f"SlotAttention: num_slots={num_slots} but slots has K={slots.shape[1]}")
            if slots.shape[1] < 1:
                raise ValueError("SlotAttention: slots has K = 0 slots; need at least one")
            if not slots.is_floating_point() or not bool(torch.isfinite(slots).all()):
                raise ValueError(f"SlotAttention: slots must be finite floats, got {slots.dtype} with NaN or Inf"
                                 if slots.is_floating_point() else f"SlotAttention: slots must be float, got "
                                 f"{slots.dtype}")
        if input_mask is not None:
            if input_mask.dtype != torch.bool or tuple(input_mask.shape) != tuple(inputs.shape[:2]):
                raise ValueError(
                    f"SlotAttention: input_mask must be bool (B, N) = {tuple(inputs.shape[:2])}, "
                    f"got {input_mask.dtype} {tuple(input_mask.shape)}"
                )
            if input_mask.all(dim=1).any():
                raise ValueError("SlotAttention: input_mask masks every input of some batch element")

    @classmethod
    def from_lucidrains(cls, module: nn.Module) -> SlotAttention:
        """Build an equivalent slotlab module, with the weights, from ``slot_attention.SlotAttention`` (PyPI).

        lucidrains' module uses q/k/v with bias, PyTorch LayerNorm eps 1e-5, input_dim = slot_dim and an MLP
        hidden size of max(dim, hidden_dim); the mathematics is otherwise the same.
        """
        dim = module.dim
        hidden = module.mlp[0].out_features
        ln_eps = module.norm_input.eps
        new = cls(module.num_slots, dim, slot_dim=dim, num_iters=module.iters, mlp_hidden_dim=hidden,
                  eps=module.eps, qkv_bias=True, ln_eps=ln_eps)
        mapping = {
            "norm_inputs": "norm_input", "norm_slots": "norm_slots", "norm_mlp": "norm_pre_ff",
            "to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "gru": "gru", "mlp": "mlp",
        }
        with torch.no_grad():
            for ours, theirs in mapping.items():
                getattr(new, ours).load_state_dict(getattr(module, theirs).state_dict())
            new.slots_mu.copy_(module.slots_mu)
            new.slots_log_sigma.copy_(module.slots_logsigma)
        return new.to(module.slots_mu.device, module.slots_mu.dtype)


def keras_reset_(module: nn.Module) -> None:
    """Initialise a slot-attention module as Keras would: every Linear glorot-uniform with zero bias; the GRU's
    kernel (in, 3D) glorot-uniform, recurrent kernel (D, 3D) orthogonal, biases zero; mu and log-sigma, (1, 1, D)
    variables, glorot-uniform with fan_in = 1 and fan_out = D; learned initial slots glorot-uniform; LayerNorms 1, 0.
    """
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            m.reset_parameters()
    nn.init.xavier_uniform_(module.gru.weight_ih)
    nn.init.orthogonal_(module.gru.weight_hh)
    nn.init.zeros_(module.gru.bias_ih)
    nn.init.zeros_(module.gru.bias_hh)
    limit = math.sqrt(6.0 / (1 + module.slot_dim))
    nn.init.uniform_(module.slots_mu, -limit, limit)
    nn.init.uniform_(module.slots_log_sigma, -limit, limit)
    if module.slot_init == "learned":
        nn.init.xavier_uniform_(module.slots_init[0])


def slot_attention_reference(module: SlotAttention, inputs: Tensor, slots: Tensor, num_iters: int) -> Tensor:
    """The plain, line-by-line Algorithm 1 (scale on q, separate softmax/eps/normalise), for parity tests."""
    inputs = module.norm_inputs(inputs)
    k, v = module.to_k(inputs), module.to_v(inputs)
    for _ in range(num_iters):
        slots_prev = slots
        q = module.to_q(module.norm_slots(slots)) * module.scale
        attn = F.softmax(torch.einsum("bnd,bkd->bnk", k, q), dim=-1)  # (B, N, K), softmax over slots
        attn = attn + module.eps
        attn = attn / attn.sum(dim=1, keepdim=True)
        updates = torch.einsum("bnk,bnd->bkd", attn, v)
        B, K, D = updates.shape
        slots = module.gru(updates.reshape(-1, D), slots_prev.reshape(-1, D)).reshape(B, K, D)
        slots = slots + module.mlp(module.norm_mlp(slots))
    return slots
