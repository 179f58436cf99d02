"""Benchmarks: the module, the training step and the GPU tables (``slotlab bench module | train | gpu``)."""
