"""What ``--resume`` may change: overrides and ``--data`` checked against the checkpoint before anything is written.

Three kinds of config keys:

- free: ``name``, ``description`` and every ``train.*`` key (steps, budget, lr, intervals, threads, device, ...);
- meaning-changing: K (``model.num_slots``), T (``model.num_iters``) and the data (every ``data.*`` key and the
  ``--data`` / ``--val-data`` specs). They need ``--allow-change K`` / ``T`` / ``data`` (or the full key name) and
  are recorded in the run's history.jsonl;
- shape-changing: every other ``model.*`` key (the network itself). Refused: start a new run instead.
"""

from __future__ import annotations

from slotlab.config import ExperimentConfig, _flatten

MEANING_KEYS = {"model.num_slots": "K", "model.num_iters": "T"}


def config_changes(before: ExperimentConfig, after: ExperimentConfig) -> dict[str, list]:
    """{dotted key: [before, after]} of every value that differs."""
    a, b = _flatten(before.to_dict()), _flatten(after.to_dict())
    return {key: [a.get(key), b.get(key)] for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)}


def change_token(key: str) -> str | None:
    """The --allow-change name a key needs ("K", "T", "data"), None for a free key, "" for a refused one."""
    if key in MEANING_KEYS:
        return MEANING_KEYS[key]
    if key.startswith("data.") or key == "data":
        return "data"
    if key.startswith("model."):
        return ""
    return None


def check_changes(changes: dict[str, list], allow: tuple[str, ...] | list[str], where: str) -> None:
    """Raise ValueError unless every change in ``changes`` is free or allowed by ``allow``."""
    refused = [k for k in changes if change_token(k) == ""]
    if refused:
        shown = ", ".join(f"{k}={changes[k][1]!r} (checkpoint: {changes[k][0]!r})" for k in refused)
        raise ValueError(f"--resume cannot change {shown}: the network's shape or structure would no longer match "
                         f"{where}. Start a new run (a new --workdir) instead; nothing was written")
    allowed = set(allow)
    needed = {k: change_token(k) for k in changes if change_token(k)}
    missing = {k: t for k, t in needed.items() if t not in allowed and k not in allowed}
    if missing:
        shown = ", ".join(f"{k}: {changes[k][0]!r} -> {changes[k][1]!r}" for k in missing)
        flags = " ".join(f"--allow-change {t}" for t in sorted(set(missing.values())))
        raise ValueError(f"--resume would change what the run means ({shown}; the checkpoint {where} was "
                         f"trained with the first). Pass {flags} to accept it (recorded in history.jsonl); "
                         "nothing was written")
    unknown = sorted(allowed - {"K", "T", "data"} - set(changes))
    if unknown:
        raise ValueError(f"--allow-change {unknown}: expected K, T, data or a changed key")
