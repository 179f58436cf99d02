"""Scratch probe for the GPU lease: why does train.compile fall back on multi_dsprites (CUDA)? Prints tracebacks."""
import logging
import sys
import traceback

import torch
import torch.nn.functional as F

from slotlab import compilation
from slotlab.experiments import get_experiment
from slotlab.models import build_model
from slotlab.precision import autocast

logging.basicConfig(level=logging.INFO)
preset = sys.argv[1] if len(sys.argv) > 1 else "multi_dsprites"
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 64
cfg = get_experiment(preset)
dev = torch.device("cuda")
m = build_model(cfg.model).to(dev)
x = torch.rand(batch, 3, cfg.model.resolution, cfg.model.resolution, device=dev) * 2 - 1


def loss():
    with autocast("bf16", dev):
        out = m(x)
    return F.mse_loss(out["recon"], x)


orig = compilation.CompiledParts.fall_back


def fb(self, where, err):
    print("=== FAILURE in", where)
    traceback.print_exception(err, limit=-12)
    orig(self, where, err)


compilation.CompiledParts.fall_back = fb
g = compilation.compile_model(m, loss, attention=True)
print(g.names, g.failed)
