"""Official TF2 checkpoints -> slotlab: layout round trips and clear errors (NumPy only), and numerical parity with
the official architecture in Keras (slotlab.interop.official_keras) through a real TF checkpoint (needs TensorFlow).

The parity tests perturb every Keras weight away from its initial value (so biases, LayerNorm gains and the GRU
biases are non-trivial), save ``Checkpoint(network, optimizer, global_step)`` as the official training does, convert
with ``slotlab convert official-tf`` and compare outputs from the same image and the same initial slots.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch import nn

from slotlab.cli import main
from slotlab.interop import official_tf
from slotlab.interop.official_tf import SUFFIX, CheckpointMismatchError, convert, find_checkpoint, model_mapping
from slotlab.nn.slot_attention import SlotAttention

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported: no start-up log lines
TOL = 1e-4
SIZES = dict(channels=16, slot_size=24, mlp_hidden_size=32)  # distinct sizes catch swapped dimensions


def _keras():
    """Import TensorFlow and Keras 2 or skip (CI installs both: .ci/run, pip install -e '.[tf]'). With
    SLOTLAB_REQUIRE_TF=1 (set by .ci/run) a missing TensorFlow fails instead, so CI cannot skip the parity test."""
    if os.environ.get("SLOTLAB_REQUIRE_TF") == "1":
        import tensorflow as tf
        import tf_keras  # noqa: F401
    tf = pytest.importorskip("tensorflow", reason="TensorFlow not installed (pip install 'slotlab[tf]')")
    pytest.importorskip("tf_keras", reason="tf_keras not installed (pip install --no-deps tf-keras)")
    from slotlab.interop import official_keras

    return tf, official_keras


def _perturb(model, seed: int = 0) -> None:
    """Move every weight off its initial value: scale by U(0.5, 1.5) and add N(0, 0.05)."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        shape = tuple(v.shape)
        v.assign(v.numpy() * rng.uniform(0.5, 1.5, shape) + rng.normal(0.0, 0.05, shape))


def _initial_slots(sa: SlotAttention, noise: np.ndarray) -> torch.Tensor:
    """The official initialisation mu + exp(log sigma) * noise, from slotlab's converted parameters."""
    return sa.slots_mu + sa.slots_log_sigma.exp() * torch.from_numpy(noise)


def _max_diff(tf_out, torch_out: torch.Tensor) -> float:
    return float(np.abs(np.asarray(tf_out) - torch_out.detach().numpy()).max())


# ------------------------------------------------------------------------------------- NumPy only (always run)

INVERSE = {  # slotlab tensor -> official variable layout, the inverse of official_tf.TRANSFORMS
    "copy": lambda a: a,
    "dense": lambda a: a.T,
    "conv": lambda a: a.transpose(2, 3, 1, 0),
    "conv_transpose": lambda a: a.transpose(2, 3, 1, 0),
    "gru_kernel": lambda a: official_tf._gates(a.T, axis=1),  # swapping the first two blocks is its own inverse
}


def _official_variables(model: nn.Module, rows) -> dict[str, np.ndarray]:
    """A fake official checkpoint (object-graph names) holding ``model``'s weights."""
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    out: dict[str, np.ndarray] = {}
    for ours, theirs, kind in rows:
        if kind == "gru_input_bias":
            bias_hh = state[ours.replace("bias_ih", "bias_hh")]
            value = np.stack([official_tf._gates(state[ours], 0), official_tf._gates(bias_hh, 0)])
        elif kind == "gru_recurrent_bias":
            continue
        else:
            value = INVERSE[kind](state[ours])
        out[f"network/layer_with_weights-0/{theirs}{SUFFIX}"] = value
    out[f"global_step{SUFFIX}"] = np.array(7)
    return out


@pytest.fixture(scope="module")
def small_autoencoder():
    from slotlab.experiments import clevr6
    from slotlab.nn.models import SlotAttentionAutoEncoder

    m = clevr6().model
    m.encoder_channels, m.encoder_mlp_dim, m.decoder_channels, m.slot_dim, m.mlp_hidden_dim = 8, 8, 8, 12, 16
    torch.manual_seed(0)
    model = SlotAttentionAutoEncoder(m)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model, _official_variables(model, model_mapping("discovery", 4, 6))


