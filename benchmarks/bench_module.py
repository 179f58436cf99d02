"""Slot Attention module forward + backward: slotlab fast / plain versus lucidrains' slot-attention.

A thin wrapper around ``slotlab bench module`` (see :mod:`slotlab.bench.module`); the same arguments:

    python benchmarks/bench_module.py --threads 1 2 --rounds 5
    python benchmarks/bench_module.py --threads 1 --rounds 3 --shapes 8x4096x64x7 --no-memory
"""

from __future__ import annotations

import sys

from slotlab.cli import main  # sets OMP_WAIT_POLICY=PASSIVE before torch is imported

if __name__ == "__main__":
    sys.exit(main(["bench", "module", *sys.argv[1:]]))
