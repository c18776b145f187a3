"""Keeps TensorFlow's start-up noise away from users of a CPU machine.

TensorFlow's C++ runtime writes lines such as ``I0000 … port.cc:153] oneDNN custom operations are on …``,
``cudart_stub.cc … Could not find cuda drivers`` and ``E0000 … failed call to cuInit: … UNKNOWN ERROR (303)`` to
file descriptor 2 *before* absl logging is initialised, so ``TF_CPP_MIN_LOG_LEVEL`` does not stop all of them, and
which ones print depends on the CPU and the host. A user reads ``E0000 … UNKNOWN ERROR`` as a failure. `install`
makes the first ``import tensorflow`` (by any path: keras, tfds, tfmot) run with fd 2 captured, forces the device
probe (where cuInit is called) inside the capture, and writes back every captured line that is not known start-up
noise, so real warnings still reach the user. Nothing here imports TensorFlow.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

# Lines TensorFlow prints on every start on a machine without a GPU (or without AVX512/oneDNN variations), and the
# notices of an int8 calibration and of a LiteRT interpreter's first XNNPACK delegate.
NOISE = re.compile(
    r"absl::InitializeLog|oneDNN custom operations|cudart_stub|cuInit|cuda_(?:platform|executor|diagnostics|dnn|"
    r"fft|blas)|cpu_feature_guard|This TensorFlow binary is optimized|rebuild TensorFlow with the appropriate|"
    r"TF-TRT Warning|Unable to register cu(?:DNN|FFT|BLAS) factory|computation_placer|NodeDef mentions attribute|"
    r"Could not find cuda drivers|GPU will not be used|successful NUMA node read|TF_ENABLE_ONEDNN_OPTS|"
    r"fully_quantize: \d+, inference_type|Created TensorFlow Lite XNNPACK delegate")


def is_noise(line: str) -> bool:
    """True for one of TensorFlow's known start-up or conversion notices (never for a Python traceback line)."""
    return bool(NOISE.search(line))


@contextlib.contextmanager
def filtered_stderr():
    """Captures file descriptor 2 (C++ and Python writes alike) for the block, then writes back the lines that are
    not `is_noise`. Nothing is lost: on an exception the captured lines are written back the same way."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode(errors="replace").splitlines(keepends=True)
                    if line.strip() and not is_noise(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class _QuietTensorFlow(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` once and wraps its loader so that the import and the device probe run under
    `filtered_stderr`."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with filtered_stderr():
            self._loader.exec_module(module)
            # The CUDA probe (and its cuInit error) runs on the first device query; listing physical devices does
            # not create logical devices, so tf.distribute can still configure them afterwards.
            module.config.list_physical_devices()


def install() -> None:
    """Makes the first import of TensorFlow in this process quiet (no-op once TensorFlow is imported)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietTensorFlow) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietTensorFlow())
