"""Convert the released TF2 checkpoints of google-research/slot_attention into slotlab run directories.

The official training saves ``tf.train.Checkpoint(network=model, optimizer=..., global_step=...)`` where ``model``
is a functional Keras model around one ``SlotAttentionAutoEncoder`` (object discovery) or
``SlotAttentionClassifier`` (set prediction) layer, so a variable is named by its object-graph path, e.g.
``network/layer_with_weights-0/slot_attention/gru/kernel/.ATTRIBUTES/VARIABLE_VALUE``. This module finds that
wrapping prefix, maps every official variable to a slotlab parameter and converts its layout
(docs/reference.md, "Porting pitfalls"):

- Dense kernels (in, out) -> Linear weights (out, in): transpose;
- Conv2D kernels (h, w, in, out) -> Conv2d (out, in, h, w); Conv2DTranspose kernels (h, w, out, in) ->
  ConvTranspose2d (in, out, h, w): the same permutation, no spatial flip (both are adjoints of the same
  cross-correlation; slotlab's decoder reproduces TF "SAME" by cropping, see modules.py);
- GRUCell: Keras orders the gates [z | r | h], PyTorch [r | z | n]; the Keras bias (2, 3D) is (input, recurrent),
  as PyTorch's bias_ih and bias_hh (reset_after=True, the Keras default, is PyTorch's formulation);
- LayerNorm gamma, beta -> weight, bias (epsilon 1e-3 in both).

Sizes (channels, slot size, MLP widths) are read from the variables' shapes; the number of slots, iterations and the
image resolution are not stored in a checkpoint and default to the official 7 / 10 slots, 3 iterations, 128 px.
TensorFlow is imported only by :func:`read_tf_checkpoint`; everything else works on NumPy arrays.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from slotlab.checkpoint import save_checkpoint
from slotlab.config import ExperimentConfig, ModelConfig
from slotlab.experiments import get_experiment
from slotlab.tasks import build_model

log = logging.getLogger(__name__)

SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
ANCHOR = "slot_attention/slots_mu"  # a variable every official checkpoint has; its path gives the wrapping prefix


class CheckpointMismatchError(ValueError):
    """The checkpoint is not an official Slot Attention checkpoint of the expected kind."""


# ---------------------------------------------------------------------------------------------------- reading


def find_checkpoint(path: str | Path) -> str:
    """A checkpoint directory (latest ``ckpt-N``) or prefix (``DIR/ckpt-N``) -> the checkpoint prefix."""
    path = Path(path)
    if path.is_dir():
        indexes = sorted(path.glob("*.index"), key=lambda p: [int(n) for n in re.findall(r"\d+", p.stem)] or [-1])
        if not indexes:
            raise FileNotFoundError(f"no TensorFlow checkpoint in {path} (expected ckpt-N.index and "
                                    "ckpt-N.data-* files, as written by tf.train.CheckpointManager)")
        state = path / "checkpoint"  # the CheckpointManager's record of the latest one, when present
        match = re.search(r'^model_checkpoint_path: "(.+)"', state.read_text(), re.M) if state.is_file() else None
        if match and (path / (Path(match.group(1)).name + ".index")).is_file():
            return str(path / Path(match.group(1)).name)
        return str(indexes[-1].with_suffix(""))
    if Path(f"{path}.index").is_file():
        return str(path)
    raise FileNotFoundError(f"checkpoint not found: {path} (give the directory or a prefix such as DIR/ckpt-100)")


def read_tf_checkpoint(path: str | Path) -> tuple[dict[str, np.ndarray], str]:
    """All variables of a TF2 checkpoint but the optimizer's: ({object-graph name: array}, checkpoint prefix)."""
    prefix = find_checkpoint(path)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up log lines are noise here
    try:
        import tensorflow as tf
    except ImportError as err:
        raise RuntimeError("converting TensorFlow checkpoints needs TensorFlow: pip install 'slotlab[tf]'") from err
    reader = tf.train.load_checkpoint(prefix)
    names = [n for n in reader.get_variable_to_shape_map()
             if not n.startswith(("optimizer/", "_CHECKPOINTABLE")) and ".OPTIMIZER_SLOT" not in n]
    return {name: np.asarray(reader.get_tensor(name)) for name in names}, prefix


