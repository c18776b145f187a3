"""Benchmarks run end to end on tiny settings and honour the command-line contract (one stderr line, exit 2)."""
import json
import math
import os

import pytest
from conftest import error_line, run_module


@pytest.mark.slow
def test_supernet_cost_quick(tmp_path):
    out = tmp_path / "x.json"
    r = run_module("benchmarks.supernet_cost", "--quick", f"--out={out}", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(out.read_text())
    assert set(report) == {"N", "host", "method", "targets", "command"}
    assert report["command"] == "python -m benchmarks.supernet_cost --out benchmarks/results/supernet_cost.json"
    assert list(report["N"]) == ["3"] and isinstance(report["method"], str) and len(report["method"]) > 200
    assert report["host"]["cpu_count"] >= 1 and report["host"]["tensorflow"]
    row = report["N"]["3"]
    for key in ("meta_over_fixed_time", "meta_over_fixed_mem", "multi_over_meta_time", "multi_over_meta_mem"):
        assert isinstance(row[key], (int, float)) and math.isfinite(row[key]) and row[key] > 0, (key, row[key])
    assert set(row["modes"]) == {"fixed", "meta", "multi"}
    for mode in row["modes"].values():
        assert mode["step_ms"] > 0 and mode["alloc_peak_mib"] > 0
    # N separate depthwise kernels per layer vs one k_max meta kernel (the same as the fixed net's)
    assert row["modes"]["multi"]["weight_params"] > row["modes"]["meta"]["weight_params"] == \
        row["modes"]["fixed"]["weight_params"]
    assert row["modes"]["fixed"]["arch_params"] == 0 < row["modes"]["meta"]["arch_params"]
    settings = report["host"]["run"]["settings"]
    assert settings["quick"] and settings["steps"] == 2 and settings["width"] == 0.25
    assert [len(r["step_s"]) for r in row["modes"]["meta"]["raw_per_round"]] == [2]
    assert (tmp_path / "x.png").stat().st_size > 1000
    assert not [p for p in os.listdir(tmp_path) if p not in ("x.json", "x.png")]  # no temp files left behind


@pytest.mark.parametrize("args, needle", [
    (("--rounds=0",), "--rounds"),
    (("--ns=3,x",), "--ns"),
    (("--width=-1",), "--width"),
    (("--no_such_flag=1",), "no_such_flag"),
])
def test_supernet_cost_bad_flags(args, needle, tmp_path):
    out = tmp_path / "x.json"
    r = run_module("benchmarks.supernet_cost", f"--out={out}", *args, timeout=120)
    assert needle in error_line(r, "benchmarks.supernet_cost"), r.stderr
    assert not out.exists()


def test_supernet_cost_needs_out():
    r = run_module("benchmarks.supernet_cost", "--quick", timeout=120)
    assert "out" in error_line(r, "benchmarks.supernet_cost"), r.stderr


def test_quantization_benchmark_refuses_bad_flags(tmp_path):
    for args in ([], [f"--out={tmp_path / 'q.json'}", "--dataset=folder:/nonexistent"]):
        error_line(run_module("benchmarks.quantization", *args, timeout=120), "benchmarks.quantization")
    assert not (tmp_path / "q.json").exists()


@pytest.mark.slow
def test_deploy_preprocessing_quick(tmp_path):
    """Every variant exports, agrees with the zoo Keras model on raw pixels, and is timed against the reference."""
    from conftest import tiny_spec_dict, write_spec
    d = tiny_spec_dict(name="lite_like")
    d["input"] = {"size": 32, "mean": [127.0] * 3, "std": [128.0] * 3}  # one mean, as EfficientNet-Lite's
    spec = write_spec(tmp_path, d)
    out = tmp_path / "d.json"
    r = run_module("benchmarks.deploy_preprocessing", f"--out={out}", f"--model={spec}", "--input_size=32",
                   "--modes=float32", "--rounds=1", "--runs=2", "--warmup=1", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    d = json.loads(out.read_text())
    assert set(d["files"]) == {"zoo_layer/float32", "zoo_fold/float32", "zoo_fold_black/float32", "zoo_none/float32"}
    for f in d["files"].values():
        assert f["max_abs_diff_vs_zoo_keras"] <= 1e-4 * f["max_abs_zoo_keras_logit"]
    layer, fold = d["files"]["zoo_layer/float32"]["ops"], d["files"]["zoo_fold/float32"]["ops"]
    assert fold["MUL"] == layer["MUL"] - 1 and fold["ADD"] == layer["ADD"] - 1  # the preprocess MUL + ADD are gone
    assert d["files"]["zoo_fold/float32"]["ops"]["PADV2"] == 1  # one mean (127) for every channel
    assert d["files"]["zoo_fold_black/float32"]["ops"] == d["files"]["zoo_none/float32"]["ops"]  # no op added
    assert d["files"]["zoo_fold_black/float32"]["tensors"] == d["files"]["zoo_none/float32"]["tensors"]
    assert d["setup"]["reference"] == "zoo_none" and d["summary"]["zoo_none/float32"]["cpu_ratio_median"] == 1.0


@pytest.mark.parametrize("args", [["--modes=fp64"], ["--model=no_such_model"], ["--rounds=0"],
                                  ["--model=/nonexistent/spec.json"]])
def test_deploy_preprocessing_refuses_bad_flags(args, tmp_path):
    r = run_module("benchmarks.deploy_preprocessing", f"--out={tmp_path / 'd.json'}", *args, timeout=120)
    error_line(r, "benchmarks.deploy_preprocessing")
    assert not (tmp_path / "d.json").exists()


@pytest.fixture(scope="module")
def imagenet_like(tmp_path_factory):
    """A tiny tsv: list in the ImageNet sample's form (synsets, ids below 1000: 1000 classes), 320 8×8 images."""
    from conftest import write_tiny_png
    d = tmp_path_factory.mktemp("imagenet_like")
    (d / "img").mkdir()
    from inputs.classification import _imagenet_wnids
    wnids = _imagenet_wnids()
    rows = ["file\tlabel\tsynset"]
    for i in range(320):
        write_tiny_png(d / "img" / f"{i}.png", value=i % 256)
        rows.append(f"img/{i}.png\t{3 * i}\t{wnids[3 * i]}")
    (d / "labels.tsv").write_text("\n".join(rows) + "\n")
    return d


@pytest.mark.parametrize("args, needle", [
    (["--targets=260e6,370e6", "--names=a"], "one name per target"),
    (["--targets=5e9", "--names=a"], "outside the lite0 space"),
    (["--names=Bad Name,b"], "not a model name"),
    (["--dataset=shapes"], "10 classes; the Lite0 teacher"),
    (["--search_size=16"], "--search_size/--train_size ≥ 32"),
    (["--search_flags=--seed='1"], "--search_flags: No closing quotation"),
])
def test_metakernel_ab_refuses_bad_flags(args, needle, tmp_path, imagenet_like):
    args = args if any(x.startswith("--dataset") for x in args) else [f"--dataset=tsv:{imagenet_like}", *args]
    r = run_module("benchmarks.metakernel_ab", f"--out={tmp_path / 'r.json'}", f"--work_dir={tmp_path / 'w'}", *args,
                   "--ledger=", timeout=120)
    assert needle in error_line(r, "benchmarks.metakernel_ab"), r.stderr
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "w").exists()


def test_metakernel_ab_refuses_a_work_dir_of_other_settings(tmp_path, imagenet_like):
    from benchmarks import metakernel_ab as ab
    args = [f"--out={tmp_path / 'r.json'}", f"--work_dir={tmp_path / 'w'}", f"--dataset=tsv:{imagenet_like}",
            "--ledger="]
    ab.parse(args).run_dir.start()
    ab.parse(args)  # the same settings: resumable
    r = run_module("benchmarks.metakernel_ab", *args, "--epochs=3", timeout=120)
    assert "other settings (epochs)" in error_line(r, "benchmarks.metakernel_ab"), r.stderr


@pytest.mark.slow
def test_metakernel_ab_baselines_and_report(tmp_path, imagenet_like):
    """The baselines stage writes both baselines of a budget as specs with inherited weights at the budget's MACs;
    the report compares the searched model with each baseline (difference and its binomial SE)."""
    from benchmarks import metakernel_ab as ab
    from models import spec as S
    from models.builder import build
    from models.counting import count
    from models.weights import assign, read_npz
    a = ab.parse([f"--out={tmp_path / 'r.json'}", f"--work_dir={tmp_path / 'w'}", "--targets=260e6",
                  "--names=mk_a", f"--dataset=tsv:{imagenet_like}", "--ledger="])
    info = ab.write_baselines(a)
    assert set(info) == {"crop_prune_mk_a", "prune_mk_a"}
    for name in info:
        p = ab._paths(a, name)
        spec = S.loads(open(p["spec"]).read())
        assert abs(count(spec).macs / 260e6 - 1) <= 0.01 and spec.provenance.method == "baseline"
        assign(build(spec), read_npz(p["init"]))  # the weights fit the spec
    crop = S.loads(open(ab._paths(a, "crop_prune_mk_a")["spec"]).read())
    assert {k for st in crop.stages for b in st for k in b.kernels} == {3}
    import shutil
    shutil.copyfile(ab._paths(a, "prune_mk_a")["spec"], ab._paths(a, "mk_a")["spec"])  # stands in for a search
    evals = {"mk_a": {"top1": 0.6, "top5": 0.8, "examples": 300}, "prune_mk_a": {"top1": 0.5, "examples": 300},
             "crop_prune_mk_a": {"top1": 0.58, "examples": 300}}
    res = ab.aggregate(a, {"top1": 0.85, "examples": 300}, {}, evals, {}, info)
    vs = res["searched_vs_baselines"]["mk_a_vs_prune"]
    assert vs["diff"] == pytest.approx(0.1) and vs["se"] == pytest.approx(math.sqrt(0.24 / 300 + 0.25 / 300))
    assert vs["exceeds_2se"] and not res["searched_vs_baselines"]["mk_a_vs_crop_prune"]["exceeds_2se"]
    assert res["models"]["mk_a"]["top1_vs_teacher"] == pytest.approx(-0.25)


def _fake_stages(calls, member=None):
    """A stand-in for ``recipes.cli.run_stage`` that writes what each stage's recipe would (Lite0's spec and weights
    for a search, the init weights for a distillation, a fixed score for an evaluation) and records the call."""
    import dataclasses
    import shutil

    import zoo
    from models import spec as S

    def flag(args, name):
        return next(x.split("=", 1)[1] for x in args if x.startswith(f"--{name}="))

    def run_stage(name, args, log):
        calls.append((args[0], name))
        if args[0] == "recipes.evaluate":
            top1 = {"efficientnet_lite0": 0.8}.get(flag(args, "model"), 0.6 if "prune" not in flag(args, "model")
                                                   else 0.5)
            with open(flag(args, "json"), "w") as f:
                json.dump({"top1": top1, "top5": 0.9, "examples": 300}, f)
        elif args[0] == "recipes.search_metakernel":
            out = flag(args, "out_dir")
            os.makedirs(os.path.join(out, "checkpoints"), exist_ok=True)
            spec = dataclasses.replace(zoo.get_spec("efficientnet_lite0"), name=flag(args, "name"))
            with open(os.path.join(out, "derived.json"), "w") as f:
                f.write(S.dumps(spec))
            shutil.copyfile(zoo.weights_path("efficientnet_lite0", "imagenet"), os.path.join(out, "derived_init.npz"))
            import numpy as np
            np.savez(os.path.join(out, "derived_arch.npz"), **member)
            for f in ("history.json", "kernel_distribution.png"):
                open(os.path.join(out, f), "w").write("[]")
            with open(os.path.join(out, "summary.json"), "w") as f:
                json.dump({"target_macs": float(flag(args, "target_macs")), "argmax_macs": 1, "mixture": {}}, f)
        elif args[0] == "recipes.train":
            out = flag(args, "out_dir")
            os.makedirs(out, exist_ok=True)
            shutil.copyfile(flag(args, "weights"), os.path.join(out, "weights.npz"))
            with open(os.path.join(out, "model_card.json"), "w") as f:  # the supernet start "trains" better
                json.dump({"data": {"train_examples": 20},
                           "metrics": {"train_loss": 0.5 if "supernet_init" in out else 1.0}}, f)
        return 1.0
    return run_stage


@pytest.mark.slow
def test_metakernel_ab_resumes_from_its_ledger(tmp_path, imagenet_like, monkeypatch):
    """One target at a time (``--only``); every finished model's evaluation, spec and card land in the ledger, and a
    later run with an empty work directory restores them and runs nothing again; publishing writes the zoo files and
    re-scores them through the zoo."""
    import recipes.cli
    from benchmarks import metakernel_ab as ab
    calls = []
    net, lite0 = ab._lite0_supernet()  # the fake search "finds" Lite0 itself
    member = {b.name: c for b, c in zip(net.blocks, net.member_choice(lite0))}
    monkeypatch.setattr(recipes.cli, "run_stage", _fake_stages(calls, member))
    ledger = tmp_path / "ledger"
    args = [f"--out={tmp_path / 'r.json'}", f"--dataset=tsv:{imagenet_like}", f"--ledger={ledger}",
            f"--zoo_dir={tmp_path / 'zoo'}", "--latency_rounds=0"]
    assert ab.main([*args, f"--work_dir={tmp_path / 'w1'}", "--only=metakernel_a"]) == 0
    kinds = [c[0] for c in calls]
    assert kinds.count("recipes.search_metakernel") == 1 and kinds.count("recipes.train") == 4
    assert kinds.count("recipes.evaluate") == 5  # the teacher, three models of metakernel_a and the init ablation
    # the searched model starts from Lite0's own weights (here: Lite0's architecture, so bit for bit Lite0's)
    import zoo
    from models.weights import read_npz
    init, lite0_w = read_npz(str(tmp_path / "w1" / "specs" / "metakernel_a_init.npz")), read_npz(
        zoo.weights_path("efficientnet_lite0", "imagenet"))
    assert set(init) == set(lite0_w) and all((init[k] == lite0_w[k]).all() for k in init)
    res = json.loads((tmp_path / "r.json").read_text())
    assert {n for n, r in res["models"].items() if "top1" in r} == {
        "metakernel_a", "crop_prune_metakernel_a", "prune_metakernel_a", "supernet_init_metakernel_a"}
    assert res["searched_vs_baselines"]["metakernel_a_vs_prune"]["diff"] == pytest.approx(0.1)
    for f in ("eval/metakernel_a.json", "eval/teacher.json", "specs/prune_metakernel_a.json",
              "distill/metakernel_a/model_card.json", "search/metakernel_a/summary.json", "specs/baselines.json"):
        assert (ledger / f).is_file(), f
    assert not list(ledger.rglob("*.npz"))  # weights stay in the work directory
    calls.clear()  # a later session: empty work directory, the same ledger
    assert ab.main([*args, f"--work_dir={tmp_path / 'w2'}", "--only=metakernel_a"]) == 0
    assert calls == []
    again = json.loads((tmp_path / "r.json").read_text())["models"]
    assert {n: again[n] for n in again if n.endswith("_a")} == {n: res["models"][n] for n in res["models"]
                                                                if n.endswith("_a")}
    lat = {n: {"median_ms": 10.0 if n == "efficientnet_lite0" else 7.0} for n in (
        "efficientnet_lite0", "metakernel_a", "crop_prune_metakernel_a", "prune_metakernel_a",
        "supernet_init_metakernel_a")}
    (tmp_path / "w1" / "latency.json").write_text(json.dumps(lat))
    calls.clear()  # the first session again, timed: its distilled searched model is published
    assert ab.main([*args, f"--work_dir={tmp_path / 'w1'}", "--only=metakernel_a"]) == 0
    assert calls == [("recipes.evaluate", "metakernel_a")]  # the zoo's re-score
    pub = json.loads((tmp_path / "r.json").read_text())["published"]["metakernel_a"]
    assert pub["reproduced"] and pub["weights_of"] == "supernet_init_metakernel_a"  # the lower training loss
    card = json.loads((tmp_path / "zoo" / "weights" / "metakernel_a-lite0_distilled.json").read_text())
    assert card["metrics"]["latency_vs_lite0"] == pytest.approx(0.7) and card["metrics"]["top1"] == 0.6
    assert "NOT trained on ImageNet" in card["dataset"] and "easier than ImageNet val" in card["caveat"]
    assert (tmp_path / "zoo" / "specs" / "metakernel_a.json").is_file()
    from models.weights import sha256
    assert card["sha256"] == sha256(str(tmp_path / "zoo" / "weights" / card["file"]))
    bad = ab.parse([*args, f"--work_dir={tmp_path / 'w3'}"])
    bad.epochs = 3  # other settings must not reuse these stages
    with pytest.raises(ValueError, match="other settings"):
        ab.ledger(bad)
    with pytest.raises(SystemExit):  # refused before any work, as --ledger's one line
        ab.parse([*args, f"--work_dir={tmp_path / 'w4'}", "--epochs=3"])
    assert not (tmp_path / "w4").exists()


@pytest.mark.slow
def test_fgnas_cost_quick(tmp_path):
    out = tmp_path / "f.json"
    r = run_module("benchmarks.fgnas_cost", "--quick", f"--out={out}", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["command"] == "python -m benchmarks.fgnas_cost --out benchmarks/results/fgnas_cost.json"
    configs = report["configs"]
    assert set(configs) == {"fixed", "gated1", "gated"} and configs["gated"]["ops"] == 6
    assert configs["fixed"]["gate_params"] == 0 < configs["gated1"]["gate_params"] < configs["gated"]["gate_params"]
    for ratio in report["ratios"].values():
        assert math.isfinite(ratio["time"]) and ratio["time"] > 0 and ratio["memory"] > 0
    assert os.listdir(tmp_path) == ["f.json"]


def test_border_cost_paired_statistics():
    import numpy as np

    from benchmarks.border_cost import paired
    labels = np.array([0, 1, 2, 3])
    exact = np.eye(4)[[0, 1, 2, 0]] * 5.0  # right on 0, 1, 2
    black = np.eye(4)[[0, 3, 3, 3]] * 5.0  # right on 0, 3
    row = paired(exact, black, labels)
    assert row["exact"]["top1"] == 0.75 and row["black"]["top1"] == 0.5 and row["exact"]["top5"] == 1.0
    assert row["top1_agreement"] == 0.25 and row["discordant_images"] == 3  # images 1, 2 and 3
    assert row["top1_diff_black_minus_exact"] == -0.25 and row["top1_diff_se"] == pytest.approx(math.sqrt(3) / 4)
    assert row["exceeds_2se"] is False and row["max_abs_logit_diff"] == 5.0


@pytest.mark.slow
def test_border_cost_end_to_end(tmp_path):
    """A mean-border spec with per-channel statistics on a tiny folder set: both exports scored, fold_black with
    exactly the ops of the plain graph and fold with its border op."""
    import numpy as np
    from conftest import tiny_spec_dict, write_spec
    from PIL import Image
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / "d" / split / c).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
                    tmp_path / "d" / split / c / f"{i}.png")
    d = tiny_spec_dict(name="border_tiny")
    d["input"] = {"size": 32, "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}
    d["head"]["classes"] = 2
    spec = write_spec(tmp_path, d)
    out = tmp_path / "b.json"
    r = run_module("benchmarks.border_cost", f"--out={out}", f"--model={spec}", "--weights=",
                   f"--dataset=folder:{tmp_path / 'd'}", "--calibration=4", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["setup"]["images"] == 12 and set(report["modes"]) == {"float32", "int8"}
    for mode, row in report["modes"].items():
        assert row["images"] == 12 and 0 <= row["top1_agreement"] <= 1 and row["max_abs_logit_diff"] > 0
    assert "PAD" in report["ops"]["exact/float32"] and "ADD" in report["ops"]["exact/float32"]
    assert not {"PAD", "PADV2"} & set(report["ops"]["black/float32"])


def test_ledger_restores_finished_stages_and_refuses_other_settings(tmp_path):
    from benchmarks.harness import Ledger
    work, root = tmp_path / "work", tmp_path / "ledger"
    stage = work / "search" / "a_s0"
    stage.mkdir(parents=True)
    (stage / "summary.json").write_text('{"done": 1}')
    (stage / "history.json").write_text("[]")
    ledger = Ledger(str(root), str(work), setup={"epochs": 6, "flags": ("x",)})
    ledger.keep(str(stage), ["summary.json", "history.json"])
    assert (root / "search" / "a_s0" / "summary.json").read_text() == '{"done": 1}'
    assert not list(root.rglob("*.tmp"))
    assert not ledger.restore(str(stage), ["summary.json", "history.json"])  # the work directory has them
    import shutil
    shutil.rmtree(work)  # a new session: the work directory is gone
    again = Ledger(str(root), str(work), setup={"epochs": 6, "flags": ["x"]})
    assert again.restore(str(stage), ["summary.json", "history.json"])
    assert (stage / "summary.json").read_text() == '{"done": 1}' and (stage / "history.json").read_text() == "[]"
    assert not again.restore(str(work / "train" / "a_s0"), ["model_card.json"])  # never finished: nothing
    assert not (work / "train").exists()
    with pytest.raises(ValueError, match="other settings \\(epochs\\)"):
        Ledger(str(root), str(work), setup={"epochs": 3, "flags": ["x"]})
    with pytest.raises(ValueError, match="not under the work directory"):
        again.keep(str(tmp_path / "elsewhere"), ["summary.json"])
    assert Ledger(None, str(work)).restore(str(stage), ["summary.json"]) is False  # no ledger: a no-op
    # a file in a sub-folder of the stage (FGNAS: finetune/model_card.json) is kept and restored with its folder
    fg = work / "runs" / "P_s0"
    (fg / "finetune").mkdir(parents=True)
    (fg / "finetune" / "model_card.json").write_text('{"top1": 0.5}')
    (fg / "derived.json").write_text("{}")
    again.keep(str(fg), ["finetune/model_card.json", "derived.json"])
    shutil.rmtree(work)
    assert again.restore(str(fg), ["finetune/model_card.json", "derived.json"])
    assert (fg / "finetune" / "model_card.json").read_text() == '{"top1": 0.5}'


def test_spos_ablation_orchestrates_one_supernet_three_searches_and_resumes_from_its_ledger(tmp_path, monkeypatch):
    """The Table 4 benchmark with its stages faked (no training): one supernet, each search in its own directory
    reading the supernet through a link with its field fixed, every row within the MACs limit, comparisons with
    their SE; a second session without the work directory reruns nothing."""
    import shutil

    import numpy as np

    from benchmarks import harness
    from benchmarks import spos_ablation as sa
    from models import spec as spec_lib
    from recipes import cli
    from search import spos as sp
    calls = []
    space = sp.cifar_space(0.25, (1, 1, 1, 1), 10, (0.6, 1.0, 1.4))

    def fake_stage(name, args, log):
        out = next(x.split("=", 1)[1] for x in args if x.startswith("--out_dir="))
        calls.append(name)
        os.makedirs(out, exist_ok=True)
        if "--phase=supernet" in args:
            os.makedirs(os.path.join(out, "supernet"))
            for f in ("supernet_settings.json", "summary.json"):
                open(os.path.join(out, f), "w").write("{}")
            return 1.0
        assert os.path.islink(os.path.join(out, "supernet")) and os.path.isfile(
            os.path.join(out, "supernet_settings.json"))
        assert ("--fix_channel_ratio=1.0" in args) == (name == "block_search")
        assert ("--fix_block=3" in args) == (name == "channel_search")
        arch = np.zeros((space.n_blocks, 3), np.int32)
        arch[:, 1] = 0  # ratio 0.6: cheaper than all choice_3
        open(os.path.join(out, "derived.json"), "w").write(spec_lib.dumps(sp.arch_spec(space, arch, f"d_{name}")))
        summary = {"best": sp.key(arch), "best_acc": 0.3, "derived_from": "evolution",
                   "evolution": {"evolution": {"best_acc": 0.3, "evaluated": 4, "history": []}}}
        open(os.path.join(out, "summary.json"), "w").write(json.dumps(summary))
        return 2.0

    def fake_train(name, spec_path, out_dir, log, seconds, *args, ledger=None, **kwargs):
        seconds.record(name, 3.0)
        return {"all_choice_3": 0.60, "block_channel_search": 0.66}.get(name.rsplit("_s", 1)[0][6:], 0.62) + \
            0.01 * int(name[-1])

    monkeypatch.setattr(cli, "run_stage", fake_stage)
    monkeypatch.setattr(harness, "train_top1", fake_train)
    monkeypatch.setattr(harness, "litert_latency_ms", lambda specs, rounds: {n: 1.0 for n in specs})
    evaluated = []

    def fake_supernet_top1(space_, supernet_dir, archs, *args):
        assert os.path.isfile(os.path.join(supernet_dir, "summary.json"))
        evaluated.append(sorted(archs))
        return {k: 0.2 + 0.001 * sp.cost(space_, a)["macs"] / 1e5 for k, a in archs.items()}  # grows with MACs
    monkeypatch.setattr(sa, "supernet_top1", fake_supernet_top1)
    monkeypatch.chdir(tmp_path)
    args = [f"--out={tmp_path / 'r.json'}", f"--work_dir={tmp_path / 'w'}", f"--ledger={tmp_path / 'l'}",
            "--dataset=shapes", "--width=0.25", "--depth=1,1,1,1", "--channel_ratios=0.6,1.0,1.4", "--seeds=0,1",
            "--latency_rounds=1", "--rank_paths=3"]
    assert sa.main(args) == 0
    assert calls == ["supernet", "block_search", "channel_search", "block_channel_search"]
    report = json.loads((tmp_path / "r.json").read_text())
    limit = report["setup"]["max_macs"]
    choice3 = np.zeros((space.n_blocks, 3), np.int32)
    choice3[:, 1] = 1
    assert limit == sp.cost(space, choice3)["macs"] and list(report["rows"]) == list(sa.ROWS)
    for row in report["rows"].values():
        assert all(m <= limit for m in row["macs"]) and len(row["top1"]) == 2 and row["latency_ms"] == [1.0, 1.0]
    assert report["rows"]["random_blocks"]["specs"][0] != report["rows"]["random_blocks"]["specs"][1]
    c = report["comparisons"]["block_channel_search_minus_all_choice_3"]
    assert c["diff"] == pytest.approx(0.06) and c["se"] == pytest.approx(math.sqrt(2 * 0.00005 / 2), rel=1e-4)
    assert c["exceeds_2se"] is True
    assert report["rows"]["block_channel_search"]["search"]["derived_from"] == "evolution"
    assert (tmp_path / "r.png").stat().st_size > 0
    rank = report["one_shot_rank"]
    # distinct paths: all_choice_3, the three searches' one path (faked identical), 2 + 2 random draws, 3 rank paths
    names = [p["name"] for p in rank["paths"]]
    assert len(names) == len(set(p["arch"] for p in rank["paths"])) == rank["n_paths"] >= 8
    assert {"rank0", "rank1", "rank2"} <= set(names) and len(evaluated) == 1
    macs = sorted(p["macs"] for p in rank["paths"] if p["name"].startswith("rank"))
    assert macs[0] < limit < macs[-1]  # the rank paths span the space, beyond the limit
    for p in rank["paths"]:
        assert p["retrained_top1_mean"] == pytest.approx(np.mean(p["retrained_top1"]), rel=1e-4)
    assert -1.0 <= rank["ci95"][0] <= rank["ci95"][1] <= 1.0 and -1.0 <= rank["kendall_tau"] <= 1.0
    assert rank["within_limit"]["n_paths"] == sum(p["macs"] <= limit for p in rank["paths"]) < rank["n_paths"]
    # the searched rows' own best_acc beside this stage's measure of the same path
    assert set(rank["search_best_acc_check"]) == {"block_search", "channel_search", "block_channel_search"}
    assert (tmp_path / "r_rank.png").stat().st_size > 0
    drawn = {p: open(p).read() for row in ("all_choice_3", "random_blocks") for p in report["rows"][row]["specs"]}
    shutil.rmtree(tmp_path / "w")  # a new session: only the ledger (and the trainings' cards, faked here) remain
    calls.clear()
    assert sa.main(args) == 0
    assert calls == [] and len(evaluated) == 1  # searches and supernet top-1s restored, the supernet not retrained
    assert json.loads((tmp_path / "r.json").read_text())["one_shot_rank"] == rank
    assert all(open(p).read() == text for p, text in drawn.items())  # the rows without search drawn identically
    assert sa.main([*args, "--supernet_epochs=5"]) == 2  # the ledger refuses other settings


def test_border_cost_bad_weights_is_one_line_before_tensorflow(tmp_path):
    r = run_module("benchmarks.border_cost", f"--out={tmp_path / 'b.json'}", "--weights=nope",
                   f"--dataset=folder:{tmp_path}")  # any existing folder: the weights are refused first
    assert "has no weights 'nope'" in error_line(r, "border_cost"), r.stderr
    assert not (tmp_path / "b.json").exists()


def test_spos_trainability_samplers_vary_the_choice_where_they_say():
    import numpy as np

    from benchmarks import spos_trainability as st
    from search import spos as sp
    space = sp.cifar_space(0.25, (2, 3, 1, 1), 10, (0.5, 1.0), choices=("3", "5", "x"))
    rng = np.random.default_rng(0)
    one = [st.draw(space, "one_path", rng) for _ in range(20)]
    assert all((a[:, 0] == 0).all() and (a[:, 1] == 1).all() for a in one)  # choice_3, ratio 1.0
    whole = np.array([st.draw(space, "whole", rng)[:, 0] for _ in range(50)])
    assert (whole == whole[:, :1]).all() and len(set(whole[:, 0])) == 3  # one choice for every block, all drawn
    stage = np.array([st.draw(space, "stage", rng)[:, 0] for _ in range(50)])
    assert (stage[:, :2] == stage[:, :1]).all() and (stage[:, 2:5] == stage[:, 2:3]).all()
    assert (stage[:, 0] != stage[:, 2]).any()  # the stages draw independently
    block = np.array([st.draw(space, "block", rng)[:, 0] for _ in range(50)])
    assert (block != block[:, :1]).any(axis=1).mean() > 0.5  # blocks differ within a path


@pytest.mark.slow
def test_spos_trainability_end_to_end_and_resume(tmp_path):
    out, work = tmp_path / "t.json", tmp_path / "w"
    args = ("benchmarks.spos_trainability", f"--out={out}", f"--work_dir={work}", "--rows=block_d8",
            "--seeds=0", "--steps=50", "--paths=1", "--train_limit=1000", "--dataset=shapes")
    r = run_module(*args, timeout=400)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(out.read_text())
    row = report["rows"]["block_d8"]
    assert row["sampler"] == "block" and row["depth"] == [2, 2, 2, 2] and row["final_train_top1"]["n"] == 1
    run = report["runs"][0]
    assert [c["step"] for c in run["curve"]] == [50] and len(run["random_path_top1"]) == 1
    assert 0.0 <= run["random_path_top1"][0] <= 1.0 and run["trained_path_top1"] is None
    for when in ("probe_init", "probe_end"):
        assert set(run[when]) == {"flip_first_block", "flip_last_block", "other_random_path"}
        assert all(-1.0 <= v <= 1.0 for v in run[when].values())
    assert (tmp_path / "t.png").stat().st_size > 1000
    r = run_module(*args, timeout=400)  # finished (row, seed): kept, not trained again
    assert r.returncode == 0 and "block_d8 seed 0 (" not in r.stderr, r.stderr[-2000:]
    assert json.loads(out.read_text())["runs"] == report["runs"]


@pytest.mark.parametrize("args, needle", [(("--rows=nope",), "--rows"), (("--seeds=a",), "--seeds"),
                                          (("--steps=10",), "--steps")])
def test_spos_trainability_refuses_bad_flags(args, needle, tmp_path):
    r = run_module("benchmarks.spos_trainability", f"--out={tmp_path / 'x.json'}", "--dataset=shapes", *args)
    assert needle in error_line(r, "benchmarks.spos_trainability")
    assert not os.listdir(tmp_path)


def test_spos_ablation_kendall_tau_and_its_bootstrap_interval():
    import numpy as np

    from benchmarks import spos_ablation as sa
    x = np.arange(10.0)
    up, down = sa.kendall(x, x * 2 + 1), sa.kendall(x, -x)
    assert up["kendall_tau"] == pytest.approx(1.0) and up["ci95"] == pytest.approx([1.0, 1.0])
    assert up["spearman"] == pytest.approx(1.0) and down["kendall_tau"] == pytest.approx(-1.0) and up["n_paths"] == 10
    noisy = sa.kendall(x, np.array([1, 0, 3, 2, 5, 4, 7, 6, 9, 8.0]))
    assert noisy["ci95"][0] < noisy["kendall_tau"] < noisy["ci95"][1]
    assert noisy["kendall_tau"] == pytest.approx(35 / 45)  # 40 concordant − 5 discordant pairs over 45
    flat = sa.kendall([0.1] * 8, x[:8])  # a supernet at chance: τ undefined, no interval, no crash
    assert flat["kendall_tau"] is None and flat["ci95"] is None and flat["bootstrap_resamples"] == 0
    assert "undefined" in sa.tau_text(flat)


def test_spos_zoo_hold_out_split_and_bad_flags(tmp_path):
    """benchmarks.spos_zoo: the selection's validation split is the last files of each class, linked, complete or
    absent; bad flags are one line, exit 2, before TensorFlow."""
    from conftest import error_line, run_module

    from benchmarks import spos_zoo
    for c in ("b", "a"):
        (tmp_path / "train" / c).mkdir(parents=True)
        for i in range(5):
            (tmp_path / "train" / c / f"{i:02d}.png").write_bytes(b"x")
    counts = spos_zoo.hold_out(str(tmp_path / "train"), str(tmp_path / "split"), 2)
    assert counts["train"] == 6 and counts["validation"] == 4
    assert sorted(os.listdir(tmp_path / "split" / "test" / "a")) == ["03.png", "04.png"]
    assert os.path.islink(tmp_path / "split" / "train" / "b" / "00.png")
    with pytest.raises(ValueError, match="not more than"):
        spos_zoo.hold_out(str(tmp_path / "train"), str(tmp_path / "split2"), 5)
    assert not os.path.exists(tmp_path / "split2") and not os.path.exists(tmp_path / "split2.tmp")
    for args, needle in ((["--seeds=0,0"], "--seeds"), (["--candidates=nope"], "--candidates"),
                         ([f"--dataset=folder:{tmp_path / 'none'}"], "--dataset"),
                         ([f"--searches={tmp_path}", f"--dataset=folder:{tmp_path}"], "--searches")):
        r = run_module("benchmarks.spos_zoo", f"--out={tmp_path / 'r.json'}", *args)
        assert needle in error_line(r, "benchmarks.spos_zoo") and "tensorflow" not in r.stderr.lower()


def test_spos_mixed_precision_bad_flags(tmp_path):
    from conftest import error_line, run_module
    for args, needle in ((["--bits=8:8"], "--bits"), (["--bits=8:8,8:12"], "--bits"),
                         (["--bits=8:8,32:32"], "--max_bitops"), (["--test_limit=-1"], "--test_limit")):
        r = run_module("benchmarks.spos_mixed_precision", f"--out={tmp_path / 'r.json'}", *args)
        assert needle in error_line(r, "benchmarks.spos_mixed_precision")
