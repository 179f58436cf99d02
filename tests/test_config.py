import json

import pytest

from slotlab.config import ExperimentConfig, apply_overrides
from slotlab.experiments import get_experiment


def test_overrides_cast_to_field_types():
    cfg = apply_overrides(get_experiment("tiny"), ["train.lr=3e-4", "model.num_slots=5", "model.fast_stem=false",
                                                   "model.encoder_strides=1,2,2,1", "train.steps=1e3"])
    assert cfg.train.lr == 3e-4 and cfg.model.num_slots == 5 and cfg.model.fast_stem is False
    assert cfg.model.encoder_strides == [1, 2, 2, 1] and cfg.train.steps == 1000


def test_unknown_key_suggests_nearest():
    with pytest.raises(KeyError, match="did you mean 'train.lr'"):
        apply_overrides(get_experiment("tiny"), ["train.lrr=1"])
    with pytest.raises(KeyError, match="section"):
        apply_overrides(get_experiment("tiny"), ["train=1"])


def test_bad_values_are_named():
    with pytest.raises(ValueError, match="train.steps: expected int"):
        apply_overrides(get_experiment("tiny"), ["train.steps=many"])
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(get_experiment("tiny"), ["train.steps"])


def test_unknown_experiment_suggests_nearest():
    with pytest.raises(KeyError, match="did you mean 'tetrominoes'"):
        get_experiment("tetrominos")


def test_json_round_trip(tmp_path):
    cfg = apply_overrides(get_experiment("clevr6"), ["train.lr=1e-4"])
    cfg.save(tmp_path / "c.json")
    assert ExperimentConfig.load(tmp_path / "c.json") == cfg
    with pytest.raises(FileNotFoundError, match="slotlab run directory"):
        ExperimentConfig.load(tmp_path / "missing.json")


def test_removed_keys_of_old_config_files_are_ignored_but_not_settable(tmp_path):
    old = get_experiment("tiny").to_dict()
    old["train"]["num_workers"] = 4  # a key that earlier versions wrote and never read
    (tmp_path / "c.json").write_text(json.dumps(old))
    assert ExperimentConfig.load(tmp_path / "c.json") == get_experiment("tiny")
    with pytest.raises(KeyError, match="unknown config key 'train.num_workers'"):
        apply_overrides(get_experiment("tiny"), ["train.num_workers=2"])
