import json

import pytest

from slotlab.cli import main


def test_experiments_lists_presets(capsys):
    assert main(["experiments"]) == 0
    assert "tetrominoes_cpu" in capsys.readouterr().out


def test_data_generate_then_eval_on_it(tmp_path, capsys):
    assert main(["data", "generate", "tetrominoes", "--out", str(tmp_path / "d"), "--num", "8", "--seed", "3"]) == 0
    meta = json.loads((tmp_path / "d" / "meta.json").read_text())
    assert meta["num"] == 8 and meta["seed"] == 3
    run = tmp_path / "run"
    assert main(["train", "--experiment", "tiny", "--workdir", str(run), "--no-progress"]) == 0
    out = tmp_path / "m.json"
    assert main(["eval", "--workdir", str(run), "--data", f"cache:{tmp_path / 'd'}", "--json", str(out),
                 "--num-iters", "5", "--num-slots", "6"]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["num_scenes"] == 8 and "FG-ARI" in capsys.readouterr().out
    # viz draws the scenes named by --data, like eval
    assert main(["viz", "--workdir", str(run), "--data", f"cache:{tmp_path / 'd'}", "--out",
                 str(tmp_path / "v.png"), "--num-scenes", "2"]) == 0
    assert (tmp_path / "v.png").stat().st_size > 1000
    assert main(["viz", "--workdir", str(run), "--data", f"cache:{tmp_path / 'missing'}", "--out",
                 str(tmp_path / "w.png")]) == 2
    assert "missing" in capsys.readouterr().err
    assert main(["eval", "--workdir", str(run), "--device", "tpu"]) == 2  # a device that is not one
    assert "eval --device must be" in capsys.readouterr().err


def test_demo_writes_report_and_pictures(tmp_path):
    run = tmp_path / "demo"
    assert main(["demo", "--workdir", str(run), "--experiment", "tiny"]) == 0
    for name in ["report.html", "scenes.png", "scenes_attention.png", "curves.png", "test_metrics.json"]:
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    assert "FG-ARI" in (run / "report.html").read_text()
    assert main(["demo", "--workdir", str(run), "--experiment", "tiny"]) == 0  # a second demo continues the run


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--experiment", "tetrominos", "--workdir", "{tmp}/x"], "did you mean 'tetrominoes'"),
        (["train", "--experiment", "tiny", "--workdir", "{tmp}/x", "--set", "train.lrr=1"], "did you mean 'train.lr'"),
        (["eval", "--workdir", "{tmp}/missing"], "run directory not found"),
        (["viz", "--workdir", "{tmp}/missing", "--out", "{tmp}/a.png"], "run directory not found"),
        (["data", "generate", "clevr", "--out", "{tmp}/d", "--num", "3"], "unknown built-in dataset"),
        (["data", "generate", "tetrominoes", "--out", "{tmp}/d", "--num", "0"], "num"),
        (["train", "--experiment", "tiny", "--workdir", "{tmp}/x", "--set", "data.train_size=0"], "empty dataset"),
    ],
)
def test_bad_input_gets_a_clear_error(tmp_path, capsys, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_bug_is_not_reported_as_bad_input(tmp_path, capsys, monkeypatch):
    """A KeyError or TypeError from a failed lookup inside the code shows its traceback and exits 1; slotlab's own
    refusals (raised with a message) stay one line and exit 2."""
    import slotlab.cli as cli

    def broken(args):
        return {}["missing"]  # a bug: a lookup that fails inside the code

    monkeypatch.setattr(cli, "_dispatch", broken)
    assert main(["experiments"]) == 1
    err = capsys.readouterr().err
    assert "internal error: KeyError" in err and "Traceback" in err
    monkeypatch.undo()
    assert main(["train", "--experiment", "nope", "--workdir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "unknown experiment 'nope'" in err and "Traceback" not in err
