"""Architecture search: supernets (meta-kernel, single-path one-shot), their strategies and cost models.

Every supernet offers the same small interface (:mod:`search.protocol`). Every serializable search layer is
registered under one Keras package name, :data:`PACKAGE`. Importing this package does not import TensorFlow.
"""

PACKAGE = "nas_zoo"  # keras.saving.register_keras_serializable(package=PACKAGE) for every search layer
