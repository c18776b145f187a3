"""Shared command-line plumbing for recipes and benchmarks: absl flags (with ``--flagfile``), one-line errors with
exit status 2, and TensorFlow's start-up noise kept off the terminal.

This is the only place where library errors (`common.errors.InputError` and its subclasses: data, spec, zoo,
weights, search-state errors) become one line on stderr and exit status 2. Entry points validate their input before
anything imports TensorFlow; `run` makes that later import quiet (`common.quiet_tf`).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

from absl import app, flags, logging

from common import quiet_tf
from common.checks import FLOAT32_MAX, is_finite32
from common.errors import InputError, UsageError
from common.flagfiles import FLAGFILE_MAX_BYTES, check_flagfiles  # noqa: F401 (FLAGFILE_MAX_BYTES: re-exported)


def _parse(argv):
    try:
        check_flagfiles(argv[1:])
    except UsageError as e:
        print(f"{os.path.basename(argv[0])}: {e}", file=sys.stderr)
        sys.exit(2)
    try:
        rest = flags.FLAGS(argv)
    except flags.Error as e:
        print(f"{os.path.basename(argv[0])}: {e}", file=sys.stderr)
        sys.exit(2)
    except (UnicodeDecodeError, OSError) as e:  # a --flagfile that is not UTF-8 text, or unreadable
        print(f"{os.path.basename(argv[0])}: --flagfile: cannot read it as flags ({e})", file=sys.stderr)
        sys.exit(2)
    bad = non_finite_flags()
    if bad:  # absl's bounds let NaN through (nan < 0 is False) and inf past a lower bound
        print(f"{os.path.basename(argv[0])}: {bad[0]}: must be a finite number within float32 range "
              f"(|value| <= {FLOAT32_MAX:.4g}; the computation is float32)", file=sys.stderr)
        sys.exit(2)
    bad = out_of_range_flags()
    if bad:
        print(f"{os.path.basename(argv[0])}: {bad[0]}", file=sys.stderr)
        sys.exit(2)
    for name in OUTPUT_FLAGS:  # the benchmarks' result, plot and cache files: checked before any work
        value = flags.FLAGS[name].value if name in flags.FLAGS else None
        if isinstance(value, str) and (value or name == "out"):  # an empty --plot / --lut: none written
            from common.checks import check_writable
            try:
                check_writable(value, f"--{name}")
            except InputError as e:
                print(f"{os.path.basename(argv[0])}: {e}", file=sys.stderr)
                sys.exit(2)
    return rest


# Flags naming a file a command writes (the absl benchmarks: result JSON, plot PNG, latency LUT cache): each must be
# a writable regular-file location (common.checks.check_writable) before any work. An empty value means "none".
OUTPUT_FLAGS = ("out", "plot", "lut")


# Upper bounds that hold for every command defining a flag of that name (absl's integer flags only had lower bounds):
# numpy/TensorFlow seeds are 32-bit; the spec schema caps input sizes at 4096; larger batches, timing loops or
# thread counts end in an out-of-memory or out-of-range traceback, not a run.
FLAG_RANGES = {"seed": (0, 2**32 - 1), "input_size": (1, 4096), "budget_input_size": (1, 4096),
               "batch_size": (1, 65536), "eval_batch": (1, 65536), "runs": (1, 1_000_000),
               "warmup": (0, 1_000_000), "threads": (1, 1024)}


def out_of_range_flags() -> list[str]:
    """One message per parsed integer flag named in `FLAG_RANGES` whose value lies outside its range."""
    bad = []
    for name, (lo, hi) in FLAG_RANGES.items():
        if name not in flags.FLAGS:
            continue
        value = flags.FLAGS[name].value
        if isinstance(value, int) and not isinstance(value, bool) and not lo <= value <= hi:
            bad.append(f"--{name}={value}: must be from {lo} to {hi}")
    return bad


def non_finite_flags() -> list[str]:
    """``--name=value`` of every parsed float flag (or float list flag) holding NaN, ±inf or a value past float32's
    range (|value| > `FLOAT32_MAX`): every model and optimizer computes in float32, where such a value is inf."""
    bad, seen = [], set()
    for key in flags.FLAGS:
        flag = flags.FLAGS[key]
        if flag.name in seen:
            continue
        seen.add(flag.name)
        values = flag.value if isinstance(flag.value, (list, tuple)) else [flag.value]
        if any(isinstance(v, float) and not is_finite32(v) for v in values):
            bad.append(f"--{flag.name}={flag.value}")
    return bad


def define_on_bad_image() -> None:
    """The ``--on_bad_image`` flag of every command that reads ``folder:`` data (its config field of that name)."""
    flags.DEFINE_enum("on_bad_image", "raise", ["raise", "skip"],
                      "folder: datasets: an image that cannot be decoded (truncated, corrupt) stops the command before "
                      "any work, naming the file ('raise'), or is left out with one warning line ('skip'). Every "
                      "image is decoded once (cached by size and modification time under $NAS_ZOO_CACHE, default "
                      "~/.cache/nas_zoo).")


def define_distillation() -> None:
    """``--teacher``, ``--temperature``, ``--mix`` and ``--mix_alpha`` (training.distill) of the train and search
    recipes (their config fields of those names)."""
    flags.DEFINE_string("teacher", "", "Distil from a frozen teacher instead of the labels: MODEL:WEIGHTS (a zoo name "
                                       "or spec .json, then a zoo tag or .npz), e.g. efficientnet_lite0:imagenet. The "
                                       "teacher sees the student's augmented (and --mix'ed) view; loss T² · "
                                       "KL(teacher ‖ student) (function matching, Beyer et al. 2022). Validation still "
                                       "scores the labels; training accuracy becomes agreement with the teacher.")
    flags.DEFINE_float("temperature", 1.0, "Distillation temperature T (0.05 to 100: below, the teacher's "
                       "probabilities and the loss round to one-hot and 0; above, to uniform).")
    flags.DEFINE_enum("mix", "none", ["none", "mixup", "cutmix", "both"], "Mix every training batch: mixup, cutmix, or "
                      "one of them per batch ('both'); targets are mixed alike (with --teacher the teacher sees the "
                      "mixed images).")
    flags.DEFINE_float("mix_alpha", 0.2, "Beta(alpha, alpha) of the mixing ratio (0.01 to 100).")


def run(main) -> None:
    """``app.run`` with a flags parser and error handling that keep bad input to one line and exit status 2."""
    quiet_tf.install()

    def wrapped(argv):
        logging.set_verbosity(logging.WARNING)  # TensorFlow's SavedModel/export INFO lines drown the results
        try:
            return main(argv)
        except InputError as e:
            print(f"{os.path.basename(sys.argv[0])}: {e}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:  # Ctrl-C: what is written is atomic; a rerun resumes
            print(f"{os.path.basename(sys.argv[0])}: interrupted; rerun the same command to resume", file=sys.stderr)
            sys.exit(130)

    app.run(wrapped, flags_parser=_parse)


def run_stage(name: str, args: list[str], log: str) -> float:
    """Runs ``python -m *args`` with its output in ``log``; returns the seconds it took. A stage that refused its
    input (exit 2) ends this command with its one line and exit 2; any other failure prints the log's tail and exits
    with status 1 (a stage broke)."""
    cmd = [sys.executable, "-m", *args]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    t0 = time.time()
    with open(log, "w") as f:
        f.write(" ".join(cmd) + "\n")
        f.flush()
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if r.returncode == 2:  # the stage refused its input: its own one line is the message
        with open(log) as f:
            lines = [x for x in f.read().splitlines() if x.strip()]
        print(f"{os.path.basename(sys.argv[0])}: stage {name}: {lines[-1] if lines else 'bad input'}",
              file=sys.stderr)
        raise SystemExit(2)
    if r.returncode:
        with open(log) as f:
            tail = f.read().splitlines()[-15:]
        print("\n".join(tail), file=sys.stderr)
        raise SystemExit(f"{os.path.basename(sys.argv[0])}: stage {name} failed (exit {r.returncode}); "
                         f"full log: {log}")
    return time.time() - t0


def print_rows(rows) -> None:
    """Prints ``(label, text)`` rows as an aligned two-column table."""
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
