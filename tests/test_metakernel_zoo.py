"""benchmarks.metakernel_zoo end to end on tiny settings (E-DNAS search by the committed ablation-space latency table,
retraining, baseline, latency, publish into a scratch zoo, re-score through it, resume), its meta-kernel (MACs) path
in-process, and every published CIFAR-10 card reproduced from its zoo weights."""
import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, run_module

import zoo
from benchmarks import metakernel_zoo as mz
from models.counting import count
from models.spec import loads
from models.weights import sha256
from search import kernel_latency as kl
from search.metakernel_space import ablation_space

CIFAR10 = Path(ROOT) / ".." / "shared" / "data" / "cifar10"


@pytest.mark.slow
def test_metakernel_zoo_publishes_and_resumes(tmp_path):
    out, work, scratch = tmp_path / "mz.json", tmp_path / "work", tmp_path / "zoo"
    (scratch / "specs").mkdir(parents=True)
    args = ["--method=ednas", "--baseline_match=macs", "--dataset=shapes", "--seeds=0", "--baselines=3", "--epochs=2",
            "--train_limit=64",
            "--batch_size=32", "--search_limit=64", "--search_epochs=2", "--latency_rounds=1", "--name=mk_tiny",
            "--compare=metakernel_cifar10_3m",
            "--search_flags=--steps_per_epoch=3,--val_limit=32,--batch_size=16,--a_lr=0.1", f"--work_dir={work}",
            f"--zoo_dir={scratch}", f"--out={out}"]
    r = run_module("benchmarks.metakernel_zoo", *args, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(out.read_text())
    (tag, search), = report["searches"].items()
    assert report["setup"]["target_unit"] == "ms" and tag.endswith("ms")
    # the default budget: the table's latency of the meta-kernel search's reference network (every filter 7×7 at
    # expansion 3: half of each expansion-6 block), whose MACs are that search's default budget
    table = kl.KernelLatency.load(mz.ABLATION_TABLE)
    space = ablation_space((3, 5, 7), 6)
    ref = mz.reference_arch(space, 7)
    assert count(kl.arch_spec(space, ref)).macs == 3370624
    assert search["target_ms"] == pytest.approx(table.predict(space, ref), rel=1e-4)
    assert search["budget"]["unit"] == "ms"
    assert "--feedback" not in search["command"] and "recipes.search_ednas" in search["command"]  # on by default
    for key in ("argmax_ms", "argmax_vs_target", "expected_ms", "projection_filters_changed", "mixed_layers"):
        assert search[key] is not None, key
    # the search itself (recipes.search_ednas): the latency loss moved E[LAT] from its uniform-α value toward the
    # budget, the derived model is projected onto it by the table, and every output is written
    sdir = work / "search" / tag
    summary = json.loads((sdir / "summary.json").read_text())
    uniform = float(table.expected_ms([np.full((s.expand, 4), 0.25, np.float32) for s in space.blocks()]))
    assert abs(summary["expected_ms"] - search["target_ms"]) < abs(uniform - search["target_ms"])
    assert abs(summary["table_ms_vs_target"]) <= 0.03
    assert "ms by the latency table" in (work / "logs" / f"search_{tag}.log").read_text()
    history = json.loads((sdir / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert all("expected_ms" in h and "argmax_ms" in h and "feedback_beta1_mean" in h for h in history)
    assert history[1]["argmax_changed_share"] is not None and "first_in_band_step" in history[1]
    derived = loads((sdir / "derived.json").read_text(), "derived.json")
    assert derived.provenance.target == pytest.approx(search["target_ms"], rel=1e-4)
    assert derived.provenance.target_macs is None
    assert dict(derived.provenance.metrics)["table_ms"] == pytest.approx(summary["table_ms"])
    for f in ("kernel_distribution.png", "alpha_trajectories.png", "derived_init.npz"):
        assert (sdir / f).stat().st_size > 0, f
    models = report["models"]
    assert set(models) == {"searched", "A_k3"}
    assert abs(models["A_k3"]["macs_vs_searched"]) <= 0.02
    for m in models.values():
        assert len(m["top1_per_seed"]) == 1 and m["latency_ms"]["median_ms"] > 0
    card = json.loads((scratch / "weights" / "mk_tiny-cifar10.json").read_text())
    assert card["sha256"] == sha256(str(scratch / "weights" / "mk_tiny-cifar10.npz"))
    assert card["metrics"]["top1"] == models["searched"]["top1_per_seed"][0]
    assert card["metrics"]["macs"] == models["searched"]["macs"] and card["metrics"]["params"] > 0
    assert card["search"]["target_ms"] == search["target_ms"] and "E-DNAS" in card["source"]
    # a published model of the same space, timed in the same session, its top-1 from its card
    compared = report["compared"]["metakernel_cifar10_3m"]
    assert compared["latency_ms"]["median_ms"] > 0 and compared["top1_mean"] == pytest.approx(0.7932)
    assert card["metrics"]["compared_published"]["metakernel_cifar10_3m"]["macs"] == 3471264
    assert json.loads((scratch / "specs" / "mk_tiny.json").read_text())["name"] == "mk_tiny"
    assert report["published"]["reproduced"] is True
    assert (tmp_path / "mz.png").stat().st_size > 0
    r = run_module("benchmarks.metakernel_zoo", *args, timeout=300)  # resumes: only the zoo re-scoring reruns
    assert r.returncode == 0, r.stderr[-3000:]
    rerun = json.loads(out.read_text())
    assert rerun["stages_run_now"] == ["zoo_evaluate"]
    assert set(rerun["stage_seconds"]) == set(report["stage_seconds"])  # earlier stages' times are kept


def test_latency_matched_baseline_bisects_on_measured_latency(monkeypatch):
    """--baseline_match=latency: the one-size network whose latency (timed beside the searched model) is within the
    tolerance of the searched model's; here a fake LiteRT clock makes latency proportional to MACs."""
    import benchmarks.harness as harness
    sessions = []

    searched = ablation_space((3, 5, 7), 3).mixed((7,))

    def fake_latency(specs, rounds, runs=20, clock="cpu"):
        sessions.append(sorted(specs))
        assert specs["searched"] == b"tflite of searched"  # converted once, not per bisection step
        return {n: {"median_ms": count(searched if n == "searched" else s).macs / 1e7} for n, s in specs.items()}

    monkeypatch.setattr(harness, "litert_latency", fake_latency)
    monkeypatch.setattr("models.builder.build", lambda spec: spec.name)
    monkeypatch.setattr("search.tflite_timing.to_tflite", lambda model: f"tflite of {model}".encode())
    searched = dataclasses.replace(searched, name="searched")
    spec, info = mz.latency_matched(searched, 3, 0.03, name="l_k3")
    assert abs(count(spec).macs / count(searched).macs - 1) <= 0.03 and spec.name == "l_k3"
    assert all(s == ["candidate", "searched"] for s in sessions) and len(info["tried"]) == len(sessions)
    assert abs(info["tried"][-1]["ratio"] - 1) <= 0.03 and info["expand_scale"] > 1  # 3×3 needs more width


def test_metakernel_method_budgets_in_macs():
    """The default method: the FLOPs-loss search, its budget in MACs (what the published metakernel_cifar10_3m ran)."""
    a = mz.parse(["--dataset=shapes", "--out=x.json"])
    assert a.method == "metakernel" and a.targets == [3370624.0, 4500000.0]
    args = mz.search_args(a, a.targets[0], "o")
    assert args[0] == "recipes.search_metakernel" and "--target_macs=3370624" in args and "--space=ablation" in args
    summary = {"target_macs": 3370624.0, "macs": 3471264, "macs_vs_target": 0.0299, "argmax_macs": 3471264,
               "argmax_vs_target": 0.0299, "expected_macs": 3701500.0, "projection_filters_changed": 0,
               "mixture": {"mixed_layers": 6, "layers": 6}}
    row = mz.summarize_search(summary)
    assert row["budget"] == {"unit": "MACs", "target": 3370624.0, "argmax": 3471264, "expected": 3701500.0,
                             "final": 3471264}
    assert row["mixed_layers"] == "6/6" and row["argmax_within_10pct"] and mz._tag(3370624.0) == "T3370624"
    e = mz.parse(["--method=ednas", "--dataset=shapes", "--targets=0.25", "--out=x.json"])
    assert mz.search_args(e, 0.25, "o")[:4] == ["recipes.search_ednas", "--space=ablation",
                                                "--dataset=shapes", "--candidates=3,5,7"]
    assert mz._tag(0.25) == "T0p2500ms"


PUBLISHED = [name for name in zoo.list_models() if "cifar10" in zoo.weights_cards(name)]


@pytest.mark.slow
@pytest.mark.skipif(not (CIFAR10 / "test").is_dir(), reason="../shared/data/cifar10 not present")
@pytest.mark.parametrize("name", PUBLISHED)
def test_published_cifar10_card_is_reproduced(name, tmp_path):
    """``recipes.evaluate`` through the zoo (name + tag, sha256-checked) gives the card's top-1 to within one image."""
    card = zoo.weights_cards(name)["cifar10"]
    out = tmp_path / "eval.json"
    r = run_module("recipes.evaluate", f"--model={name}", "--weights=cifar10", f"--dataset=folder:{CIFAR10}",
                   f"--json={out}", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    ev = json.loads(out.read_text())
    assert ev["examples"] == card["metrics"]["test_images"]
    assert abs(ev["top1"] - card["metrics"]["top1"]) <= 1 / ev["examples"] + 1e-9
    for key in ("top1_mean_over_seeds", "top1_std_over_seeds", "seeds", "macs", "params"):
        assert card["metrics"][key] is not None, key
    # the latency key names its clock: wall time (metaKernel) or the thread's CPU time (SPOS, the tables' clock)
    latency = [k for k in card["metrics"] if k.startswith("latency_ms_litert_fp32_1thread")]
    assert len(latency) == 1 and card["metrics"][latency[0]]["median"] > 0, sorted(card["metrics"])
    assert os.path.isfile(os.path.join(zoo.SPECS_DIR, f"{name}.json"))
