"""The bottom layer every other package may import: library errors, atomic file I/O and run-directory state.

Nothing here imports TensorFlow at module import (``common.epoch_state`` imports it when used)."""
