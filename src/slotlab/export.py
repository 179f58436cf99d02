"""``slotlab export (--model NAME | --workdir DIR) --data SPEC --out FILE.npz``: slots for downstream work.

Every scene of the split goes through the model (each scene's initial slots seeded from its pixels, as in
evaluation), and FILE.npz receives, for N scenes, K slots of size D and K' mask components at resolution R:

- ``slots`` float32 (N, K, D); ``masks`` float16 (N, K', R, R), the background layer first when the model has
  one; ``attn`` float16 (N, K, N_pos), the last iteration's attention over the feature positions;
- ``true_labels`` uint8 (N, R, R) when the data has ground-truth masks (0 = background);
- ``files`` (N,) str, each scene's source file (folders) or ``"<spec>#<i>"``;
- ``metadata``: a JSON string (model, config name, data spec, K, T, seed, resolution, background first or not).

The arrays are filled in memory-mapped files, one batch at a time, then zipped, so a large split needs little RAM.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from slotlab.api import LoadedModel


def export_slots(model: LoadedModel, scenes, spec: str, out: str | Path, *, batch_size: int = 64,
                 num_slots: int | None = None, num_iters: int | None = None, progress: bool = True) -> Path:
    """Write the slots, masks and metadata of every scene of ``scenes`` (a SceneSet or FolderScenes) to ``out``."""
    out = Path(out)
    if out.suffix != ".npz":
        raise ValueError(f"--out {out}: expected a .npz file name")
    n, R = len(scenes), scenes.resolution
    out.parent.mkdir(parents=True, exist_ok=True)
    files = getattr(scenes, "files", None) or [f"{spec}#{i}" for i in range(n)]
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        arrays: dict[str, np.ndarray] = {}
        for lo in tqdm(range(0, n, batch_size), unit="batch", disable=not progress, desc="export"):
            batch = scenes.batch(slice(lo, min(lo + batch_size, n)))
            pixels = ((batch["image"] + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
            result = model.run(pixels, num_slots, num_iters)  # (B, R, R, 3) uint8 in, seeded per scene
            parts = {"slots": result["slots"].numpy(), "masks": result["masks"].half().numpy(),
                     "attn": result["attn"].half().numpy()}
            if "masks" in batch:
                parts["true_labels"] = batch["masks"].argmax(1).byte().numpy()  # (B, R, R)
            for key, value in parts.items():
                if key not in arrays:
                    arrays[key] = np.lib.format.open_memmap(Path(tmp) / f"{key}.npy", "w+", value.dtype,
                                                            (n, *value.shape[1:]))
                arrays[key][lo : lo + len(value)] = value
        m = model.config.model
        metadata = {"model": model.source, "experiment": model.config.name, "data": spec, "num_scenes": n,
                    "num_slots": num_slots or m.num_slots, "num_iters": num_iters or m.test_iters or m.num_iters,
                    "seed": model.config.train.seed, "resolution": R, "background_first": model.has_background}
        np.savez(out, **arrays, files=np.array(files), metadata=np.array(json.dumps(metadata)))
        del arrays
    return out
