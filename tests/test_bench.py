import pytest

from slotlab import bench
from slotlab.cli import main


def test_parse_shape_presets_and_explicit():
    assert bench.parse_shape("clevr6") == (8, 128 * 128, 64, 7)
    assert bench.parse_shape("2x16x8x3") == (2, 16, 8, 3)
    with pytest.raises(ValueError, match="BxNxDxK"):
        bench.parse_shape("2x16x8")


def test_plain_flops_is_dominated_by_the_projections_and_products():
    B, N, D, K = 8, 16384, 64, 7
    big = 3 * (4 * B * N * D * D + 3 * 4 * B * K * N * D)
    assert big < bench.plain_flops(B, N, D, K) < 1.01 * big


def test_bench_module_cli_prints_a_table(capsys):
    pytest.importorskip("slot_attention")
    assert main(["bench", "module", "--threads", "1", "--rounds", "2", "--shapes", "2x16x8x3", "--no-memory"]) == 0
    table = capsys.readouterr().out
    for impl in bench.IMPLS:
        assert f"| (2, 16, 8, 3) | {impl} |" in table
