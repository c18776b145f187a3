"""One command per measured claim (``python -m benchmarks.<name> --out benchmarks/results/<name>.json``).

Importing the package makes TensorFlow's later first import quiet (`common.quiet_tf`: the CPU host's oneDNN /
cudart / cuInit start-up lines are filtered, real warnings still pass), so no benchmark prints them, whichever
module imports TensorFlow first. Nothing here imports TensorFlow.
"""
from common import quiet_tf

quiet_tf.install()
