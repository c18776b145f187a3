"""The bottom layer every other package may import: library errors, atomic file I/O and run-directory state.

Nothing here imports TensorFlow except ``common.epoch_state`` (the per-epoch checkpoint of custom loops)."""
