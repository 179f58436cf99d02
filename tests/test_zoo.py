"""The model zoo: entries made from runs, loaded by name, shipped in the wheel; every real entry loads."""

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

import slotlab
from slotlab import zoo
from slotlab.api import build_checked
from slotlab.cli import main
from slotlab.config import ExperimentConfig

REPO = Path(__file__).resolve().parents[1]
PACKAGE_ZOO = Path(zoo.__file__).parent


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 4-step ``tiny`` run (its data in the session's temporary cache)."""
    run = tmp_path_factory.mktemp("zoo") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLOTLAB_CACHE", str(tmp_path_factory.getbasetemp() / "slotlab-cache"))
        assert main(["train", "--experiment", "tiny", "--workdir", str(run), "--no-progress"]) == 0
    return run


@pytest.fixture
def tiny_zoo(tiny_run, tmp_path, monkeypatch):
    """A zoo in a temporary directory (``$SLOTLAB_ZOO``) holding one entry, ``tiny-test``, made from the run."""
    root = tmp_path / "zoo"
    monkeypatch.setenv(zoo.ZOO_ENV, str(root))
    assert main(["zoo", "add", str(tiny_run), "--name", "tiny-test"]) == 0
    return tiny_run, root


def test_entry_from_run_loads_by_name(tiny_zoo, capsys):
    run, root = tiny_zoo
    entry = root / "tiny-test"
    assert sorted(p.name for p in entry.iterdir()) == ["config.json", "model.safetensors"]
    with safe_open(str(entry / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert keys and all(k.startswith("model.") for k in keys)  # weights only, no optimizer state
    assert zoo.entries() == ["tiny-test"]

    images = np.random.default_rng(0).integers(0, 255, (3, 35, 35, 3), dtype=np.uint8)
    by_name = slotlab.load("tiny-test").segment(images)
    by_run = slotlab.load(run).segment(images)  # the run's best checkpoint: the same weights
    assert (by_name["labels"] == by_run["labels"]).all()
    assert by_name["slots"].shape == (3, 4, 16) and by_name["attn"].shape == (3, 4, 35 * 35)

    capsys.readouterr()
    assert main(["eval", "--model", "tiny-test", "--json", str(root / "a.json")]) == 0
    assert main(["eval", "--workdir", str(run), "--json", str(root / "b.json")]) == 0
    a, b = (json.loads((root / f).read_text()) for f in ("a.json", "b.json"))
    assert a["fg_ari"] == b["fg_ari"] and a["mse"] == b["mse"]
    assert main(["viz", "--model", "tiny-test", "--out", str(root / "v.png")]) == 0
    pngs = root / "pngs"
    pngs.mkdir()
    Image.fromarray(images[0]).save(pngs / "x.png")
    assert main(["segment", "--model", "tiny-test", str(pngs), "--out", str(root / "seg"), "--no-progress"]) == 0
    assert (np.asarray(Image.open(root / "seg" / "x.png")) == by_name["labels"][0].numpy()).all()
    assert main(["export", "--model", "tiny-test", "--data", "test", "--out", str(root / "e.npz"),
                 "--no-progress"]) == 0
    assert json.loads(str(np.load(root / "e.npz")["metadata"]))["model"] == "tiny-test"

    with pytest.raises(FileExistsError):
        zoo.add_entry(run, "tiny-test")


def test_unknown_name_lists_the_zoo(tiny_zoo, capsys):
    with pytest.raises(KeyError, match="available: tiny-test"):
        slotlab.load("no-such-model")
    assert main(["eval", "--model", "no-such-model"]) == 2
    assert "tiny-test" in capsys.readouterr().err


def test_config_must_match_weights(tiny_zoo):
    _, root = tiny_zoo
    entry = root / "tiny-test"
    cfg = json.loads((entry / "config.json").read_text())
    cfg["model"]["slot_dim"] = 24
    (entry / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="does not match its config"):
        slotlab.load("tiny-test")


def test_every_shipped_entry_loads_and_matches_its_config():
    """Checks each entry in the package's zoo (none until models are added: then it checks every one)."""
    for name in zoo.entries(PACKAGE_ZOO):
        entry = PACKAGE_ZOO / name
        cfg = ExperimentConfig.load(entry / zoo.CONFIG)
        model = build_checked(cfg, entry / zoo.WEIGHTS)
        assert (entry / zoo.CARD).is_file(), f"{name}: no {zoo.CARD}"
        assert (entry / zoo.WEIGHTS).stat().st_size < 20e6, f"{name}: weights over 20 MB"
        with safe_open(str(entry / zoo.WEIGHTS), framework="pt") as f:
            assert not [k for k in f.keys() if k.startswith("optim.")], f"{name}: optimizer state in the weights"
        assert sum(p.numel() for p in model.parameters()) > 0


def test_pyproject_ships_the_zoo_files():
    text = (REPO / "pyproject.toml").read_text()
    assert '[tool.setuptools.package-data]\n"slotlab.zoo" = ["*/*"]' in text


def test_wheel_contains_zoo_entries(tmp_path):
    """A regular (non-editable) build puts zoo/<name>/* in the wheel."""
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    fake = src / "src" / "slotlab" / "zoo" / "wheel-check"
    fake.mkdir(parents=True, exist_ok=True)
    for name in ("model.safetensors", "config.json", "card.md"):
        (fake / name).write_text("x")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q",
                            "-w", str(tmp_path / "wheel"), str(src)], capture_output=True, text=True)
    if build.returncode != 0 and "No module named pip" in build.stderr:
        pytest.skip("pip is not installed")
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for name in ("model.safetensors", "config.json", "card.md"):
        assert f"slotlab/zoo/wheel-check/{name}" in names


def test_weights_file_of_an_entry_or_a_run(tmp_path):
    (tmp_path / "entry").mkdir()
    (tmp_path / "entry" / zoo.WEIGHTS).write_bytes(b"")
    assert zoo.weights_file(tmp_path / "entry", "last") == tmp_path / "entry" / zoo.WEIGHTS
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no checkpoints/best.safetensors"):
        zoo.weights_file(tmp_path / "run")
    (checkpoints / "last.safetensors").write_bytes(b"")
    assert zoo.weights_file(tmp_path / "run") == checkpoints / "last.safetensors"  # no best yet
    (checkpoints / "best.safetensors").write_bytes(b"")
    assert zoo.weights_file(tmp_path / "run") == checkpoints / "best.safetensors"
    assert zoo.weights_file(tmp_path / "run", "last") == checkpoints / "last.safetensors"


def test_a_bare_zoo_name_wins_over_a_folder_of_that_name(tiny_zoo, tmp_path, monkeypatch):
    run, _ = tiny_zoo
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny-test").mkdir()  # an unrelated folder named like the zoo entry
    assert slotlab.load("tiny-test").source == "tiny-test"  # the zoo entry, not the empty folder
    shutil.copytree(run, tmp_path / "myrun")
    assert slotlab.load("myrun").config.name == "tiny"  # not a zoo name: the run directory
    with pytest.raises(FileNotFoundError):
        slotlab.load("./tiny-test")  # a path: the folder (empty here), never the zoo
