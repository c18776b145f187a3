"""benchmarks.metakernel_zoo end to end on tiny settings (search, retraining, baseline, latency, publish into a
scratch zoo, re-score through it, resume), and every published CIFAR-10 card reproduced from its zoo weights."""
import json
import os
from pathlib import Path

import pytest
from conftest import ROOT, run_module

import zoo
from models.weights import sha256

CIFAR10 = Path(ROOT) / ".." / "shared" / "data" / "cifar10"


@pytest.mark.slow
def test_metakernel_zoo_publishes_and_resumes(tmp_path):
    out, work, scratch = tmp_path / "mz.json", tmp_path / "work", tmp_path / "zoo"
    (scratch / "specs").mkdir(parents=True)
    args = ["--dataset=shapes", "--targets=3370624", "--seeds=0", "--baselines=3", "--epochs=2", "--train_limit=64",
            "--batch_size=32", "--search_limit=64", "--search_epochs=2", "--latency_rounds=1", "--name=mk_tiny",
            "--search_flags=--steps_per_epoch=2,--val_limit=32,--batch_size=16", f"--work_dir={work}",
            f"--zoo_dir={scratch}", f"--out={out}"]
    r = run_module("benchmarks.metakernel_zoo", *args, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(out.read_text())
    search = report["searches"]["T3370624"]
    assert search["target_macs"] == 3370624  # exact: MACs are not rounded to 5 significant digits
    for key in ("argmax_macs", "argmax_vs_target", "expected_macs", "projection_filters_changed", "mixed_layers"):
        assert key in search, key
    models = report["models"]
    assert set(models) == {"searched", "A_k3"}
    assert abs(models["A_k3"]["macs_vs_searched"]) <= 0.02
    for m in models.values():
        assert len(m["top1_per_seed"]) == 1 and m["latency_ms"]["median_ms"] > 0
    card = json.loads((scratch / "weights" / "mk_tiny-cifar10.json").read_text())
    assert card["sha256"] == sha256(str(scratch / "weights" / "mk_tiny-cifar10.npz"))
    assert card["metrics"]["top1"] == models["searched"]["top1_per_seed"][0]
    assert card["metrics"]["macs"] == models["searched"]["macs"] and card["metrics"]["params"] > 0
    assert json.loads((scratch / "specs" / "mk_tiny.json").read_text())["name"] == "mk_tiny"
    assert report["published"]["reproduced"] is True
    assert (tmp_path / "mz.png").stat().st_size > 0
    r = run_module("benchmarks.metakernel_zoo", *args, timeout=300)  # resumes: only the zoo re-scoring reruns
    assert r.returncode == 0, r.stderr[-3000:]
    rerun = json.loads(out.read_text())
    assert rerun["stages_run_now"] == ["zoo_evaluate"]
    assert set(rerun["stage_seconds"]) == set(report["stage_seconds"])  # earlier stages' times are kept


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
    for key in ("top1_mean_over_seeds", "top1_std_over_seeds", "seeds", "macs", "params",
                "latency_ms_litert_fp32_1thread"):
        assert card["metrics"][key] is not None, key
    assert os.path.isfile(os.path.join(zoo.SPECS_DIR, f"{name}.json"))
