"""The command-line contract of every recipe and benchmark (DESIGN.md §4): bad input is one line on stderr naming
what is wrong, exit status 2, no traceback — and it is found *before* TensorFlow is imported, so no start-up log
line of TensorFlow can ever precede it, whatever the host's CPU. Each case runs the entry point in a fresh process
and reports whether ``tensorflow`` was in ``sys.modules`` when it exited."""
import json
import os
import re
from pathlib import Path

import pytest
from conftest import ROOT, error_line, run_module, run_python

import zoo

PROBE = """
import runpy, sys
sys.argv = [{module!r}] + {args!r}
try:
    runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code
else:
    code = 0
print("TENSORFLOW_IMPORTED" if "tensorflow" in sys.modules else "TENSORFLOW_FREE", file=sys.stderr)
sys.exit(code)
"""

CASES = [
    ("recipes.train", ["--model=no_such_model", "--out_dir={out}"], "no_such_model"),
    ("recipes.train", ["--model=mixnet_s", "--dataset=folder:/nonexistent/dir", "--out_dir={out}"], "/nonexistent/dir"),
    ("recipes.train", ["--model=mixnet_s", "--weights=/nonexistent.npz", "--out_dir={out}"], "/nonexistent.npz"),
    ("recipes.evaluate",
     ["--model=mixnet_s", "--weights=", "--dataset=folder:/nonexistent/dir", "--json={out}/eval.json"],
     "/nonexistent/dir"),
    ("recipes.export_tflite", ["--model=no_such_model", "--output={out}/model.tflite"], "no_such_model"),
    ("recipes.benchmark_latency", ["--model=/nonexistent/model.tflite"], "/nonexistent/model.tflite"),
    ("recipes.qat", ["--model=no_such_model", "--out_dir={out}"], "no_such_model"),
    ("recipes.demo", ["--images=/nonexistent/photo.jpg", "--out_dir={out}"], "/nonexistent/photo.jpg"),
    ("recipes.pipeline", ["--dataset=folder:/nonexistent/dir", "--out_dir={out}"], "/nonexistent/dir"),
    ("recipes.finetune_yolo", ["--dataset=voc:/nonexistent/dir", "--out_dir={out}"], "/nonexistent/dir"),
    ("recipes.search_metakernel", ["--out_dir={out}"], "--target_macs"),
    ("recipes.search_metakernel", ["--target_macs=1e6", "--candidates=3,4", "--out_dir={out}"], "--candidates"),
    ("recipes.search_metakernel", ["--target_macs=1e6", "--candidates=3,33", "--out_dir={out}"], "from 1 to 31"),
    ("recipes.search_metakernel", ["--target_macs=1e6", "--dataset=folder:/nonexistent/dir", "--out_dir={out}"],
     "/nonexistent/dir"),
    ("recipes.search_metakernel", ["--target_macs=1e6", "--tau_start=0.5", "--tau_end=2", "--out_dir={out}"],
     "--tau_end"),
    ("recipes.search_metakernel", ["--target_macs=1e12", "--width=0.25", "--out_dir={out}"],
     "outside what the space can reach"),
    ("recipes.search_metakernel", ["--target_macs=1e6", "--space=ablation", "--width=0.5", "--out_dir={out}"],
     "--width/--depth"),
    ("recipes.train", ["--model=mixnet_s", "--epochs=10", "--val_freq=3", "--out_dir={out}"], "--val_freq"),
    ("recipes.search_spos", ["--max_macs=1", "--out_dir={out}"], "smallest path"),
    ("recipes.search_spos", ["--dataset=shapes", "--out_dir={file}"], "exists and is not a directory"),
    ("recipes.search_metakernel", ["--target_macs=3e6", "--dataset=shapes", "--out_dir={file}/run"],
     "is a file, not a directory"),
    ("recipes.pipeline", ["--out_dir={file}"], "exists and is not a directory"),
    ("recipes.demo", ["--out_dir={file}/demo"], "is a file, not a directory"),
    ("recipes.train", ["--model=mixnet_s", "--out_dir={file}/run"], "is a file, not a directory"),
    ("recipes.evaluate", ["--model=mixnet_s", "--weights=", "--json={file}/eval.json"], "is a file, not a directory"),
    ("recipes.search_spos", ["--choices=3,9", "--out_dir={out}"], "--choices"),
    ("recipes.search_spos", ["--dataset=folder:/nonexistent/dir", "--out_dir={out}"], "/nonexistent/dir"),
    ("benchmarks.supernet_cost", ["--ns=0", "--out={out}/result.json"], "--ns"),
    ("benchmarks.latency_model", ["--lut={tmp}", "--out={out}/result.json"], "is a directory"),
    ("benchmarks.quantization", ["--dataset=folder:/nonexistent/dir", "--out={out}/result.json"], "/nonexistent/dir"),
    ("benchmarks.spos_cost", ["--rounds=0", "--out={out}/result.json"], "rounds"),
    ("benchmarks.spos_proxy", ["--dataset=folder:/nonexistent/dir", "--out={out}/result.json"], "/nonexistent/dir"),
    ("benchmarks.kernel_ablation", ["--sets=1", "--out={out}/result.json"], "--sets"),
    ("benchmarks.kernel_ablation", ["--groups=A,D", "--out={out}/result.json"], "--groups"),
    ("benchmarks.kernel_ablation", ["--target=1000", "--dataset=shapes", "--out={out}/result.json"], "--target=1000"),
    ("benchmarks.metakernel_dynamics", ["--variants=paper,nope", "--out={out}/result.json"], "--variants"),
    ("benchmarks.metakernel_zoo", ["--candidates=3,4", "--out={out}/result.json"], "--candidates=3,4"),
    ("benchmarks.metakernel_zoo", ["--targets=1e5", "--dataset=shapes", "--out={out}/result.json"],
     "outside the search space"),
    ("benchmarks.metakernel_zoo", ["--publish_target=2", "--dataset=shapes", "--out={out}/result.json"],
     "--publish_target=2"),
    ("benchmarks.metakernel_zoo", ["--method=ednas", "--latency_table={tmp}", "--dataset=shapes",
                                   "--out={out}/result.json"], "--latency_table="),
    ("benchmarks.metakernel_zoo", ["--method=ednas", "--latency_table=benchmarks/results/ednas_latency_table.json",
                                   "--dataset=shapes", "--out={out}/result.json"], "space"),
    ("benchmarks.metakernel_zoo", ["--method=ednas", "--targets=0.001", "--dataset=shapes",
                                   "--out={out}/result.json"], "outside the search space"),
    ("benchmarks.detection_raccoon", ["--dataset=voc:/nonexistent/dir", "--out={out}/result.json"], "/nonexistent/dir"),
    ("benchmarks.detection_raccoon", ["--runs=pretrained,teacher", "--out={out}/result.json"],
     "--runs=pretrained,teacher: pretrained and/or scratch"),
    ("benchmarks.fgnas_cost", ["--kernels=3,4", "--out={out}/result.json"], "odd kernel sizes"),
    ("benchmarks.fgnas_ablation", ["--variants=P,X", "--out={out}/result.json"], "--variants"),
    ("benchmarks.reparam_ablation", ["--kernels=4", "--out={out}/result.json"], "--kernels"),
    ("benchmarks.fgnas_latency", ["--kernels=2", "--out={out}/result.json"], "--kernels"),
    ("recipes.search_metakernel", ["--target_macs=3e6", "--feedback", "--alpha_data=same", "--out_dir={out}"],
     "--feedback"),
    ("recipes.train", ["--model=mixnet_s", "--reparam=1,2", "--out_dir={out}"], "--reparam=1,2"),
    ("recipes.train", ["--model=mobilenet_v2_100", "--reparam=3,9", "--out_dir={out}"], "9 exceed(s) the largest"),
    ("benchmarks.fgnas_ablation", ["--fractions=1.5", "--out={out}/result.json"], "--fractions"),
    ("benchmarks.fgnas_cost", ["--rounds=0", "--out={out}/result.json"], "--rounds"),
    ("recipes.search_fgnas", ["--out_dir={out}"], "--target"),
    ("recipes.search_fgnas", ["--target=0.2", "--resource=latency", "--out_dir={out}"], "--latency_model"),
    ("recipes.search_fgnas", ["--target=0.2", "--resource=latency", "--latency_model={file}", "--out_dir={out}"],
     "--latency_model="),
    ("recipes.search_fgnas", ["--target=1e6", "--kernels=3,4", "--out_dir={out}"], "odd kernel sizes"),
    ("recipes.search_fgnas", ["--target=1e6", "--acts=relu,gelu", "--out_dir={out}"], "--acts=relu,gelu"),
    ("recipes.search_fgnas", ["--target=1e6", "--kernels=a", "--out_dir={out}"], "--kernels=a"),
    ("recipes.search_fgnas", ["--target=1e12", "--out_dir={out}"], "outside what the space can reach"),
    ("recipes.search_fgnas", ["--target=1e6", "--space=mbconv", "--width=8", "--out_dir={out}"], "--width"),
    ("recipes.search_fgnas", ["--target=1e6", "--dataset=folder:/nonexistent/dir", "--out_dir={out}"],
     "/nonexistent/dir"),
    ("recipes.search_fgnas", ["--target=1e6", "--out_dir={file}/run"], "is a file, not a directory"),
    # absl's bounds let NaN through (nan < 0 is False) and inf past a lower bound: every float flag is checked
    ("recipes.train", ["--model=mixnet_s", "--lr=nan", "--out_dir={out}"], "--lr=nan: must be a finite number"),
    ("recipes.qat", ["--model=mixnet_s", "--lr=inf", "--out_dir={out}"], "--lr=inf: must be a finite number"),
    ("recipes.search_metakernel", ["--target_macs=3e6", "--tau_start=nan", "--out_dir={out}"], "--tau_start=nan"),
    ("recipes.search_fgnas", ["--target=1e6", "--lam=nan", "--out_dir={out}"], "--lam=nan"),
    ("recipes.pipeline", ["--target_macs=nan", "--out_dir={out}"], "--target_macs=nan"),
    # finite in float64 but not in float32 (every model computes in float32): refused like NaN
    ("recipes.train", ["--model=mixnet_s", "--lr=1e308", "--out_dir={out}"],
     "--lr=1e+308: must be a finite number within float32 range"),
    ("recipes.train", ["--model=mixnet_s", "--weight_decay=1e39", "--out_dir={out}"], "--weight_decay=1e+39"),
    ("recipes.search_metakernel", ["--target_macs=1e6", "--width=0.25", "--lam=1e300", "--out_dir={out}"],
     "--lam=1e+300: must be a finite number within float32 range"),
    # float32-finite but past any rate, decay or λ that trains: the computation itself overflows
    ("recipes.train", ["--model=mixnet_s", "--lr=1e20", "--out_dir={out}"], "--lr=1e+20: must be at most 1000"),
    ("recipes.train", ["--model=mixnet_s", "--weight_decay=5", "--out_dir={out}"],
     "--weight_decay=5: must be at most 1"),
    ("recipes.search_metakernel", ["--target_macs=1e6", "--width=0.25", "--lam=1e30", "--out_dir={out}"],
     "--lam=1e+30: must be at most 1000"),
    ("recipes.search_spos", ["--lr=1e30", "--out_dir={out}"], "--lr=1e+30: must be at most 1000"),
    ("recipes.search_fgnas", ["--target=1e6", "--psi_lr=1e30", "--out_dir={out}"], "--psi_lr=1e+30: must be at most"),
    ("recipes.qat", ["--model=mixnet_s", "--lr=1e30", "--out_dir={out}"], "--lr=1e+30: must be at most 1000"),
    # a distillation temperature that makes every target one-hot (loss 0, nothing trains) or uniform
    ("recipes.train", ["--model=mixnet_s", "--teacher=mixnet_s:imagenet", "--temperature=1e-30", "--out_dir={out}"],
     "--temperature=1e-30: must be from 0.05 to 100"),
    ("recipes.search_metakernel", ["--target_macs=1e6", "--width=0.25", "--teacher=mixnet_s:imagenet",
                                   "--temperature=1e4", "--out_dir={out}"], "--temperature=10000: must be from 0.05"),
    ("recipes.train", ["--model=mixnet_s", "--teacher=mixnet_s:imagenet", "--mix=mixup", "--mix_alpha=1e-30",
                       "--out_dir={out}"], "--mix_alpha=1e-30: must be from 0.01 to 100"),
    # every width multiplier has an upper bound (4.0; FGNAS' channel count: 1024), not an overflow or OOM traceback
    ("recipes.search_metakernel", ["--target_macs=1e6", "--width=1e300", "--out_dir={out}"],
     "--width=1e+300: must be a finite number"),
    ("recipes.search_metakernel", ["--target_macs=1e6", "--width=4.5", "--out_dir={out}"],
     "--width=4.5: must be at most 4"),
    ("recipes.pipeline", ["--width=1e300", "--out_dir={out}"], "--width=1e+300: must be a finite number"),
    ("recipes.search_spos", ["--width=1e300", "--out_dir={out}"], "--width=1e+300: must be a finite number"),
    ("recipes.search_spos", ["--width=1e4", "--out_dir={out}"], "--width=10000: must be at most 4"),
    ("recipes.search_fgnas", ["--target=1e6", "--width=100000", "--out_dir={out}"],
     "--width=100000: must be at most 1024"),
    # integer flags with an upper bound for every command (numpy's 32-bit seeds, the schema's 4096 input size)
    ("recipes.train", ["--model=mixnet_s", "--seed=-1", "--out_dir={out}"], "--seed=-1: must be from 0 to"),
    ("recipes.evaluate", ["--model=mixnet_s", "--weights=", "--input_size=5000"], "--input_size=5000"),
    ("recipes.benchmark_latency", ["--model=mixnet_s", "--threads=100000"], "--threads=100000"),
    ("recipes.search_spos", ["--depth=4,4", "--out_dir={out}"], "--depth=4,4: four stages"),
    ("recipes.search_spos", ["--bits=2x2", "--out_dir={out}"], "--bits=2x2: comma-separated w:a pairs"),
    ("recipes.search_spos", ["--channel_ratios=a", "--out_dir={out}"], "--channel_ratios=a: comma-separated numbers"),
    ("recipes.pipeline", ["--data=shapes", "--dataset=folder:{tmp}", "--out_dir={out}"], "name different data"),
    ("recipes.evaluate", ["--model=mixnet_s", "--weights=", "--split=holdout"], "--split=holdout: the held-out"),
    # a batch whose activations alone exceed any host's memory: one line, not an out-of-memory kill (120 TB here)
    ("recipes.evaluate", ["--model=mixnet_s", "--weights=", "--input_size=4096", "--batch_size=65536"],
     "one batch's activations need at least"),
    ("recipes.train", ["--model=mixnet_s", "--input_size=4096", "--batch_size=65536", "--out_dir={out}"],
     "one batch's activations need at least"),
    ("recipes.train", ["--model=mixnet_s", "--flagfile={tmp}/binary.flags", "--out_dir={out}"],
     "binary.flags: not UTF-8 text"),
    # --flagfile: absl read /dev/zero until the OOM killer came, ran on past a circular include, ignored an empty one
    ("recipes.train", ["--model=mixnet_s", "--flagfile=/dev/zero", "--out_dir={out}"],
     "--flagfile=/dev/zero: is not a regular file"),
    ("recipes.train", ["--model=mixnet_s", "--flagfile={tmp}/self.flags", "--out_dir={out}"], "includes itself"),
    ("recipes.train", ["--model=mixnet_s", "--flagfile=", "--out_dir={out}"], "--flagfile=: empty"),
    # an output that is a device, FIFO or directory is never replaced by the atomic write's rename
    ("recipes.evaluate", ["--model=mixnet_s", "--weights=", "--json={tmp}/fifo"], "is a FIFO, not a regular file"),
    ("recipes.evaluate", ["--model=mixnet_s", "--weights=", "--json=/dev/null"], "is a character device"),
    ("recipes.evaluate", ["--model=mixnet_s", "--weights=", "--json={tmp}/fifo_link"], "a symlink to"),
    ("recipes.export_tflite", ["--model=mixnet_s", "--weights=", "--output={tmp}/fifo.tflite"], "is a FIFO"),
    ("benchmarks.spos_cost", ["--out={tmp}/fifo"], "is a FIFO"),
    # every file an absl benchmark writes, not only --out: the plot and the LUT cache (recipes.cli.OUTPUT_FLAGS)
    ("benchmarks.supernet_cost", ["--quick", "--out={tmp}/s.json", "--plot={tmp}/fifo"], "--plot="),
    ("benchmarks.latency_model", ["--quick", "--out={tmp}/l.json", "--lut={tmp}/fifo"], "--lut="),
    ("benchmarks.kernel_ablation", ["--out=/dev/null"], "is a character device"),
    # the derived spec's --output is checked before the search, not after it
    ("recipes.search_metakernel", ["--target_macs=3e6", "--output={tmp}", "--out_dir={out}"], "is a directory"),
    ("recipes.search_fgnas", ["--target=1e6", "--output={tmp}", "--out_dir={out}"], "is a directory"),
    # stop 28 sweep: outputs never replace inputs or a run's own files; names that fit; specs the data can feed
    ("recipes.evaluate", ["--model={tmp}/spec.json", "--weights=", "--json={tmp}/spec.json"], "is the --model input"),
    ("recipes.search_metakernel", ["--target_macs=3e6", "--output={out}/summary.json", "--out_dir={out}"],
     "the run's own summary.json"),
    ("recipes.evaluate", ["--model=mixnet_s", "--weights=", "--json={tmp}/" + "b" * 240 + ".json"], "at most 232 fit"),
    ("recipes.train", ["--model=mixnet_s", "--out_dir={tmp}/" + "c" * 300], "at most 255 fit"),
    ("recipes.train", ["--model={tmp}/chan1.json", "--out_dir={out}"], "the data pipelines decode RGB"),
    ("recipes.evaluate", ["--model={tmp}/tinystd.json", "--weights="], "input.std[0]: must be >= 1e-06"),
    ("recipes.evaluate", ["--model=metakernel_cifar10_3m", "--weights=cifar10", "--limit=8"], "class 0 differs"),
    ("recipes.pipeline", ["--target_macs=10", "--out_dir={out}"], "outside what the space can reach"),
    ("benchmarks.deploy_preprocessing", ["--out={tmp}"], "is a directory"),
    ("benchmarks.spos_cost", [], "the following arguments are required: --out"),
    # a backbone without the detection strides is refused before settings.json is written
    ("recipes.finetune_yolo", ["--backbone=metakernel_cifar10_3m", "--dataset=shapes", "--out_dir={out}"],
     "no feature map at stride(s)"),
]


