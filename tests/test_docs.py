"""The documentation runs as written: README.md's Python examples, and every fenced ``slotlab ...`` command in
README.md and docs/ that ends in a ``# quick`` comment (run in order, per file, in a fresh directory)."""

import re
import shlex
from pathlib import Path

import pytest

from slotlab.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(path: Path, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(path.read_text()) if lang == language]


def quick_commands(path: Path) -> list[list[str]]:
    """argv of each ``slotlab ...  # quick`` line of the file's bash blocks (backslash continuations joined)."""
    commands = []
    for body in blocks(path, "bash"):
        for line in body.replace("\\\n", " ").splitlines():
            command, _, comment = line.partition("#")
            if command.strip().startswith("slotlab ") and comment.strip() == "quick":
                commands.append(shlex.split(command)[1:])
    return commands


def test_readme_python_examples_run_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    examples = blocks(ROOT / "README.md", "python")
    assert len(examples) >= 3
    for code in examples:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    assert "torch.Size([8, 7, 64])" in capsys.readouterr().out  # the quick start's slots


def test_readme_has_a_quick_train_eval_viz_round_trip():
    verbs = [argv[0] for argv in quick_commands(ROOT / "README.md")]
    assert verbs[:3] == ["train", "eval", "viz"]


@pytest.mark.parametrize("path", [p for p in DOCS if quick_commands(p)], ids=lambda p: p.name)
def test_quick_commands_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for argv in quick_commands(path):
        assert main(argv) == 0, f"{path.name}: slotlab {shlex.join(argv)}"
    if path.name == "README.md":  # the round trip left its files
        for name in ("checkpoints/best.safetensors", "test_metrics.json", "scenes.png", "scenes_attention.png"):
            assert (tmp_path / "runs" / "tiny" / name).is_file(), name


def test_docs_speak_of_the_software_only():
    pattern = re.compile(r"session|issue [0-9]|SPEC\.md", re.I)
    found = [f"{path.relative_to(ROOT)}:{n}" for path in [*DOCS, *(ROOT / "src").rglob("*.py")]
             for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == []
