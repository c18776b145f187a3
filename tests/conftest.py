"""Shared test set-up and helpers.

Tiers: ``make test-fast`` runs ``-m "not slow"`` (in-process unit tests on tiny configs); ``make test`` runs
everything CI runs. A test that takes more than ~10 s on 2 cores is marked ``@pytest.mark.slow``. Every test has a
timeout (pytest.ini; override with ``@pytest.mark.timeout(N)``).
"""
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def module_env(**extra) -> dict:
    """The environment of a command under test: repository on PYTHONPATH, TensorFlow's INFO/WARNING logs off."""
    path = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, PYTHONPATH=ROOT if not path else ROOT + os.pathsep + path, TF_CPP_MIN_LOG_LEVEL="2",
                **extra)


def run_module(module: str, *args, timeout: float = 600, wait: bool = True, **env):
    """Runs ``python -m module *args`` from the repository root; returns the CompletedProcess (text output), or the
    Popen (own session, pipes) with ``wait=False``."""
    cmd = [sys.executable, "-m", module, *map(str, args)]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                env=module_env(**env), start_new_session=True)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=module_env(**env), timeout=timeout)


def error_line(result, module: str) -> str:
    """The command's own one-line error: exit status 2, no traceback, and exactly one stderr line that starts with
    the program's name (``recipes.train`` → ``train.py:``; argparse benchmarks: ``spos_cost:``). Robust to anything
    else a library prints."""
    name = module.rsplit(".", 1)[-1]
    prog = (name + ".py:", name + ":")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    own = [line for line in result.stderr.splitlines() if line.startswith(prog)]
    assert len(own) == 1, result.stderr[-3000:]
    return own[0]
