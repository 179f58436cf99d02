"""A self-contained HTML report of a run: the config, the test metrics, the curves and the pictures."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from slotlab.viz import read_metrics, save_curves


def _img(path: Path) -> str:
    if not path.is_file():
        return f"<p>(missing {html.escape(path.name)})</p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" style="max-width:100%">'


def write_report(workdir: Path) -> Path:
    """Write ``workdir/report.html`` (images embedded, so the file can be moved or mailed) and return its path."""
    workdir = Path(workdir)
    save_curves(workdir, workdir / "curves.png")
    config = json.loads((workdir / "config.json").read_text())
    test = json.loads((workdir / "test_metrics.json").read_text()) if (workdir / "test_metrics.json").is_file() else {}
    _, val_rows = read_metrics(workdir)
    rows = "".join(
        f"<tr><td>{r['step']}</td><td>{r['train_seconds'] / 60:.1f}</td><td>{100 * r['fg_ari']:.1f}</td>"
        f"<td>{100 * r['ari']:.1f}</td><td>{100 * r['mbo']:.1f}</td><td>{r['mse']:.5f}</td></tr>"
        for r in val_rows
    )
    metrics = ""
    if test:
        metrics = (
            f"<p>Held-out test scenes ({int(test['num_scenes'])}), checkpoint chosen on validation: "
            f"<b>FG-ARI {100 * test['fg_ari']:.1f}</b> ± {100 * test['fg_ari_sem']:.1f}, "
            f"<b>ARI {100 * test['ari']:.1f}</b>, <b>mBO {100 * test['mbo']:.1f}</b>, MSE {test['mse']:.5f}</p>"
        )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>slotlab run {html.escape(config['name'])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{padding:2px 10px;text-align:right}}</style>
</head><body>
<h1>slotlab: {html.escape(config['name'])}</h1>
<p>{html.escape(config.get('description', ''))}</p>
{metrics}
<h2>Scenes</h2><p>Input, reconstruction, each slot's reconstruction &times; mask, predicted and true segmentation.</p>
{_img(workdir / 'scenes.png')}
<h2>Attention over iterations</h2>{_img(workdir / 'scenes_attention.png')}
<h2>Learning curves</h2>{_img(workdir / 'curves.png')}
<table><tr><th>step</th><th>minutes</th><th>FG-ARI</th><th>ARI</th><th>mBO</th><th>MSE</th></tr>{rows}</table>
<h2>Config</h2><pre>{html.escape(json.dumps(config, indent=2))}</pre>
</body></html>
"""
    out = workdir / "report.html"
    out.write_text(page)
    return out
