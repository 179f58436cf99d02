"""Interoperability with the official TensorFlow code: a Keras 2 build of the official architectures and the
conversion of released TensorFlow checkpoints to slotlab runs (needs ``pip install 'slotlab[tf]'``)."""
