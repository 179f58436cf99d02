"""Training-step images/s: slotlab / the plain formulation / the Keras official architecture, per preset.

A thin wrapper around ``slotlab bench train`` (see :mod:`slotlab.bench.train_step`); the same arguments:

    python benchmarks/bench_train.py --presets tetrominoes multi_dsprites clevr6:2 --threads 1 2 --rounds 5
    python benchmarks/bench_train.py --presets tetrominoes --threads 1 --rounds 3 --no-memory --no-keras
"""

from __future__ import annotations

import sys

from slotlab.cli import main  # sets OMP_WAIT_POLICY=PASSIVE before torch is imported

if __name__ == "__main__":
    sys.exit(main(["bench", "train", *sys.argv[1:]]))
