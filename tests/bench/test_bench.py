import sys

import pytest
import torch

from slotlab.bench import module, train_step
from slotlab.cli import main
from slotlab.experiments import get_experiment


def test_parse_shape_presets_and_explicit():
    assert module.parse_shape("clevr6") == (8, 128 * 128, 64, 7)
    assert module.parse_shape("2x16x8x3") == (2, 16, 8, 3)
    with pytest.raises(ValueError, match="BxNxDxK"):
        module.parse_shape("2x16x8")


def test_plain_flops_is_dominated_by_the_projections_and_products():
    B, N, D, K = 8, 16384, 64, 7
    big = 3 * (4 * B * N * D * D + 3 * 4 * B * K * N * D)
    assert big < module.plain_flops(B, N, D, K) < 1.01 * big


def test_bench_module_cli_prints_a_table(capsys):
    pytest.importorskip("slot_attention")
    assert main(["bench", "module", "--threads", "1", "--rounds", "2", "--shapes", "2x16x8x3", "--no-memory"]) == 0
    table = capsys.readouterr().out
    for impl in module.IMPLS:
        assert f"| (2, 16, 8, 3) | {impl} |" in table


def test_bench_module_without_the_reference_package_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "slot_attention", None)  # as on an install without slotlab[test]
    assert main(["bench", "module", "--threads", "1", "--rounds", "1", "--shapes", "2x16x8x3", "--no-memory"]) == 1
    assert "pip install slot-attention" in capsys.readouterr().err


def _tiny_case(batch: int = 2) -> tuple:
    cfg = get_experiment("tetrominoes")
    m = cfg.model
    m.resolution, m.num_slots, m.slot_dim, m.mlp_hidden_dim = 8, 2, 8, 8
    m.encoder_channels = m.encoder_mlp_dim = m.decoder_channels = 4
    return "tiny_broadcast", cfg.to_dict(), batch


def test_train_flops_counts_the_plain_decoder_stem():
    case = train_step.parse_case("tetrominoes:4", 16)
    assert case[0] == "tetrominoes" and case[2] == 4
    cfg = get_experiment("tetrominoes").model
    stem = 2 * 3 * 35 * 35 * 25 * cfg.slot_dim * cfg.decoder_channels * cfg.num_slots  # per image
    assert stem < train_step.train_flops(cfg, 1) < 4 * stem
    assert train_step.train_flops(cfg, 4) == 4 * train_step.train_flops(cfg, 1)
    with pytest.raises(ValueError, match="NAME:BATCH"):
        train_step.parse_case("tetrominoes:x", 16)


def test_bench_train_rows_and_table_without_keras():
    rows = train_step.time_cases([_tiny_case()], threads=1, rounds=2, keras=False, peak_n=256)
    assert [r["impl"] for r in rows] == list(train_step.TRAIN_IMPLS)
    assert rows[0]["ratio"] == 1.0 and rows[1]["images_per_s"] > 0 and rows[2]["skipped"]
    table = train_step.format_train_table(rows)
    assert "| tiny_broadcast (2) | slotlab plain |" in table
    assert "| tiny_broadcast (2) | keras official | not run: skipped (--no-keras)" in table


def test_bench_train_keras_step_runs():
    pytest.importorskip("tensorflow", reason="tensorflow not installed")
    pytest.importorskip("tf_keras", reason="tf_keras not installed")
    steps, skipped = train_step.build_steps(_tiny_case(), keras=True)
    assert not skipped
    steps["keras official"]()
    assert train_step.keras_unsupported(get_experiment("tetrominoes_cpu").model) == "decoder='mlp'"


def test_bench_gpu_steps_and_parity_run_on_cpu_and_the_bench_needs_cuda(monkeypatch):
    from slotlab.bench import gpu

    modes = ["fp32 plain", "fp32", "bf16"]
    steps, models, images = gpu.build_steps("tiny", 2, modes, torch.device("cpu"))
    for name, step in steps.items():
        assert torch.isfinite(step()) and not bool(step.flag), name
    par = gpu.parity(models, images)
    assert par["fp32"] == (0.0, 0.0)
    assert par["fp32 plain"][1] < 1e-5  # exact fast paths vs the plain formulation
    assert 1e-5 < par["bf16"][1] < 0.1  # bf16 differs, within bf16's rounding
    row = {"mode": "fp32", "ms": 10.0, "images_per_s": 200.0, "vs_fp32": 1.0, "peak_mib": 5.0, "paper_hours": 1.4}
    table = gpu.format_gpu_tables([{"preset": "tiny", "batch": 2, "gpu": "X", "torch": "t", "rows": [row],
                                          "parity": par, "profiles": {}}])
    assert "| fp32 | 10.0 | 200 | 1.00x | 5 | 1.4 |" in table
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        gpu.bench_gpu([("tiny", 2)], modes)
    with pytest.raises(ValueError, match="NAME or NAME:BATCH"):
        gpu.parse_case("tiny:x", 4)


def test_benchmark_step_is_a_training_step_of_the_task():
    cfg = get_experiment("tiny")
    step = train_step.synthetic_step(cfg, 4, precision="fp32")
    losses = [float(step()) for _ in range(6)]
    assert losses[-1] < losses[0]  # Adam updates the model on the fixed batch
    again = train_step.synthetic_step(cfg, 4, precision="fp32")  # same seed: same weights, batch and first loss
    assert float(again()) == losses[0]
    with pytest.raises(ValueError, match="does not cover"):
        train_step.parse_case("tiny_set", 4)


def test_cpu_name_for_benchmark_headers():
    from slotlab.bench import cpu_name

    name = cpu_name()
    assert isinstance(name, str) and name.strip() == name and name
