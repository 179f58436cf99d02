"""The device a run trains on, and data-parallel training across processes with torchrun (DDP).

``slotlab train`` is the same command on one process or many: under ``torchrun`` (which sets ``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) it joins the process group (NCCL on GPUs, Gloo on CPUs),
each rank takes an equal share of every batch, and ``DistributedDataParallel`` averages the gradients::

    torchrun --nproc_per_node=8 -m slotlab train --experiment clevr6 --workdir runs/clevr6 \\
        --set train.precision=bf16 --set train.compile=true
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 -m slotlab train ...

``train.batch_size`` stays the *global* batch (the paper's 64 is 64 on any number of GPUs) and must divide by the
number of processes; the batches are the single-process run's, split by rank, so the gradient is the same
average (tests/test_distributed.py checks the weights against one process). Rank 0 alone evaluates, logs and
writes checkpoints; a killed run resumes with ``--resume`` on the same number of processes (every rank reads the
checkpoint, so several machines need a shared run directory). Only rank 0's random state is saved: after a resume
the other ranks' initial-slot noise is reseeded from (seed, rank, step), so a resumed multi-process run is not
bitwise the uninterrupted one (a single-process run is).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


def resolve_device(spec: str, what: str = "train.device") -> torch.device:
    """``train.device`` (or ``what``): "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N" -> a
    torch.device."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as err:
        raise ValueError(f"{what} must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {spec!r}") from err
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"{what} must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {spec!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{what}={spec!r} but CUDA is not available here; use 'cpu' or 'auto'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{what}={spec!r} but this machine has {torch.cuda.device_count()} GPU(s)")
    return device


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run: ``rank`` of ``world_size`` processes, training on ``device``."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    owns_group: bool = False  # this run initialised the process group (and destroys it at the end)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def max(self, value: float) -> float:
        """The largest ``value`` over the ranks (the value itself on one process)."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.item())

    def any(self, flag: torch.Tensor) -> bool:
        """Whether a bool ``flag`` is set on any rank."""
        if not self.enabled:
            return bool(flag)
        t = flag.to(torch.int32).reshape(1)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self) -> None:
        if self.enabled:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def setup(device_spec: str) -> Distributed:
    """One process (no ``WORLD_SIZE`` > 1 in the environment), or this rank of a torchrun job: join the process
    group, and on GPUs take the GPU ``LOCAL_RANK``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_spec)
    if world_size <= 1:
        return Distributed(device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK={local_rank} but this machine has {torch.cuda.device_count()} GPU(s); "
                             "start at most one process per GPU (torchrun --nproc_per_node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        # rank 0 evaluates and writes checkpoints while the others wait in a barrier: a generous timeout
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=2))
    return Distributed(device, rank, world_size, owns)
