"""``slotlab segment (--model NAME | --workdir DIR) IMAGE_OR_DIR... --out OUTDIR``: segment your images.

For an input ``INPUT_DIR/REL/STEM.EXT`` (REL relative to the directory given; empty for a file given directly):

- ``OUTDIR/REL/STEM.png``: 8-bit single-channel label map of the input's size; pixel k = the mask component that
  is largest there (0..K-1 the slots; with a background layer 0 = background, 1..K the slots); 255 where the model
  did not see the input (outside the centre crop of ``data.resize=crop``);
- ``OUTDIR/REL/STEM_overlay.png``: the input with each component's region tinted;
- ``OUTDIR/REL/STEM.npz``: ``slots`` (K, D), ``masks`` (K', R, R) at the model's resolution, ``attn`` (K, N);
- ``OUTDIR/index.json`` (each input -> its outputs; the skipped files and why) and ``OUTDIR/index.html``.

Everything is checked before any work: missing inputs, two inputs mapping to one output (``a.png`` and
``a.jpg``), an OUTDIR equal to or inside an input directory, an OUTDIR that holds files ``slotlab segment`` did not
write (a folder with no ``index.json``: its files could be overwritten; a previous segment output is replaced).
Files that are not images, or cannot be read, are reported by name and skipped; :func:`segment_paths` returns
them, and the command exits non-zero if there are any.
"""

from __future__ import annotations

import html
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from slotlab.api import LoadedModel, masks_at_input_size
from slotlab.data.folder import MASKS_DIR
from slotlab.data.imageio import UNSEEN, ImageReadError, image_extensions, read_rgb

log = logging.getLogger(__name__)

# Overlay colours of components 0, 1, 2, ... (repeating); tints are 50% over the input.
PALETTE = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
                    [0, 128, 128], [170, 110, 40], [128, 0, 0], [0, 0, 128], [128, 128, 0]], dtype=np.float32)


@dataclass(frozen=True)
class Job:
    """One input file and where its outputs go: ``OUTDIR/key`` + ``.png`` / ``_overlay.png`` / ``.npz``."""

    path: Path
    key: str  # REL/STEM, POSIX


def plan(inputs: list[str | Path], out: str | Path) -> tuple[list[Job], list[dict]]:
    """The jobs for ``inputs`` (files and directories, searched recursively; hidden files and ``masks/`` skipped)
    and the files skipped as not images. Raises before any work on a missing input, an OUTDIR equal to or inside
    an input directory, or two inputs that map to the same outputs."""
    out = Path(out).resolve()
    extensions = image_extensions()
    jobs, skipped = [], []
    for given in map(Path, inputs):
        if not given.exists():
            raise FileNotFoundError(f"{given}: no such file or directory; expected an image or a folder of images")
        if given.is_file():
            jobs.append(Job(given, given.stem))
            continue
        root = given.resolve()
        if out == root or root in out.parents:
            raise ValueError(f"--out {out} is inside the input directory {given}; its outputs would mix with the "
                             "inputs (choose an OUTDIR outside it)")
        for parent, dirs, files in os.walk(given):
            top = Path(parent) == given
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (top and d == MASKS_DIR))
            for name in sorted(files):
                if name.startswith("."):
                    continue
                path = Path(parent) / name
                rel = path.relative_to(given)
                if path.suffix.lower() not in extensions:
                    skipped.append({"input": str(path), "error": "not an image (unknown file extension)"})
                    continue
                jobs.append(Job(path, (rel.parent / rel.stem).as_posix()))
    if out.is_dir() and any(out.iterdir()) and not is_segment_output(out):
        raise ValueError(f"--out {out} already holds files that slotlab segment did not write (no index.json); "
                         "choose a new or empty folder, so that none of them is overwritten")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; expected a folder (new, empty, or a previous output)")
    seen: dict[str, Path] = {}
    for job in jobs:
        if job.key in seen:
            raise ValueError(f"{seen[job.key]} and {job.path} would both write {out / job.key}.png; rename one or "
                             "segment them into different --out folders")
        seen[job.key] = job.path
    return jobs, skipped