@pytest.mark.parametrize("module,args,needle", CASES,
                         ids=[f"{m}:{' '.join(a[:2]) or 'no flags'}" for m, a, _ in CASES])
def test_bad_input_is_one_line_exit_2_before_tensorflow(tmp_path, module, args, needle):
    (tmp_path / "afile").write_text("a file where a directory is expected")
    (tmp_path / "binary.flags").write_bytes(b"\xff\xfe--lr=0.1\n")
    (tmp_path / "self.flags").write_text(f"--flagfile={tmp_path / 'self.flags'}\n--lr=0.1\n")
    os.mkfifo(tmp_path / "fifo")
    os.mkfifo(tmp_path / "fifo.tflite")
    os.symlink(tmp_path / "fifo", tmp_path / "fifo_link")
    spec = json.loads(open(zoo.spec_path("metakernel_cifar10_3m")).read())
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "chan1.json").write_text(json.dumps({**spec, "name": "chan1", "input": {
        **spec["input"], "channels": 1, "mean": [120.0], "std": [60.0]}}))
    (tmp_path / "tinystd.json").write_text(json.dumps({**spec, "input": {**spec["input"], "std": [1e-300] * 3}}))
    args = [a.format(out=tmp_path / "out", tmp=tmp_path, file=tmp_path / "afile") for a in args]
    r = run_python(PROBE.format(module=module, args=args), timeout=120)
    line = error_line(r, module)
    assert needle in line, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "TENSORFLOW_FREE", r.stderr
    assert not os.path.exists(tmp_path / "out") or not any(os.scandir(tmp_path / "out")), "nothing written"


