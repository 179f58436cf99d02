"""A self-contained HTML report of a run: the config, the test metrics, the pictures and the curves."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from slotlab.rundir import RunDir, atomic_write
from slotlab.tasks import get_task
from slotlab.viz import read_metrics, save_curves


def _img(path: Path) -> str:
    """The picture embedded (PNG, or an animated GIF)."""
    if not path.is_file():
        return f"<p>(missing {html.escape(path.name)})</p>"
    data = base64.b64encode(path.read_bytes()).decode()
    mime = "image/gif" if path.suffix.lower() == ".gif" else "image/png"
    return f'<img src="data:{mime};base64,{data}" style="max-width:100%">'


def _cell(key: str, value) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    return f"{value:.5f}" if key in ("mse", "loss") else f"{100 * value:.1f}"


def _comparison(comparison: dict | None) -> str:
    """The section of :func:`slotlab.compare.compare_with_zoo`'s result: both models, their cost, their test
    metrics and their pictures of the same scenes ("" without one)."""
    if not comparison:
        return ""
    task = comparison["task"]
    rows = "".join(f"<tr><td style='text-align:left'>{html.escape(r['model'])}</td>"
                   f"<td style='text-align:left'>{html.escape(r['cost'])}</td>"
                   f"<td style='text-align:left'>{html.escape(task.format(r))}</td></tr>" for r in comparison["rows"])
    shown = "".join(f"<p>{html.escape(caption)}</p>{_img(Path(path))}"
                    for path, caption in comparison["pictures"].items())
    return (f"<h2>Beside the shipped model</h2><p>This run and the shipped model on the same held-out scenes "
            f"({html.escape(comparison['scenes'])}), which neither trained on.</p>"
            f"<table><tr><th>model</th><th>training cost</th><th>test</th></tr>{rows}</table>{shown}")


def write_report(workdir: Path, pictures: dict[Path, str] | None = None, comparison: dict | None = None) -> Path:
    """Write ``workdir/report.html`` (images embedded, so the file can be moved or mailed) and return its path.

    ``pictures``: {picture: caption}, as :func:`slotlab.runs.viz_run` returns them (default: ``workdir/*.png``
    other than the curves, without captions); ``comparison``: a :func:`slotlab.compare.compare_with_zoo` result,
    shown in a section of its own. The test line is ``test_metrics.json`` when present, in the task's
    format; the validation table has the task's curve metrics (:class:`slotlab.tasks.Task`)."""
    workdir = Path(workdir)
    cfg = RunDir(workdir).load_config()
    task = get_task(cfg)
    save_curves(workdir, workdir / "curves.png", task.curves)
    if pictures is None:
        pictures = {path: "" for path in sorted(workdir.glob("*.png"))
                    if path.name != "curves.png" and not path.name.startswith("compare_")}
    test_file = workdir / "test_metrics.json"
    test = json.loads(test_file.read_text()) if test_file.is_file() else {}
    _, val_rows = read_metrics(workdir)
    header = "".join(f"<th>{html.escape(label)}</th>" for label in task.curves.values())
    rows = "".join(
        f"<tr><td>{r['step']}</td><td>{r['train_seconds'] / 60:.1f}</td>"
        + "".join(f"<td>{_cell(key, r.get(key))}</td>" for key in task.curves) + "</tr>"
        for r in val_rows
    )
    metrics = ""
    if test:
        metrics = f"<p>Test ({html.escape(str(test.get('data', 'test')))}), checkpoint chosen on validation: " \
                  f"<b>{html.escape(task.format(test))}</b></p>"
    shown = "".join(f"<p>{html.escape(caption)}</p>{_img(Path(path))}" for path, caption in pictures.items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>slotlab run {html.escape(cfg.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{padding:2px 10px;text-align:right}}</style>
</head><body>
<h1>slotlab: {html.escape(cfg.name)}</h1>
<p>{html.escape(cfg.description)}</p>
{metrics}
<h2>Pictures</h2>{shown}
{_comparison(comparison)}
<h2>Learning curves</h2>{_img(workdir / 'curves.png')}
<table><tr><th>step</th><th>minutes</th>{header}</tr>{rows}</table>
<h2>Config</h2><pre>{html.escape(json.dumps(cfg.to_dict(), indent=2))}</pre>
</body></html>
"""
    out = workdir / "report.html"
    atomic_write(out, page)
    return out