def is_segment_output(out: Path) -> bool:
    """Whether ``out`` holds a (finished or interrupted) ``slotlab segment`` output: its index.json says so."""
    try:
        index = json.loads((out / "index.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(index, dict) and index.get("written_by") == "slotlab segment"


def overlay(rgb: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) input and (H, W) labels -> the input with each component's region tinted 50%."""
    tint = PALETTE[labels % len(PALETTE)]  # (H, W, 3)
    blended = 0.5 * rgb.astype(np.float32) + 0.5 * tint
    blended[labels == UNSEEN] = rgb[labels == UNSEEN]
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def _write_outputs(out: Path, job: Job, rgb: np.ndarray, result: dict, index: int) -> dict:
    masks_full, labels = masks_at_input_size(result["masks"][index], result["fit"][index])
    labels = labels.numpy()
    base = out / job.key
    base.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels, mode="L").save(base.with_name(base.name + ".png"), compress_level=1)
    Image.fromarray(overlay(rgb, labels)).save(base.with_name(base.name + "_overlay.png"), compress_level=1)
    np.savez(base.with_name(base.name + ".npz"), slots=result["slots"][index].numpy(),
             masks=result["masks"][index].numpy(), attn=result["attn"][index].numpy())
    return {"input": str(job.path), "label_map": f"{job.key}.png", "overlay": f"{job.key}_overlay.png",
            "npz": f"{job.key}.npz", "size": [int(rgb.shape[1]), int(rgb.shape[0])],
            "components": int(masks_full.shape[0])}


def segment_paths(model: LoadedModel, inputs: list[str | Path], out: str | Path, *, batch_size: int = 32,
                  num_slots: int | None = None, num_iters: int | None = None, progress: bool = True) -> dict:
    """Segment every image of ``inputs`` into ``out``; returns ``{"outputs": [...], "skipped": [...]}`` (as
    written to ``out/index.json``)."""
    jobs, skipped = plan(inputs, out)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    header = {"written_by": "slotlab segment", "model": model.source}
    (out / "index.json").write_text(json.dumps({**header, "outputs": [], "complete": False}) + "\n")  # claims out
    outputs = []
    bar = tqdm(total=len(jobs), unit="image", disable=not progress, desc="segment", dynamic_ncols=True)
    try:
        for lo in range(0, len(jobs), batch_size):
            batch, rgbs, fitted = [], [], []
            for job in jobs[lo : lo + batch_size]:
                try:
                    rgb = read_rgb(job.path)
                except ImageReadError as err:
                    log.warning("skipped %s", err)
                    skipped.append({"input": str(job.path), "error": str(err)})
                    continue
                batch.append(job)
                rgbs.append(rgb)
                fitted.append(model.preprocess(rgb))
            if batch:
                result = model.run(np.stack([p for p, _ in fitted]), num_slots, num_iters)
                result["fit"] = [f for _, f in fitted]
                outputs += [_write_outputs(out, job, rgb, result, i)
                            for i, (job, rgb) in enumerate(zip(batch, rgbs, strict=True))]
            bar.update(len(jobs[lo : lo + batch_size]))
    finally:
        bar.close()
    index = {**header, "complete": True, "background_label": 0 if model.has_background else None,
             "unseen_label": UNSEEN, "outputs": outputs, "skipped": skipped}
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    (out / "index.html").write_text(gallery(index, out))
    return index


def gallery(index: dict, out: Path) -> str:
    """index.html: one row per input (the input, its overlay, links to the outputs), and the skipped files."""
    rows = []
    for o in index["outputs"]:
        name = html.escape(o["input"])
        src = html.escape(Path(os.path.relpath(Path(o["input"]).resolve(), Path(out).resolve())).as_posix())
        rows.append(f'<tr><td>{name}<br>{o["size"][0]}x{o["size"][1]}</td><td><img src="{src}"></td>'
                    f'<td><img src="{html.escape(o["overlay"])}"></td>'
                    f'<td><a href="{html.escape(o["label_map"])}">label map</a><br>'
                    f'<a href="{html.escape(o["npz"])}">npz</a></td></tr>')
    skipped = "".join(f"<li>{html.escape(s['input'])}: {html.escape(s['error'])}</li>" for s in index["skipped"])
    return ("<!doctype html><meta charset=utf-8><title>slotlab segment</title>"
            "<style>body{font-family:sans-serif}img{max-width:256px;image-rendering:pixelated}"
            "td{padding:4px;vertical-align:top}</style>"
            f"<h1>slotlab segment: {html.escape(str(index['model']))}</h1>"
            f"<p>{len(index['outputs'])} images segmented, {len(index['skipped'])} skipped.</p>"
            f"<table>{''.join(rows)}</table>" + (f"<h2>Skipped</h2><ul>{skipped}</ul>" if skipped else ""))
