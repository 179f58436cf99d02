"""The official Slot Attention architecture in Keras 2, written from the official model.py (docs/reference.md).

A reference for the TensorFlow side of slotlab's parity test (tests/interop/test_official_tf.py) and of the speed
benchmark: the same layers, the same attribute names and so the same checkpoint variable names as
google-research/slot_attention ``model.py`` (object discovery ``SlotAttentionAutoEncoder``, set prediction
``SlotAttentionClassifier``), wrapped by :func:`build_model` in a functional ``keras.Model`` as the official
training scripts do. The official training saves ``tf.train.Checkpoint(network=model, optimizer=..., global_step=...)``;
:func:`save_checkpoint` writes the same object structure.

Keras 2 (the ``tf_keras`` package) is used, not the Keras 3 that TensorFlow >= 2.16 calls ``tf.keras``: the
released checkpoints were written by Keras 2 (TF 2.2-2.3 era), whose object-graph names (``layer_with_weights-0``,
``kernel``, ``recurrent_kernel``) Keras 3 does not reproduce. Install with ``pip install tensorflow-cpu`` and
``pip install --no-deps tf-keras`` (see docs/official_checkpoints.md).

Importing this module imports TensorFlow; slotlab's own modules never import it.

Differences from the official code, for testing only: channel widths are arguments (defaults = the official 64,
128), and ``call`` takes optional ``noise`` (B, K, D) for the initial slots, so both frameworks can start from the
same slots. Layouts are NHWC. Glossary: B batch, N inputs, K slots, D slot size, H, W, C.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras

L = keras.layers


class SlotAttention(L.Layer):
    """Official ``SlotAttention``. inputs (B, N, C) -> slots (B, K, D)."""

    def __init__(self, num_iterations: int, num_slots: int, slot_size: int = 64, mlp_hidden_size: int = 128,
                 epsilon: float = 1e-8) -> None:
        super().__init__()
        self.num_iterations, self.num_slots = num_iterations, num_slots
        self.slot_size, self.epsilon = slot_size, epsilon
        self.norm_inputs = L.LayerNormalization()  # Keras default epsilon 1e-3
        self.norm_slots = L.LayerNormalization()
        self.norm_mlp = L.LayerNormalization()
        self.slots_mu = self.add_weight(name="slots_mu", shape=[1, 1, slot_size], initializer="glorot_uniform")
        self.slots_log_sigma = self.add_weight(name="slots_log_sigma", shape=[1, 1, slot_size],
                                               initializer="glorot_uniform")
        self.project_q = L.Dense(slot_size, use_bias=False, name="q")
        self.project_k = L.Dense(slot_size, use_bias=False, name="k")
        self.project_v = L.Dense(slot_size, use_bias=False, name="v")
        self.gru = L.GRUCell(slot_size)  # reset_after=True, gates [z | r | h]
        self.mlp = keras.Sequential([L.Dense(mlp_hidden_size, activation="relu"), L.Dense(slot_size)], name="mlp")

    def call(self, inputs, noise=None):
        inputs = self.norm_inputs(inputs)
        k = self.project_k(inputs)  # (B, N, D)
        v = self.project_v(inputs)  # (B, N, D)
        if noise is None:
            noise = tf.random.normal([tf.shape(inputs)[0], self.num_slots, self.slot_size])
        slots = self.slots_mu + tf.exp(self.slots_log_sigma) * noise  # (B, K, D)
        for _ in range(self.num_iterations):
            slots_prev = slots
            q = self.project_q(self.norm_slots(slots)) * self.slot_size**-0.5  # (B, K, D)
            attn = tf.nn.softmax(tf.einsum("bnd,bkd->bnk", k, q), axis=-1)  # (B, N, K), softmax over slots
            attn = attn + self.epsilon
            attn = attn / tf.reduce_sum(attn, axis=1, keepdims=True)  # weighted mean over the inputs
            updates = tf.einsum("bnk,bnd->bkd", attn, v)  # (B, K, D)
            D = self.slot_size
            flat, _ = self.gru(tf.reshape(updates, [-1, D]), [tf.reshape(slots_prev, [-1, D])])  # (B*K, D)
            slots = tf.reshape(flat, tf.shape(updates))  # (B, K, D)
            slots = slots + self.mlp(self.norm_mlp(slots))
        return slots


def build_grid(resolution: tuple[int, int]) -> np.ndarray:
    """(1, H, W, 4) grid [y, x, 1 - y, 1 - x], linspace(0, 1) per axis, 'ij' indexing (official ``build_grid``)."""
    ys, xs = (np.linspace(0.0, 1.0, n, dtype=np.float32) for n in resolution)
    grid = np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1)[None]  # (1, H, W, 2)
    return np.concatenate([grid, 1.0 - grid], axis=-1)


class SoftPositionEmbed(L.Layer):
    """x + Dense(grid): (B, H, W, C) -> (B, H, W, C)."""

    def __init__(self, hidden_size: int, resolution: tuple[int, int]) -> None:
        super().__init__()
        self.dense = L.Dense(hidden_size, use_bias=True)
        self.grid = build_grid(resolution)

    def call(self, inputs):
        return inputs + self.dense(self.grid)


def _conv_stack(channels: int, strides: tuple[int, ...], name: str) -> keras.Sequential:
    return keras.Sequential([L.Conv2D(channels, 5, strides=s, padding="SAME", activation="relu") for s in strides],
                            name=name)


def _encode(model, image):
    """The shared front end: CNN, position embedding, flatten to a set, LayerNorm + MLP. -> (B, N, C)."""
    x = model.encoder_pos(model.encoder_cnn(image))  # (B, H', W', C)
    x = tf.reshape(x, [-1, x.shape[1] * x.shape[2], x.shape[3]])  # (B, N, C)
    return model.mlp(model.layer_norm(x))


class SlotAttentionAutoEncoder(L.Layer):
    """Object discovery, official ``SlotAttentionAutoEncoder``. image (B, H, W, 3) -> dict recon, recons, masks, slots.

    ``decoder="broadcast"`` (not in the official code; for the speed benchmark of the Multi-dSprites / Tetrominoes
    models) broadcasts at full resolution: ``decoder_layers`` 5x5 convs with ReLU, then a 3x3 conv to 4 channels.
    """

    def __init__(self, resolution: tuple[int, int], num_slots: int, num_iterations: int, channels: int = 64,
                 slot_size: int = 64, mlp_hidden_size: int = 128, decoder_initial_size: tuple[int, int] = (8, 8),
                 decoder: str = "upsample", decoder_layers: int = 3):
        super().__init__()
        if decoder not in ("upsample", "broadcast"):
            raise ValueError(f"decoder must be 'upsample' or 'broadcast', got {decoder!r}")
        self.resolution, self.num_slots = resolution, num_slots
        self.decoder_initial_size = tuple(resolution) if decoder == "broadcast" else decoder_initial_size
        self.encoder_cnn = _conv_stack(channels, (1, 1, 1, 1), "encoder_cnn")
        if decoder == "broadcast":
            self.decoder_cnn = keras.Sequential(
                [L.Conv2D(channels, 5, padding="SAME", activation="relu") for _ in range(decoder_layers)]
                + [L.Conv2D(4, 3, padding="SAME", activation=None)], name="decoder_cnn")
        else:
            upsamplings = int(np.log2(resolution[0] // decoder_initial_size[0]))
            self.decoder_cnn = keras.Sequential(
                [L.Conv2DTranspose(channels, 5, strides=2, padding="SAME", activation="relu")
                 for _ in range(upsamplings)]
                + [L.Conv2DTranspose(channels, 5, strides=1, padding="SAME", activation="relu"),
                   L.Conv2DTranspose(4, 3, strides=1, padding="SAME", activation=None)],
                name="decoder_cnn")
        self.encoder_pos = SoftPositionEmbed(channels, resolution)
        self.decoder_pos = SoftPositionEmbed(slot_size, self.decoder_initial_size)
        self.layer_norm = L.LayerNormalization()
        self.mlp = keras.Sequential([L.Dense(channels, activation="relu"), L.Dense(channels)], name="feedforward")
        self.slot_attention = SlotAttention(num_iterations, num_slots, slot_size, mlp_hidden_size)

    def call(self, image, noise=None):
        slots = self.slot_attention(_encode(self, image), noise=noise)  # (B, K, D)
        B, K, D = tf.shape(slots)[0], slots.shape[1], slots.shape[2]
        x = tf.tile(tf.reshape(slots, [-1, 1, 1, D]), [1, *self.decoder_initial_size, 1])  # (B*K, 8, 8, D)
        x = self.decoder_cnn(self.decoder_pos(x))  # (B*K, H, W, 4)
        x = tf.reshape(x, [B, K, *x.shape[1:]])  # (B, K, H, W, 4)
        recons, logits = x[..., :3], x[..., 3:]
        masks = tf.nn.softmax(logits, axis=1)  # alpha masks compete across slots
        return {"recon": tf.reduce_sum(recons * masks, axis=1), "recons": recons, "masks": masks, "slots": slots}


class SlotAttentionClassifier(L.Layer):
    """Set prediction, official ``SlotAttentionClassifier``. image (B, 128, 128, 3) -> predictions (B, K, 19)
    in [0, 1]."""

    def __init__(self, resolution: tuple[int, int], num_slots: int, num_iterations: int, channels: int = 64,
                 slot_size: int = 64, mlp_hidden_size: int = 128, num_targets: int = 19):
        super().__init__()
        self.encoder_cnn = _conv_stack(channels, (1, 2, 2, 1), "encoder_cnn")
        self.encoder_pos = SoftPositionEmbed(channels, (resolution[0] // 4, resolution[1] // 4))
        self.layer_norm = L.LayerNormalization()
        self.mlp = keras.Sequential([L.Dense(channels, activation="relu"), L.Dense(channels)], name="feedforward")
        self.slot_attention = SlotAttention(num_iterations, num_slots, slot_size, mlp_hidden_size)
        self.mlp_classifier = keras.Sequential(
            [L.Dense(64, activation="relu"), L.Dense(num_targets, activation="sigmoid")], name="mlp_classifier")

    def call(self, image, noise=None):
        slots = self.slot_attention(_encode(self, image), noise=noise)  # (B, K, D)
        return {"predictions": self.mlp_classifier(slots), "slots": slots}


def build_model(task: str, resolution: tuple[int, int] = (128, 128), batch_size: int | None = None,
                num_slots: int = 7, num_iterations: int = 3, **widths) -> keras.Model:
    """The official wrapping: a functional Model around one layer, so variables live under ``layer_with_weights-0``.

    ``task``: "discovery" (SlotAttentionAutoEncoder) or "set" (SlotAttentionClassifier). The inner layer is
    ``model.layers[1]``; call it with ``noise=`` to fix the initial slots.
    """
    layers = {"discovery": SlotAttentionAutoEncoder, "set": SlotAttentionClassifier}
    if task not in layers:
        raise ValueError(f"task must be 'discovery' or 'set', got {task!r}")
    image = keras.Input([*resolution, 3], batch_size)
    return keras.Model(inputs=image, outputs=layers[task](resolution, num_slots, num_iterations, **widths)(image))


def save_checkpoint(model: keras.Model, directory: str, step: int = 0) -> str:
    """Save as the official training does: Checkpoint(network, optimizer, global_step) via a CheckpointManager.

    One Adam update with learning rate 0 creates the optimizer's slot variables (as in a real training checkpoint)
    without changing the weights. Returns the checkpoint prefix.
    """
    optimizer = keras.optimizers.legacy.Adam(learning_rate=0.0, epsilon=1e-8)  # the TF 2.2-era optimizer
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in model.trainable_variables])
    global_step = tf.Variable(step, trainable=False, name="global_step", dtype=tf.int64)
    ckpt = tf.train.Checkpoint(network=model, optimizer=optimizer, global_step=global_step)
    return tf.train.CheckpointManager(ckpt, directory, max_to_keep=5).save()