def test_round_trip_reproduces_weights_and_infers_sizes(small_autoencoder):
    model, variables = small_autoencoder
    converted, cfg = convert(variables, num_slots=5)
    assert cfg.model.task == "autoencoder" and cfg.model.num_slots == 5 and cfg.model.slot_dim == 12
    assert (cfg.model.encoder_channels, cfg.model.decoder_channels, cfg.model.mlp_hidden_dim) == (8, 8, 16)
    assert cfg.model.broadcast_size == 8
    for name, value in model.state_dict().items():
        assert torch.equal(converted.state_dict()[name], value), name


def test_gru_gates_are_reordered():
    keras_kernel = np.concatenate([np.full((2, 3), g) for g in (1.0, 2.0, 3.0)], axis=1)  # [z | r | h]
    torch_weight = official_tf.TRANSFORMS["gru_kernel"](keras_kernel)  # (3D, in) [r | z | n]
    assert torch_weight[:, 0].tolist() == [2.0] * 3 + [1.0] * 3 + [3.0] * 3


def test_missing_variables_are_named(small_autoencoder):
    _, variables = small_autoencoder
    broken = {k: v for k, v in variables.items() if "slot_attention/gru/" not in k and "decoder_pos" not in k}
    with pytest.raises(CheckpointMismatchError) as err:
        convert(broken)
    for name in ("slot_attention/gru/kernel", "slot_attention/gru/recurrent_kernel", "decoder_pos/dense/bias"):
        assert name in str(err.value)


def test_wrong_shapes_are_named(small_autoencoder):
    _, variables = small_autoencoder
    key = f"network/layer_with_weights-0/slot_attention/project_q/kernel{SUFFIX}"
    broken = {**variables, key: np.zeros((12, 13), np.float32)}
    with pytest.raises(CheckpointMismatchError, match=r"slot_attention/project_q/kernel' has shape \(12, 13\)"):
        convert(broken)


def test_not_a_slot_attention_checkpoint():
    with pytest.raises(CheckpointMismatchError, match="not a Slot Attention checkpoint"):
        convert({f"network/dense/kernel{SUFFIX}": np.zeros((2, 2))})


