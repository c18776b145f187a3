"""Shared test set-up and helpers.

Tiers: ``make test-fast`` runs ``-m "not slow"`` (in-process unit tests on tiny configs); ``make test`` runs
everything CI runs. A test that takes more than ~10 s on 2 cores is marked ``@pytest.mark.slow``. Every test has a
timeout (pytest.ini; override with ``@pytest.mark.timeout(N)``).

Helpers (``from conftest import ...``; pytest puts tests/ on ``sys.path``): `run_module` / `run_python` run a command
under test in a fresh process, `error_line` checks the one-line bad-input contract, `kill_once_exists` kills a run
mid-way for the resume tests, `randomized_weights` gives parity checks non-vacuous logits, `tiny_spec_dict` /
`tiny_backbone` / `write_spec` are small specs shared by several files.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# verified-image manifests (inputs.images) of test runs stay out of the user's ~/.cache
os.environ.setdefault("NAS_ZOO_CACHE", tempfile.mkdtemp(prefix="nas_zoo_cache-"))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from models.weights import randomized_weights  # noqa: E402,F401  (tests import it from here, as the benchmarks do)


def module_env(**extra) -> dict:
    """The environment of a command under test: repository on PYTHONPATH, TensorFlow's INFO/WARNING logs off."""
    path = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, PYTHONPATH=ROOT if not path else ROOT + os.pathsep + path, TF_CPP_MIN_LOG_LEVEL="2",
                **extra)


def _run(cmd, timeout, wait, log, env):
    if not wait:
        if log is None:
            return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                    env=module_env(**env), start_new_session=True)
        with open(log, "w") as f:  # the child keeps its own copy of the descriptor
            return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=module_env(**env),
                                    start_new_session=True)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=module_env(**env), timeout=timeout)


def run_module(module: str, *args, timeout: float = 600, wait: bool = True, log=None, **env):
    """Runs ``python -m module *args`` from the repository root; returns the CompletedProcess (text output), or the
    Popen (own session, pipes) with ``wait=False`` — stdout and stderr both to the file ``log`` where given."""
    return _run([sys.executable, "-m", module, *map(str, args)], timeout, wait, log, env)


def run_python(code: str, *args, timeout: float = 600, wait: bool = True, log=None, **env):
    """``python -c code *args`` as `run_module` runs a module (same environment, working directory and returns)."""
    return _run([sys.executable, "-c", code, *map(str, args)], timeout, wait, log, env)


