"""FGNAS (issue 17), the slow tier: end-to-end recipe runs, resume, measured latency points, a latency-steered
search. In their own file so pytest-xdist (--dist loadfile) can run them beside the fast FGNAS tests."""
import keras
import numpy as np
import pytest
from test_fgnas import _shapes_space, _synthetic_latency

from models import spec as S
from models.counting import count
from search import fgnas
from search.fgnas_space import vgg_space
from search.fgnas_train import FgnasConfig, FgnasSearch


@pytest.mark.slow
def test_recipe_end_to_end_and_rerun(tmp_path):
    """The recipe: search to the target, the derived spec and weights reproduce the supernet's top-1, fine-tune;
    a rerun resumes the finished run and repeats nothing."""
    import json

    from conftest import run_module
    out = tmp_path / "run"
    args = ["--kernels=1,3", "--acts=relu,tanh", "--width=4", "--input_size=16", "--target=2e5", "--limit=256",
            "--batch_size=32", "--pretrain_epochs=1", "--search_epochs=4", "--finetune_epochs=1", "--val_limit=64",
            "--finetune_val_limit=64",
            "--psi_lr=100", "--noprogress", f"--out_dir={out}"]
    r = run_module("recipes.search_fgnas", *args, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reached"] and summary["macs"] <= 2e5 and summary["resource_value"] == summary["macs"]
    assert summary["refill"]["after"] == summary["macs"] and summary["refill"]["before"] <= summary["macs"]
    spec = S.loads((out / "derived.json").read_bytes())
    assert spec.provenance.method == "fgnas" and count(spec).macs == summary["macs"]
    card = json.loads((out / "finetune" / "model_card.json").read_text())
    assert card["epochs"] == 1 and (out / "fgnas_layers.png").stat().st_size > 10000
    assert "reached" in r.stdout and "fine-tuned top-1" in r.stdout
    stamp = (out / "finetune" / "weights.npz").stat().st_mtime_ns
    again = run_module("recipes.search_fgnas", *args, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming" in again.stderr
    assert (out / "finetune" / "weights.npz").stat().st_mtime_ns == stamp  # the finished fine-tune is not redone
    assert json.loads((out / "summary.json").read_text())["macs"] == summary["macs"]


@pytest.mark.slow
def test_latency_points_are_measured_for_every_condition():
    from search.fgnas_latency import condition_keys, fit, measure_points
    space = vgg_space(4, (1, 3), ("relu",), input_size=32)
    points = measure_points(space, fractions=(1.0,), rounds=2, runs=5)
    keys = {k for layer in condition_keys(space) for k in layer}
    assert set(points) == keys
    flat = [(macs, ms) for pts in points.values() for macs, ms in pts]
    assert all(macs > 0 and np.isfinite(ms) for macs, ms in flat)  # ms net of the invocation overhead: ≈ 0 if tiny
    # at 32×32 a 3×3 branch (9× the MACs) costs more than a 1×1 one
    assert points["conv|n32|k3|s1|arelu|i4"][0][1] > points["conv|n32|k1|s1|arelu|i4"][0][1]
    assert all(b >= 0 for _, b in fit(points).values())


@pytest.mark.slow
def test_search_to_a_latency_target(tmp_path):
    """The gate phase steers by the latency model's prediction and stops at the target (a synthetic model here;
    benchmarks.fgnas_latency measures one)."""
    from inputs.classification import load
    ds, info = load("shapes", "train", image_size=16, batch_size=32, training=True, repeat=True, limit=128)
    space = _shapes_space(info.num_classes)
    model = _synthetic_latency(space)
    full = model.predict(space, space.full_arch())
    keras.utils.set_random_seed(0)
    config = FgnasConfig(target=0.6 * full, resource="latency", pretrain_epochs=1, search_epochs=6, lam=2.0,
                         psi_lr=100.0)
    search = FgnasSearch(fgnas.build_supernet(space), space, config, latency=model)
    history = search.run(ds, 3)
    assert search.reached and history[-1]["resource"] <= 0.6 * full
    assert history[-1]["resource"] == pytest.approx(model.predict(space, search.net.arch()), rel=1e-5)