FLOAT_FLAGS_PROBE = """
import importlib, io, contextlib, sys
from absl import flags
importlib.import_module({module!r})
from recipes import cli
names = sorted({{f.name for f in flags.FLAGS._flags().values() if f.flag_type() == "float"}})
assert names, "no float flags"
for name in names:
    for value in ("1e39", "-1e39", "3.5e38"):
        flags.FLAGS.unparse_flags()
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                cli._parse([{module!r}, *{extra!r}, f"--{{name}}={{value}}"])
                code = 0
            except SystemExit as e:
                code = e.code
        lines = err.getvalue().strip().splitlines()
        ok = code == 2 and len(lines) == 1 and f"--{{name}}=" in lines[0] and "float32 range" in lines[0]
        # absl's own bounds may refuse it first (one line naming the flag): as good
        ok = ok or (code == 2 and len(lines) == 1 and f"--{{name}}" in lines[0])
        assert ok, (name, value, code, err.getvalue())
print(len(names), "TENSORFLOW_FREE" if "tensorflow" not in sys.modules else "TENSORFLOW_IMPORTED")
"""
RECIPES = {"recipes.train": ["--model=mixnet_s"], "recipes.qat": ["--model=mixnet_s"], "recipes.search_metakernel": [],
           "recipes.search_ednas": [], "recipes.search_spos": [], "recipes.search_fgnas": [], "recipes.pipeline": [],
           "recipes.finetune_yolo": [], "recipes.evaluate": [], "recipes.export_tflite": [],
           "recipes.benchmark_latency": [], "recipes.demo": []}