def test_missing_checkpoint_directory(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        find_checkpoint(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no TensorFlow checkpoint"):
        find_checkpoint(tmp_path)
    assert main(["convert", "official-tf", str(tmp_path / "nope"), "--out", str(tmp_path / "run")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_checkpoint_prefix_from_state_file(tmp_path):
    for n in (3, 12):
        (tmp_path / f"ckpt-{n}.index").write_bytes(b"")
    assert find_checkpoint(tmp_path).endswith("ckpt-12")
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "ckpt-3"\n')
    assert find_checkpoint(tmp_path).endswith("ckpt-3")


# ------------------------------------------------------------------------------------- parity with TensorFlow


def test_slot_attention_module_parity(tmp_path):
    tf, ok = _keras()
    B, N, C, K, D = 2, 50, 20, 4, SIZES["slot_size"]
    layer = ok.SlotAttention(num_iterations=3, num_slots=K, slot_size=D, mlp_hidden_size=SIZES["mlp_hidden_size"])
    rng = np.random.default_rng(1)
    inputs = rng.normal(size=(B, N, C)).astype(np.float32)
    noise = rng.normal(size=(B, K, D)).astype(np.float32)
    layer(inputs, noise=noise)  # build
    _perturb(layer)
    expected = layer(inputs, noise=noise).numpy()
    path = tf.train.Checkpoint(slot_attention=layer).save(str(tmp_path / "sa"))
    variables, _ = official_tf.read_tf_checkpoint(path)

    holder = nn.Module()
    holder.slot_attention = SlotAttention(K, C, D, 3, SIZES["mlp_hidden_size"])
    net = official_tf.network_variables(variables)
    weights = official_tf.convert_weights(net, official_tf.slot_attention_mapping(), holder, "Slot Attention")
    holder.load_state_dict(weights)
    sa = holder.slot_attention
    with torch.no_grad():
        got = sa(torch.from_numpy(inputs), slots=_initial_slots(sa, noise))["slots"]
    assert _max_diff(expected, got) <= TOL


def test_autoencoder_parity_through_cli(tmp_path):
    tf, ok = _keras()
    from slotlab.runs import load_model

    B, K, D = 2, 3, SIZES["slot_size"]
    network = ok.build_model("discovery", (128, 128), B, num_slots=K, num_iterations=3, **SIZES)
    _perturb(network, seed=2)
    ok.save_checkpoint(network, str(tmp_path / "tf"), step=42)
    rng = np.random.default_rng(3)
    image = rng.uniform(-1, 1, size=(B, 128, 128, 3)).astype(np.float32)
    noise = rng.normal(size=(B, K, D)).astype(np.float32)
    expected = {k: v.numpy() for k, v in network.layers[1](image, noise=noise).items()}

    assert main(["convert", "official-tf", str(tmp_path / "tf"), "--out", str(tmp_path / "run"),
                 "--num-slots", str(K)]) == 0
    model, cfg = load_model(tmp_path / "run")
    assert cfg.model.num_slots == K and cfg.model.decoder == "upsample"
    with torch.no_grad():
        out = model(torch.from_numpy(image).permute(0, 3, 1, 2), slots=_initial_slots(model.slot_attention, noise))
    diffs = {
        "slots": _max_diff(expected["slots"], out["slots"]),
        "recon": _max_diff(expected["recon"], out["recon"].permute(0, 2, 3, 1)),  # (B, H, W, 3)
        "recons": _max_diff(expected["recons"], out["recons"].permute(0, 1, 3, 4, 2)),  # (B, K, H, W, 3)
        "masks": _max_diff(expected["masks"], out["masks"].permute(0, 1, 3, 4, 2)),  # (B, K, H, W, 1)
    }
    assert float(np.abs(expected["recons"]).max()) > 0.1  # the decoder is not trivially zero
    assert max(diffs.values()) <= TOL, diffs


def test_set_prediction_parity(tmp_path):
    tf, ok = _keras()
    from slotlab import experiments
    from slotlab.nn import models

    if not hasattr(models, "SetPredictor") or "clevr_set" not in experiments.EXPERIMENTS:
        pytest.skip("set prediction (models.SetPredictor, preset clevr_set) not in this slotlab yet")
    B, K, D = 2, 4, SIZES["slot_size"]
    network = ok.build_model("set", (128, 128), B, num_slots=K, num_iterations=3, **SIZES)
    _perturb(network, seed=4)
    prefix = ok.save_checkpoint(network, str(tmp_path / "tf"), step=1)
    rng = np.random.default_rng(5)
    image = rng.uniform(-1, 1, size=(B, 128, 128, 3)).astype(np.float32)
    noise = rng.normal(size=(B, K, D)).astype(np.float32)
    expected = network.layers[1](image, noise=noise)

    variables, _ = official_tf.read_tf_checkpoint(prefix)
    model, cfg = convert(variables, num_slots=K)
    assert cfg.model.task == "set_prediction"
    with torch.no_grad():
        out = model(torch.from_numpy(image).permute(0, 3, 1, 2), slots=_initial_slots(model.slot_attention, noise))
    assert _max_diff(expected["slots"], out["slots"]) <= TOL
    assert _max_diff(expected["predictions"], out["pred"]) <= TOL


def test_set_prediction_round_trip_without_tensorflow():
    """The set predictor's variables (a fake official checkpoint) convert back to the same weights and sizes, and
    the task is detected from the classifier's variables."""
    from slotlab.experiments import clevr_set
    from slotlab.nn.models import SetPredictor

    m = clevr_set().model
    m.encoder_channels, m.encoder_mlp_dim, m.slot_dim, m.mlp_hidden_dim, m.head_hidden_dim = 8, 8, 12, 16, 20
    torch.manual_seed(0)
    model = SetPredictor(m)
    variables = _official_variables(model, model_mapping("set", 4, 0))
    converted, cfg = convert(variables)
    assert cfg.model.task == "set_prediction" and cfg.model.head_hidden_dim == 20 and cfg.model.num_slots == 10
    assert cfg.model.encoder_strides == [1, 2, 2, 1]
    for name, value in model.state_dict().items():
        assert torch.equal(converted.state_dict()[name], value), name
    three_convs = {k: v for k, v in variables.items() if "encoder_cnn/layer_with_weights-3" not in k}
    with pytest.raises(CheckpointMismatchError, match="encoder_cnn has 3 convolutions"):
        convert(three_convs)