def python_json(code: str, timeout: float = 600):
    """Runs ``code`` (`run_python`), asserts it succeeded and returns the JSON of its last stdout line."""
    r = run_python(code, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def kill_once_exists(proc, path, timeout: float, poll: float = 0.05, what: str = "run") -> None:
    """SIGKILLs the session of ``proc`` (a `run_module` ``wait=False`` Popen) as soon as ``path`` exists (waiting up
    to ``timeout`` s, checking every ``poll`` s); asserts the process was still running then."""
    deadline = time.time() + timeout
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(poll)
    assert proc.poll() is None, f"the {what} finished before it could be killed: " + proc.stderr.read()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def error_line(result, module: str) -> str:
    """The command's own one-line error: exit status 2, no traceback, and exactly one stderr line that starts with
    the program's name (``recipes.train`` → ``train.py:``; argparse benchmarks: ``spos_cost:``; the zoo CLI:
    ``python -m zoo describe:``). Robust to anything else a library prints."""
    name = module.rsplit(".", 1)[-1]
    prog = (name + ".py:", name + ":", f"python -m {module}:", f"python -m {module} ")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    own = [line for line in result.stderr.splitlines() if line.startswith(prog)]
    assert len(own) == 1, result.stderr[-3000:]
    return own[0]



def tiny_spec_dict(**over) -> dict:
    """A two-block 32×32 MBConv spec dict (a plain block with a residual, a mixed-kernel strided one with SE);
    top-level keys replaced by ``over``."""
    d = {"schema_version": 1, "name": "tiny", "family": "mbconv",
         "input": {"size": 32, "mean": [127.5] * 3, "std": [127.5] * 3},
         "stem": {"filters": 8, "kernel": 3, "stride": 2, "act": "relu"},
         "stages": [[{"block": "ir", "kernels": [3], "expand_channels": None, "filters": 8, "stride": 1,
                      "act": "relu"}],
                    [{"block": "ir", "kernels": [3, 5], "split": [8, 8], "expand_channels": 16, "filters": 16,
                      "stride": 2, "act": "swish", "se_channels": 4}]],
         "head": {"filters": 32, "act": "relu", "dropout": 0.0, "classes": 5}}
    d.update(over)
    return d


def tiny_backbone(name: str, size: int = 64) -> dict:
    """A tiny detection backbone spec dict: four stride-2 stages (endpoints at strides 8, 16, 32), no head conv."""
    return {"schema_version": 1, "name": name, "family": "mbconv",
            "input": {"size": size, "mean": [127.5] * 3, "std": [127.5] * 3},
            "stem": {"filters": 8, "kernel": 3, "stride": 2, "act": "relu"},
            "stages": [[{"block": "ir", "kernels": [3], "expand_channels": 16, "filters": 8, "stride": 2,
                         "act": "relu"}],
                       [{"block": "ir", "kernels": [3], "expand_channels": 24, "filters": 12, "stride": 2,
                         "act": "relu"}],
                       [{"block": "ir", "kernels": [3], "expand_channels": 32, "filters": 16, "stride": 2,
                         "act": "relu"}],
                       [{"block": "ir", "kernels": [3], "expand_channels": 48, "filters": 24, "stride": 2,
                         "act": "relu"}]],
            "head": {"filters": None, "act": "relu", "dropout": 0.0, "classes": 10}}


def write_spec(directory, spec: dict):
    """Writes ``spec`` (a dict) to ``directory/<its name>.json``; returns that path (a ``pathlib.Path``)."""
    path = directory / f"{spec['name']}.json"
    path.write_text(json.dumps(spec))
    return path



def write_tiny_png(path, value: int = 0) -> None:
    """A real (decodable) 8×8 PNG: folder datasets are decoded in full when validated."""
    from PIL import Image
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    Image.new("RGB", (8, 8), (value % 256, 90, 20)).save(str(path))


# Seconds each file takes in `make test` (the junit times of a quiet two-worker run on a 2-core host, stop 32:
# 813 s over both workers, 418 s of wall time), the order `make test` hands files to its xdist workers
# (`--dist loadfile --no-loadscope-reorder`): longest first, so that no long file starts last and runs alone at the
# end (xdist's own reorder sorts files by their number of tests, which sent the few-test, minute-long end-to-end
# files last; an unlisted 60-second file did the same). Files not listed (under 3 s) follow in collection order.
# Only the order changes; which tests run does not.
FILE_SECONDS = {
    "test_metakernel_zoo.py": 85,
    "test_benchmarks.py": 70,
    "test_builder.py": 66,
    "test_search_recipe.py": 65,
    "test_finetune_yolo.py": 58,
    "test_train.py": 53,
    "test_spos.py": 52,
    "test_pipeline.py": 47,
    "test_latency.py": 33,
    "test_export.py": 31,
    "test_kernel_ablation.py": 30,
    "test_qat.py": 25,
    "test_cli_contract.py": 25,
    "test_fgnas_slow.py": 23,
    "test_search_dynamics.py": 22,
    "test_fold.py": 21,
    "test_kernel_latency.py": 17,
    "test_fgnas.py": 12,
    "test_metakernel.py": 11,
    "test_reparam.py": 10,
    "test_yolo.py": 9,
    "test_zoo.py": 8,
    "test_counting.py": 8,
    "test_mixed_precision.py": 7,
    "test_distill.py": 7,
    "test_data.py": 6,
    "test_spec.py": 5,
    "test_recipes.py": 4,
}


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: -FILE_SECONDS.get(item.path.name, 0))