NO_FLOAT_FLAGS = {"recipes.benchmark_latency", "recipes.demo", "recipes.evaluate", "recipes.export_tflite"}


@pytest.mark.parametrize("module", sorted(RECIPES))
def test_every_float_flag_must_be_finite_as_float32(module):
    """The class, not examples: every float flag of every recipe refuses ±1e39 and 3.5e38 (finite in float64, inf
    in float32) at parse time with one line naming it, before TensorFlow. The recipes without float flags are
    named, so one that gains a float flag is checked (and this list fails until it is updated)."""
    r = run_python(FLOAT_FLAGS_PROBE.format(module=module, extra=RECIPES[module]), timeout=120)
    if module in NO_FLOAT_FLAGS:
        assert r.returncode and "no float flags" in r.stderr, r.stderr[-3000:]
        return
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split()[-1] == "TENSORFLOW_FREE", r.stdout


@pytest.mark.slow
def test_tensorflow_start_up_noise_does_not_reach_the_user():
    """A command that does import TensorFlow (here: a bad dataset found only when loading) still prints only its own
    line: the oneDNN / cudart / cuInit notices of a CPU machine are filtered (common.quiet_tf)."""
    r = run_module("recipes.evaluate", "--model=mixnet_s", "--weights=", "--dataset=no_such_tfds_dataset_name",
                   timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("evaluate.py:"), r.stderr


def test_argparse_benchmarks_refuse_float_flags_outside_float32(tmp_path):
    """Every argparse benchmark (benchmarks.harness.ArgumentParser) refuses NaN, ±inf and |v| > float32's max in any
    float flag, as the recipes do: one line naming the flag, exit 2, before any work."""
    import re
    cases = []
    for path in sorted((Path(ROOT) / "benchmarks").glob("*.py")):
        text = path.read_text()
        if "harness.ArgumentParser" not in text:
            continue
        flag = re.search(r'add_argument\("(--[a-z_]+)"[^)]*type=float', text)
        if flag:
            cases.append((path.stem, flag.group(1)))
    assert len(cases) >= 5, cases
    for name, flag in cases:
        for value in ("nan", "1e39"):
            r = run_module(f"benchmarks.{name}", f"--out={tmp_path / 'x.json'}", f"{flag}={value}", timeout=120)
            line = error_line(r, f"benchmarks.{name}")
            assert flag in line and "float32" in line, (name, r.stderr)
    assert not (tmp_path / "x.json").exists()


def test_no_benchmark_prints_tensorflow_start_up_noise():
    """Every ``benchmarks.*`` module is quiet however TensorFlow is first imported: importing the package installs
    the filter, so no module has to remember it (these two once forgot)."""
    code = ("import benchmarks.ednas_latency, benchmarks.fgnas_latency, sys\n"
            "assert 'tensorflow' not in sys.modules\n"
            "import tensorflow as tf\n"
            "print(int(tf.constant(1)), len(tf.config.list_logical_devices()))\n")
    r = run_python(code, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.strip() == "", r.stderr  # TF_CPP_MIN_LOG_LEVEL=2 alone leaves oneDNN / cudart lines here


@pytest.mark.parametrize("module,args,damage", [  # every kind of damage is tested in-process in test_zoo.py
    ("recipes.train", ["--model=mobilenet_v2_100", "--input_size=32", "--out_dir={out}"], "truncated"),
    ("recipes.evaluate", ["--model=mobilenet_v2_100", "--input_size=32"], "random"),
    ("recipes.export_tflite", ["--model=mobilenet_v2_100", "--output={out}/model.tflite"], "pickled"),
    ("recipes.qat", ["--model=mobilenet_v2_100", "--out_dir={out}"], "truncated"),
])
def test_damaged_weights_file_is_one_line_before_tensorflow(tmp_path, module, args, damage):
    """A damaged .npz given by path (truncated, random bytes, pickled objects) is found in validation: one line
    naming the file, exit 2, TensorFlow never imported, nothing written."""
    import numpy as np
    bad = tmp_path / f"{damage}.npz"
    if damage == "pickled":
        np.savez(bad, obj=np.array([{"a": 1}], dtype=object))
    else:
        np.savez(tmp_path / "good.npz", **{"stem_conv/kernel": np.ones((3, 3, 3, 8), np.float32)})
        data = (tmp_path / "good.npz").read_bytes()
        bad.write_bytes(data[: len(data) // 2] if damage == "truncated" else
                        np.random.default_rng(0).integers(0, 256, 2048, dtype=np.uint8).tobytes())
    args = [a.format(out=tmp_path / "out") for a in args] + [f"--weights={bad}"]
    r = run_python(PROBE.format(module=module, args=args), timeout=120)
    assert str(bad) in error_line(r, module), r.stderr
    assert "allow_pickle" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "TENSORFLOW_FREE", r.stderr
    assert not os.path.exists(tmp_path / "out") or not any(os.scandir(tmp_path / "out")), "nothing written"


@pytest.mark.slow
def test_tpu_strategy_without_a_tpu_is_one_line():
    r = run_module("recipes.evaluate", "--model=mobilenet_v2_100", "--weights=", "--input_size=32", "--limit=10",
                   "--strategy=tpu", timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "--strategy=tpu: cannot reach a TPU" in error_line(r, "evaluate"), r.stderr[-3000:]


def _folder_with_a_truncated_png(root):
    from PIL import Image
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i, 90, 20)).save(root / c / f"{i}.png")
    bad = root / "b" / "1.png"
    bad.write_bytes(bad.read_bytes()[:30])  # the PNG header survives: only decoding finds it
    return bad


@pytest.mark.parametrize("module,args", [
    ("recipes.train", ["--model=mobilenet_v2_100", "--input_size=32", "--out_dir={out}"]),
    ("recipes.evaluate", ["--model=mobilenet_v2_100", "--input_size=32", "--weights=", "--split=train"]),
    ("recipes.search_metakernel", ["--target_macs=3e6", "--out_dir={out}"]),
    ("recipes.search_spos", ["--out_dir={out}"]),
    ("recipes.search_fgnas", ["--target=3e6", "--out_dir={out}"]),
])
def test_undecodable_image_is_one_line_before_tensorflow(tmp_path, module, args):
    """A truncated image inside a folder dataset is named before any work (not a tf.data crash mid-epoch)."""
    bad = _folder_with_a_truncated_png(tmp_path / "data")
    args = [a.format(out=tmp_path / "out") for a in args] + [f"--dataset=folder:{tmp_path / 'data'}"]
    r = run_python(PROBE.format(module=module, args=args), timeout=120)
    line = error_line(r, module)
    assert f"{bad}: not a decodable image" in line and "--on_bad_image=skip" in line, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "TENSORFLOW_FREE", r.stderr
    assert not os.path.exists(tmp_path / "out") or not any(os.scandir(tmp_path / "out")), "nothing written"


def test_in_process_configs_refuse_non_finite_numbers():
    """The library's configs (the Python API under every recipe) get the flags' finite-number check too."""
    from common.checks import ConfigError, check_at_least
    for value in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(ConfigError, match="must be a finite number"):
            check_at_least(lr=(value, 0.0))
    check_at_least(lr=(0.1, 0.0), epochs=(None, 1))  # finite values and defaults pass


@pytest.mark.parametrize("module,args,marker,owner", [
    ("recipes.qat", ["--model=mixnet_s", "--classes=10"], "train_settings.json", "recipes.train"),
    ("recipes.train", ["--model=mixnet_s"], "qat_report.json", "recipes.qat"),
    ("recipes.search_metakernel", ["--target_macs=3e6"], "train_settings.json", "recipes.train"),
    ("recipes.train", ["--model=mixnet_s"], "search_settings.json", "a search"),
    ("recipes.search_spos", [], "search_settings.json", "a search"),
])
def test_another_commands_run_directory_is_refused(tmp_path, module, args, marker, owner):
    """A run directory belongs to the command that made it: another command would overwrite its outputs (QAT wrote
    its weights.npz over a training run's, whose card then no longer matched)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / marker).write_text("{}")
    (run / "weights.npz").write_bytes(b"the other run's weights")
    r = run_python(PROBE.format(module=module, args=[*args, f"--out_dir={run}"]), timeout=120)
    assert f"holds a run of {owner}" in error_line(r, module), r.stderr
    assert r.stderr.strip().splitlines()[-1] == "TENSORFLOW_FREE", r.stderr
    assert sorted(os.listdir(run)) == sorted([marker, "weights.npz"])
    assert (run / "weights.npz").read_bytes() == b"the other run's weights"


def test_out_dir_symlink_loop_is_one_line(tmp_path):
    loop = tmp_path / "loop"
    os.symlink(loop, loop)
    r = run_python(PROBE.format(module="recipes.train", args=["--model=mixnet_s", f"--out_dir={loop}"]), timeout=120)
    assert "a symlink that leads nowhere" in error_line(r, "recipes.train"), r.stderr


def test_empty_out_dir_is_one_line():
    r = run_python(PROBE.format(module="recipes.train", args=["--model=mixnet_s", "--out_dir="]), timeout=120)
    assert "--out_dir: empty" in error_line(r, "recipes.train"), r.stderr


# ------------------------------------------------------------------------ outputs of the wrong kind (issue: /dev/null)
def _special_files(root):
    """``kind -> path`` of every kind of existing path an output must not replace (a socket, a FIFO, a directory,
    symlinks to them; /dev/null as the device, which the checks only look at)."""
    import socket
    os.mkfifo(root / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock"))
    sock.close()
    (root / "dir").mkdir()
    os.symlink(root / "fifo", root / "link_fifo")
    os.symlink(root / "dir", root / "link_dir")
    os.symlink("/dev/null", root / "link_null")
    return {"FIFO": root / "fifo", "socket": root / "sock", "directory": root / "dir", "character device": "/dev/null",
            "FIFO (a symlink": root / "link_fifo", "directory (a symlink": root / "link_dir",
            "character device (a symlink": root / "link_null"}


def test_output_files_that_are_not_regular_files_are_refused(tmp_path):
    """check_writable (every recipe's --json/--output, the benchmarks' --out) refuses every existing path that is not
    a regular file, symlinks judged by their target; a regular file, a symlink to one and a new name pass."""
    from common.checks import ConfigError, check_writable
    for kind, path in _special_files(tmp_path).items():
        with pytest.raises(ConfigError, match=re.escape(f"is a {kind}")):
            check_writable(str(path), "--json")
    (tmp_path / "target.json").write_text("{}")
    os.symlink(tmp_path / "target.json", tmp_path / "link.json")
    for ok in ("target.json", "link.json", "new.json"):
        check_writable(str(tmp_path / ok), "--json")


def test_atomic_write_never_replaces_a_special_file_and_writes_through_a_symlink(tmp_path):
    """The last line of defence under every check: atomic_write raises OSError rather than rename a regular file
    over a FIFO, socket, directory (or a symlink to one); a symlink to a regular file stays a symlink and its target
    is replaced."""
    import stat

    from common.io import atomic_write, write_json
    special = _special_files(tmp_path)
    for kind, path in special.items():
        if "character device" in kind:
            continue  # never aim a write at /dev/null in a test: a bug here would replace it
        before = os.lstat(path)
        with pytest.raises(OSError, match="not a regular file"):
            atomic_write(str(path), lambda f: f.write(b"x"))
        after = os.lstat(path)
        assert stat.S_IFMT(after.st_mode) == stat.S_IFMT(before.st_mode) and after.st_ino == before.st_ino, kind
    assert not [n for n in os.listdir(tmp_path) if ".partial" in n]
    (tmp_path / "target.json").write_text("{}")
    os.symlink("target.json", tmp_path / "link.json")
    write_json(str(tmp_path / "link.json"), {"a": 1})
    assert os.path.islink(tmp_path / "link.json")
    assert json.loads((tmp_path / "target.json").read_text()) == {"a": 1}


def _declared_outputs():
    """``(what, its settings file, out_dir files, out_dir dirs)`` of every command that writes a run directory."""
    from detection import finetune
    from workflows import demo, pipeline, search_fgnas, search_metakernel, search_spos, train
    return [("train", train.SETTINGS_FILE, train.OUT_FILES, train.OUT_DIRS),
            ("search_metakernel", search_metakernel.SETTINGS_FILE, (*search_metakernel.OUT_FILES, "derived.json"),
             search_metakernel.OUT_DIRS),
            ("search_fgnas", search_fgnas.SETTINGS_FILE, search_fgnas.OUT_FILES, search_fgnas.OUT_DIRS),
            ("search_spos", search_spos.SETTINGS_FILE, search_spos.OUT_FILES, search_spos.OUT_DIRS),
            ("finetune_yolo", "settings.json", finetune.OUT_FILES, finetune.OUT_DIRS),
            ("pipeline", pipeline.SETTINGS_FILE, pipeline.OUT_FILES, pipeline.OUT_DIRS),
            ("demo", None, demo.OUT_FILES, ())]


@pytest.mark.parametrize("what,own,files,dirs", _declared_outputs(), ids=[d[0] for d in _declared_outputs()])
def test_every_declared_output_name_taken_by_the_other_kind_is_refused(tmp_path, what, own, files, dirs):
    """check_run_outputs over each command's declared names: a file name held by a folder (or a FIFO), a folder
    name held by a file, and a folder on the way held by a file are one ConfigError naming it; the right kinds pass."""
    import shutil

    from common.checks import ConfigError, check_out_dir
    run = tmp_path / "run"
    files = (own, *files) if own else files
    for name in files:
        for wrong in ("dir", "fifo"):
            shutil.rmtree(run, ignore_errors=True)
            (run / name).parent.mkdir(parents=True)
            (run / name).mkdir() if wrong == "dir" else os.mkfifo(run / name)
            with pytest.raises(ConfigError, match=re.escape(name) + " is a .*, but this command writes a file there"):
                check_out_dir(str(run), own=own, files=files, dirs=dirs)
    for name in dirs:
        shutil.rmtree(run, ignore_errors=True)
        (run / name).parent.mkdir(parents=True)
        (run / name).write_text("x")
        with pytest.raises(ConfigError, match=re.escape(f"{name} is a regular file, but this command writes a folder "
                                                        "there")):
            check_out_dir(str(run), own=own, files=files, dirs=dirs)
    nested = [n for n in (*files, *dirs) if "/" in n]
    for name in nested[:1]:
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir()
        (run / name.split("/")[0]).write_text("x")
        with pytest.raises(ConfigError, match="writes a folder there"):
            check_out_dir(str(run), own=own, files=files, dirs=dirs)
    shutil.rmtree(run, ignore_errors=True)
    for name in dirs:
        (run / name).mkdir(parents=True, exist_ok=True)
    for name in files:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("{}")
    check_out_dir(str(run), own=own, files=files, dirs=dirs)


def test_finetune_yolo_run_dir_checks_its_declared_outputs(tmp_path):
    """detection.finetune's RunDir carries OUT_FILES/OUT_DIRS into its check (its validate needs a VOC dataset)."""
    import zoo
    from common.checks import ConfigError
    from detection.finetune import FinetuneConfig, run_dir
    (tmp_path / "tensorboard").write_text("x")
    with pytest.raises(ConfigError, match="tensorboard is a regular file"):
        run_dir(FinetuneConfig(out_dir=str(tmp_path)), zoo.get_spec("mobilenet_v2_100")).check()


OCCUPIED = [  # (module, flags, the name to occupy, "dir" or "file", needle)
    ("recipes.train", ["--model=mixnet_s", "--dataset=shapes"], "backup", "file", "backup is a regular file"),
    ("recipes.train", ["--model=mixnet_s", "--dataset=shapes"], "weights.npz", "dir", "weights.npz is a directory"),
    ("recipes.search_metakernel", ["--target_macs=3e6", "--dataset=shapes"], "checkpoints", "file", "checkpoints"),
    ("recipes.search_ednas", ["--latency_table=benchmarks/results/ednas_latency_table.json", "--target_ms=1.5",
                              "--dataset=shapes"], "summary.json", "dir", "summary.json"),
    ("recipes.search_fgnas", ["--target=1e6", "--dataset=shapes"], "finetune/weights.npz", "dir",
     "finetune/weights.npz"),
    ("recipes.search_spos", ["--dataset=shapes"], "supernet", "file", "supernet is a regular file"),
    ("recipes.qat", ["--model=mixnet_s", "--classes=10", "--weights=", "--dataset=shapes"], "weights.npz", "dir",
     "weights.npz"),
    ("recipes.demo", [], "summary.json", "dir", "summary.json is a directory"),
    ("recipes.pipeline", [], "logs", "file", "logs is a regular file"),
]


@pytest.mark.parametrize("module,args,name,kind,needle", OCCUPIED, ids=[f"{m}:{n}" for m, _, n, _, _ in OCCUPIED])
def test_out_dir_with_an_output_name_of_the_wrong_kind_is_one_line(tmp_path, module, args, name, kind, needle):
    """A run's own output name taken by the other kind of file was a traceback after the work (an epoch of training
    lost); now every command that writes a run directory refuses it in validate, before TensorFlow."""
    run = tmp_path / "run"
    (run / name).parent.mkdir(parents=True)
    (run / name).mkdir() if kind == "dir" else (run / name).write_text("x")
    before = sorted(os.listdir(run))
    r = run_python(PROBE.format(module=module, args=[*args, f"--out_dir={run}"]), timeout=120)
    line = error_line(r, module)
    assert needle in line, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "TENSORFLOW_FREE", r.stderr
    assert sorted(os.listdir(run)) == before, "nothing written"


def test_flagfiles_are_checked_before_absl_reads_them(tmp_path):
    """Every --flagfile, nested ones included, is a non-empty path to a regular readable UTF-8 file of at most
    FLAGFILE_MAX_BYTES, and no file includes itself (absl warned and ran on); the same file twice is no cycle."""
    from recipes.cli import FLAGFILE_MAX_BYTES, UsageError, check_flagfiles
    t = tmp_path
    os.mkfifo(t / "fifo")
    (t / "ok.flags").write_text("# a comment\n--lr=0.1\n")
    (t / "twice.flags").write_text(f"--flagfile={t}/ok.flags\n--flagfile={t}/ok.flags\n")
    (t / "self.flags").write_text(f"--lr=0.1\n--flagfile={t}/self.flags\n")
    (t / "a.flags").write_text(f"--flagfile={t}/b.flags\n")
    (t / "b.flags").write_text(f"--flagfile={t}/a.flags\n")
    (t / "nested.flags").write_text("--flagfile=/dev/zero\n")
    (t / "nested_empty.flags").write_text("--flagfile=\n")
    (t / "binary.flags").write_bytes(b"--lr=0.1\n\xff\n")
    (t / "big.flags").write_bytes(b"#" * (FLAGFILE_MAX_BYTES + 1))
    os.symlink(t / "self.flags", t / "alias.flags")
    bad = {f"--flagfile={t}/fifo": "not a regular file", "--flagfile=/dev/zero": "not a regular file",
           f"--flagfile={t}": "is a directory", "--flagfile=": "empty", "--flagfile= ": "empty",
           f"--flagfile={t}/missing": "cannot open it", f"--flagfile={t}/self.flags": "includes itself",
           f"--flagfile={t}/alias.flags": "includes itself", f"--flagfile={t}/a.flags": "includes itself",
           f"--flagfile={t}/nested.flags": f"line 1 of {t}/nested.flags", f"-flagfile={t}/binary.flags": "not UTF-8",
           f"--flagfile={t}/nested_empty.flags": "empty", f"--flagfile={t}/big.flags": "at most"}
    for arg, needle in bad.items():
        with pytest.raises(UsageError, match=re.escape(needle)):
            check_flagfiles(["--lr=0.2", arg])
    with pytest.raises(UsageError, match="is not a regular file"):
        check_flagfiles(["--flagfile", "/dev/zero"])
    with pytest.raises(UsageError, match="needs a file name"):
        check_flagfiles(["--flagfile"])
    check_flagfiles([f"--flagfile={t}/ok.flags", f"--flagfile={t}/twice.flags", "--flagfile", f"{t}/ok.flags"])
    check_flagfiles(["--", "--flagfile=/dev/zero"])  # after --, a positional argument absl does not read