def network_variables(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Strip the object-graph wrapping: ``network/layer_with_weights-0/x/kernel/.ATTRIBUTES/VARIABLE_VALUE`` ->
    ``x/kernel``. The wrapping is whatever precedes the ``slot_attention/slots_mu`` variable."""
    anchors = [n for n in variables if n.removesuffix(SUFFIX).endswith(ANCHOR)]
    if not anchors:
        some = ", ".join(sorted(variables)[:5]) or "none"
        raise CheckpointMismatchError(f"no '{ANCHOR}' variable: not a Slot Attention checkpoint (variables: {some})")
    prefix = min(anchors, key=len).removesuffix(SUFFIX)[: -len(ANCHOR)]
    bookkeeping = (f"save_counter{SUFFIX}", f"global_step{SUFFIX}")
    return {n.removesuffix(SUFFIX)[len(prefix):]: v for n, v in variables.items()
            if n.startswith(prefix) and ".OPTIMIZER_SLOT" not in n and n not in bookkeeping}


def detect_task(net: dict[str, np.ndarray]) -> str:
    """"discovery" when the checkpoint has a decoder, "set" when it has the property classifier (its head)."""
    for task, official in OFFICIAL.items():
        if any(n.startswith(official.head + "/") for n in net):
            return task
    raise CheckpointMismatchError("the checkpoint has neither 'decoder_cnn' (object discovery) nor "
                                  "'mlp_classifier' (set prediction) variables; pass --task to name the model")


# ---------------------------------------------------------------------------------------------------- mapping


def _gates(a: np.ndarray, axis: int) -> np.ndarray:
    """Keras GRU gate blocks [z | r | h] along ``axis`` -> PyTorch's [r | z | n]."""
    z, r, h = np.split(a, 3, axis=axis)
    return np.concatenate([r, z, h], axis=axis)


TRANSFORMS = {
    "copy": lambda a: a,
    "dense": lambda a: a.T,  # (in, out) -> (out, in)
    "conv": lambda a: a.transpose(3, 2, 0, 1),  # (h, w, in, out) -> (out, in, h, w)
    "conv_transpose": lambda a: a.transpose(3, 2, 0, 1),  # (h, w, out, in) -> (in, out, h, w)
    "gru_kernel": lambda a: _gates(a, axis=1).T,  # (in, 3D) [z|r|h] -> (3D, in) [r|z|n]
    "gru_input_bias": lambda a: _gates(a[0], axis=0),  # (2, 3D) row 0 -> (3D,)
    "gru_recurrent_bias": lambda a: _gates(a[1], axis=0),  # (2, 3D) row 1 -> (3D,)
}


def _dense(ours: str, theirs: str, bias: bool = True) -> list[tuple[str, str, str]]:
    return [(f"{ours}.weight", f"{theirs}/kernel", "dense")] + ([(f"{ours}.bias", f"{theirs}/bias", "copy")] * bias)


def _conv(ours: str, theirs: str, kind: str = "conv") -> list[tuple[str, str, str]]:
    return [(f"{ours}.weight", f"{theirs}/kernel", kind), (f"{ours}.bias", f"{theirs}/bias", "copy")]


def _norm(ours: str, theirs: str) -> list[tuple[str, str, str]]:
    return [(f"{ours}.weight", f"{theirs}/gamma", "copy"), (f"{ours}.bias", f"{theirs}/beta", "copy")]


def slot_attention_mapping(ours: str = "slot_attention", theirs: str = "slot_attention") -> list[tuple[str, str, str]]:
    """(slotlab key, official variable, transform) for the Slot Attention module (official ``SlotAttention``)."""
    rows = [(f"{ours}.slots_mu", f"{theirs}/slots_mu", "copy"),
            (f"{ours}.slots_log_sigma", f"{theirs}/slots_log_sigma", "copy"),
            (f"{ours}.gru.weight_ih", f"{theirs}/gru/kernel", "gru_kernel"),
            (f"{ours}.gru.weight_hh", f"{theirs}/gru/recurrent_kernel", "gru_kernel"),
            (f"{ours}.gru.bias_ih", f"{theirs}/gru/bias", "gru_input_bias"),
            (f"{ours}.gru.bias_hh", f"{theirs}/gru/bias", "gru_recurrent_bias")]
    for name in ("norm_inputs", "norm_slots", "norm_mlp"):
        rows += _norm(f"{ours}.{name}", f"{theirs}/{name}")
    for q in "qkv":
        rows += _dense(f"{ours}.to_{q}", f"{theirs}/project_{q}", bias=False)
    return rows + _dense(f"{ours}.mlp.0", f"{theirs}/mlp/layer_with_weights-0") \
        + _dense(f"{ours}.mlp.2", f"{theirs}/mlp/layer_with_weights-1")


def model_mapping(task: str, num_encoder_convs: int, num_decoder_convs: int) -> list[tuple[str, str, str]]:
    """(slotlab key, official variable, transform) for a whole model of ``task``."""
    rows = []
    for i in range(num_encoder_convs):  # slotlab's encoder.cnn interleaves ReLUs: convs at 0, 2, 4, ...
        rows += _conv(f"encoder.cnn.{2 * i}", f"encoder_cnn/layer_with_weights-{i}")
    rows += _dense("encoder.pos.proj", "encoder_pos/dense") + _norm("encoder.norm", "layer_norm")
    rows += _dense("encoder.mlp.0", "mlp/layer_with_weights-0") + _dense("encoder.mlp.2", "mlp/layer_with_weights-1")
    return rows + slot_attention_mapping() + OFFICIAL[task].head_rows(num_decoder_convs)


def _decoder_rows(num_decoder_convs: int) -> list[tuple[str, str, str]]:
    """The official decoder: its position embedding and transposed convs (upsamplings, then two of stride 1)."""
    rows = _dense("decoder.pos.proj", "decoder_pos/dense")
    names = [f"decoder.ups.{i}" for i in range(num_decoder_convs - 2)] + ["decoder.conv5", "decoder.out"]
    for i, ours in enumerate(names):
        rows += _conv(ours, f"decoder_cnn/layer_with_weights-{i}", "conv_transpose")
    return rows


def _classifier_rows(num_decoder_convs: int) -> list[tuple[str, str, str]]:
    """The official property classifier: two dense layers (``num_decoder_convs`` is 0 and unused)."""
    return _dense("head.0", "mlp_classifier/layer_with_weights-0") + \
        _dense("head.2", "mlp_classifier/layer_with_weights-1")


def _count(net: dict[str, np.ndarray], stack: str) -> int:
    return len({m.group(1) for n in net if (m := re.match(rf"{stack}/layer_with_weights-(\d+)/kernel$", n))})


def _shape(net: dict[str, np.ndarray], name: str) -> tuple[int, ...]:
    if name not in net:
        raise CheckpointMismatchError(f"the checkpoint lacks the variable '{name}'")
    return tuple(net[name].shape)


# ---------------------------------------------------------------------------------------------------- building


def build_config(task: str, net: dict[str, np.ndarray], num_slots: int | None = None,
                 resolution: int = 128) -> ExperimentConfig:
    """The slotlab preset of ``task`` with the sizes read from the checkpoint's variable shapes."""
    official = OFFICIAL[task]
    try:
        cfg = get_experiment(official.preset)
    except KeyError as err:
        raise ValueError(f"this slotlab has no '{official.preset}' preset for task {task!r}") from err
    m = cfg.model
    kernel = _shape(net, "encoder_cnn/layer_with_weights-0/kernel")  # (h, w, 3, C)
    m.encoder_kernel, m.encoder_channels = kernel[0], kernel[3]
    m.encoder_mlp_dim = _shape(net, "mlp/layer_with_weights-0/kernel")[1]
    m.slot_dim = _shape(net, "slot_attention/slots_mu")[-1]
    m.mlp_hidden_dim = _shape(net, "slot_attention/mlp/layer_with_weights-0/kernel")[1]
    m.resolution = resolution
    m.num_slots = num_slots or m.num_slots
    official.read_sizes(m, net, resolution)
    return cfg


def _decoder_sizes(m: ModelConfig, net: dict[str, np.ndarray], resolution: int) -> None:
    """Object discovery: stride-1 encoder convs, the decoder's width and broadcast grid."""
    m.encoder_strides = [1] * _count(net, "encoder_cnn")
    m.decoder_channels = _shape(net, "decoder_cnn/layer_with_weights-0/kernel")[2]  # (h, w, out, in)
    upsamplings = _count(net, "decoder_cnn") - 2  # the last two transposed convs have stride 1
    if upsamplings < 0 or resolution % 2**upsamplings:
        raise CheckpointMismatchError(f"decoder_cnn has {upsamplings + 2} layers: cannot decode to {resolution} px")
    m.broadcast_size = resolution // 2**upsamplings


def _classifier_sizes(m: ModelConfig, net: dict[str, np.ndarray], resolution: int) -> None:
    """Set prediction: the preset's strided encoder (checked against the checkpoint) and the head's width."""
    convs = _count(net, "encoder_cnn")
    if convs != len(m.encoder_strides):
        raise CheckpointMismatchError(f"encoder_cnn has {convs} convolutions; the official set-prediction "
                                      f"encoder has {len(m.encoder_strides)} (strides {m.encoder_strides})")
    m.head_hidden_dim = _shape(net, "mlp_classifier/layer_with_weights-0/kernel")[1]


@dataclass(frozen=True)
class OfficialModel:
    """One of the two official models, as the converter needs it."""

    preset: str  # the slotlab preset a converted run starts from (its sizes then read from the checkpoint)
    head: str  # the variable scope of its part after Slot Attention (which also tells the two apart)
    head_rows: Callable[[int], list[tuple[str, str, str]]]  # number of decoder convs -> mapping rows of the head
    read_sizes: Callable[[ModelConfig, dict, int], None]  # (model config, variables, resolution): its own sizes


OFFICIAL = {  # --task name -> the official model
    "discovery": OfficialModel("clevr6", "decoder_cnn", _decoder_rows, _decoder_sizes),
    "set": OfficialModel("clevr_set", "mlp_classifier", _classifier_rows, _classifier_sizes),
}


def convert_weights(net: dict[str, np.ndarray], rows: list[tuple[str, str, str]], model: nn.Module,
                    what: str = "model") -> dict[str, torch.Tensor]:
    """Official variables -> ``model`` state dict entries by ``rows`` (slotlab key, official name, transform),
    every layout converted and every shape checked; every parameter of ``model`` must be covered."""
    missing = sorted({theirs for _, theirs, _ in rows if theirs not in net})
    if missing:
        raise CheckpointMismatchError(f"the checkpoint lacks {len(missing)} variable(s) of the official {what}: "
                                      f"{', '.join(missing)}")
    target = model.state_dict()
    weights, problems = {}, []
    for ours, theirs, kind in rows:
        try:
            value = TRANSFORMS[kind](net[theirs])
        except (ValueError, IndexError):
            value = None
        if value is None or tuple(value.shape) != tuple(target[ours].shape):
            problems.append(f"'{theirs}' has shape {tuple(net[theirs].shape)}; slotlab's {ours} needs "
                            f"{tuple(target[ours].shape)} after the {kind} layout change")
            continue
        weights[ours] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    if problems:
        raise CheckpointMismatchError("wrong shapes in the checkpoint:\n  " + "\n  ".join(problems))
    uncovered = [n for n, _ in model.named_parameters() if n not in weights]
    if uncovered:
        raise RuntimeError(f"official_tf: no official variable maps to {uncovered} (a bug in the mapping)")
    unused = sorted(set(net) - {theirs for _, theirs, _ in rows})
    if unused:
        log.warning("ignored %d checkpoint variable(s) that the %s does not use: %s", len(unused), what,
                    ", ".join(unused[:10]))
    return weights


def convert(variables: dict[str, np.ndarray], task: str | None = None, num_slots: int | None = None,
            resolution: int = 128) -> tuple[nn.Module, ExperimentConfig]:
    """Checkpoint variables ({object-graph name: array}) -> (slotlab model with the weights, its config)."""
    net = network_variables(variables)
    found = detect_task(net) if task is None else task
    if found not in OFFICIAL:
        raise ValueError(f"task must be one of {sorted(OFFICIAL)}, got {found!r}")
    cfg = build_config(found, net, num_slots, resolution)
    model = build_model(cfg.model)
    state = model.state_dict()
    rows = model_mapping(found, _count(net, "encoder_cnn"), _count(net, "decoder_cnn"))
    state.update(convert_weights(net, rows, model, f"{found} model"))
    model.load_state_dict(state)
    return model.eval(), cfg


def convert_official_tf(checkpoint: str | Path, out: str | Path, task: str | None = None,
                        num_slots: int | None = None, resolution: int = 128, force: bool = False) -> Path:
    """``slotlab convert official-tf``: write a run directory (config.json, checkpoints/best.safetensors) holding
    the official checkpoint's weights. ``task`` None = detect from the variables. An existing ``out`` is replaced
    only if it is a slotlab run directory and ``force``; the new directory appears whole or not at all. Returns
    ``out``."""
    from slotlab.data.cache import _atomic_dir
    from slotlab.rundir import RunDir, check_output, output_lock

    out = Path(out)
    with output_lock(out):
        check_output(out, "run", force, sources=(checkpoint,))
        variables, prefix = read_tf_checkpoint(checkpoint)
        model, cfg = convert(variables, task, num_slots, resolution)
        step = int(variables.get(f"global_step{SUFFIX}", 0))
        cfg.description = f"Official TF checkpoint {prefix} (step {step}), converted by slotlab convert official-tf."
        with _atomic_dir(out, kind="run") as tmp:
            run = RunDir(tmp)
            run.save_config(cfg)
            state = {"step": step, "source": f"official-tf:{prefix}"}
            save_checkpoint(run.checkpoint("best"), model, state=state, config=cfg.to_dict())
    return out
