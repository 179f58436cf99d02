"""report.html: the task's test line, a validation table of the task's metrics, the pictures embedded."""

import base64
import json

from slotlab.experiments import get_experiment
from slotlab.report import write_report


def fake_run(workdir, preset, val, test=None):
    """A run directory without training: config, metrics rows and (optionally) test metrics."""
    get_experiment(preset).save(workdir / "config.json")
    rows = [{"kind": "train", "step": 2, "train_seconds": 30.0, "loss": 0.1},
            {"kind": "val", "step": 2, "train_seconds": 60.0, **val}]
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if test is not None:
        (workdir / "test_metrics.json").write_text(json.dumps(test))


def test_object_discovery_report(tmp_path):
    val = {"fg_ari": 0.5, "ari": 0.25, "mbo": 0.125, "mse": 0.01}
    test = {"fg_ari": 0.875, "ari": 0.5, "mbo": 0.625, "mse": 0.002, "num_scenes": 16, "data": "test"}
    fake_run(tmp_path, "tiny", val, test)
    picture = tmp_path / "scenes.png"
    picture.write_bytes(b"\x89PNG fake bytes")
    page = write_report(tmp_path, {picture: "Input & <masks>"}).read_text()
    assert "FG-ARI 87.5  ARI 50.0  mBO 62.5" in page  # the task's format of test_metrics.json
    assert "<th>FG-ARI</th><th>ARI</th><th>mBO</th>" in page
    assert "<td>2</td><td>1.0</td><td>50.0</td><td>25.0</td><td>12.5</td>" in page  # step, minutes, metrics
    assert base64.b64encode(picture.read_bytes()).decode() in page
    assert "Input &amp; &lt;masks&gt;" in page
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_set_prediction_report_without_test_metrics(tmp_path):
    val = {"ap_inf": 0.5, "ap_1": 0.25, "ap_0.5": 0.125, "ap_0.25": 0.0, "ap_0.125": 0.0, "ap_mean": 0.175,
           "loss": 0.3}
    fake_run(tmp_path, "tiny_set", val)
    page = write_report(tmp_path, {tmp_path / "missing.png": ""}).read_text()
    assert "<th>AP(inf)</th>" in page and "FG-ARI" not in page
    assert "<td>50.0</td><td>25.0</td><td>12.5</td>" in page
    assert "(missing missing.png)" in page and "checkpoint chosen on validation" not in page
