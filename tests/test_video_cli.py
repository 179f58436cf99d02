"""The video task through the one CLI: train (tiny SAVi), eval on whole videos, viz (strip + GIF), the report."""

import json

from PIL import Image

from slotlab.cli import main
from slotlab.report import write_report
from slotlab.runs import viz_run


def test_train_eval_viz_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SLOTLAB_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert main(["train", "--experiment", "tiny_video", "--workdir", str(run), "--no-progress"]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r["kind"] == "val"]
    assert val and {"fg_ari", "ari", "frame_fg_ari", "mbo", "mse"} <= set(val[-1])
    assert main(["eval", "--workdir", str(run), "--json", str(run / "test_metrics.json")]) == 0
    assert "video FG-ARI" in capsys.readouterr().out
    result = json.loads((run / "test_metrics.json").read_text())
    assert result["num_videos"] == 4 and 0 <= result["mbo"] <= 1
    assert main(["eval", "--workdir", str(run), "--num-iters", "2"]) == 2
    assert "drop --num-slots / --num-iters" in capsys.readouterr().err
    assert main(["viz", "--workdir", str(run), "--out", str(run / "scenes.png")]) == 0
    with Image.open(run / "scenes.gif") as gif:
        assert gif.n_frames == 4  # the whole 4-frame test video, not a training clip
    pictures = viz_run(run, run / "scenes.png")
    assert set(pictures) == {run / "scenes.png", run / "scenes.gif"}
    report = write_report(run, pictures).read_text()
    assert "data:image/gif;base64" in report and "video FG-ARI" in report


def test_video_errors_are_reported_not_raised(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SLOTLAB_CACHE", str(tmp_path / "cache"))
    code = main(["train", "--experiment", "tiny_video", "--workdir", str(tmp_path / "r"), "--no-progress",
                 "--set", "data.clip_length=9"])
    assert code == 2 and "clip_length=9 is longer than the videos" in capsys.readouterr().err
    code = main(["train", "--experiment", "tiny_video", "--workdir", str(tmp_path / "r2"), "--no-progress",
                 "--set", "model.num_slots=3"])
    assert code == 2 and "more than the model.num_slots=3 slots" in capsys.readouterr().err
