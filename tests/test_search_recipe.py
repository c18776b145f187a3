"""recipes.search_metakernel end to end on the synthetic set: moves toward its target, resumes after a kill, and
refuses bad input with one line and exit status 2."""
import dataclasses
import json

import pytest
from conftest import error_line, kill_once_exists, run_module

from models.counting import count
from models.spec import loads

TARGET = 600_000
TINY = ["--dataset=shapes", "--width=0.25", f"--target_macs={TARGET}", "--batch_size=16", "--limit=320",
        "--val_limit=64", "--steps_per_epoch=6", "--a_lr=0.05", "--noprogress"]
SEARCH = "recipes.search_metakernel"


@pytest.mark.slow
def test_tiny_search_resumes_after_a_kill_on_mirrored_replicas_and_writes_everything(tmp_path):
    out = tmp_path / "run"
    args = [*TINY, "--epochs=2", "--steps_per_epoch=10", f"--out_dir={out}"]
    kill_once_exists(run_module(SEARCH, *args, wait=False), out / "checkpoints" / "checkpoint", timeout=300, poll=0.2,
                     what="search")
    assert not (out / "derived.json").exists()
    # resumed on two logical CPU replicas (mirrored): the checkpoint does not depend on the strategy
    r = run_module(SEARCH, *args, "--strategy=mirrored", "--cpu_replicas=2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from epoch" in r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed"] is True
    # E[MACs] starts (uniform α) well above the target and the cost loss pulls it down
    assert summary["initial_expected_macs"] > 1.3 * TARGET
    assert abs(summary["expected_macs"] - TARGET) < abs(summary["initial_expected_macs"] - TARGET), summary
    spec = loads((out / "derived.json").read_text(), "derived.json")
    assert spec.provenance.method == "metakernel" and spec.provenance.target_macs == TARGET
    assert spec.provenance.seed == 0 and spec.provenance.data == "shapes"
    metrics = dict(spec.provenance.metrics)
    assert {"expected_macs", "argmax_macs", "macs", "params"} <= set(metrics)
    macs = count(spec).macs
    assert macs == metrics["macs"] and abs(macs / TARGET - 1) <= 0.03
    for f in ("kernel_distribution.png", "alpha_trajectories.png", "derived_init.npz", "history.json"):
        assert (out / f).stat().st_size > 0, f
    assert any((out / "tensorboard").iterdir())
    # the derived choices by block: the same architecture, re-derived from them
    import numpy as np

    from search.metakernel_space import cifar_space
    from search.supernet import MetaKernelSupernet, build_supernet
    space = cifar_space(width=0.25, classes=spec.head.classes)
    net = MetaKernelSupernet(build_supernet(space), space)
    with np.load(out / "derived_arch.npz") as f:
        arch = [f[b.name] for b in net.blocks]
    assert count(net.derive(arch, name=spec.name)).macs == macs
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[-1]["tau"] < history[0]["tau"]
    # the argmax series continues across the kill (checkpoints/argmax.npz): every epoch after the first has a share
    assert history[0]["argmax_changed_share"] is None
    assert all(0.0 <= h["argmax_changed_share"] <= 1.0 for h in history[1:])


@pytest.mark.parametrize("args,needle", [
    ([], "--target_macs"),
    (["--target_macs=1e6", "--candidates=3,4"], "--candidates"),
    (["--target_macs=1e6", "--dataset=folder:/nonexistent/dir"], "/nonexistent/dir"),
    (["--target_macs=1e6", "--tau_start=0.5", "--tau_end=2"], "--tau_end"),
    (["--target_macs=1e12", "--width=0.25", "--epochs=1"], "outside what the space can reach"),
    (["--target_macs=1e6", "--epochs=zero"], "epochs"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, needle):
    r = run_module(SEARCH, *args, f"--out_dir={tmp_path / 'o'}", "--noprogress")
    assert needle in error_line(r, SEARCH), r.stderr
    assert not (tmp_path / "o" / "derived.json").exists()


def test_changed_settings_refuse_to_resume(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "search_settings.json").write_text(json.dumps({"epochs": 99}))
    r = run_module(SEARCH, "--target_macs=1e6", f"--out_dir={out}", "--noprogress")
    assert "other settings" in error_line(r, SEARCH), r.stderr


def test_budget_counts_at_its_own_input_size(tmp_path):
    """--budget_input_size: a 224 budget is checked (and later counted) at 224 while the supernet trains at 64."""
    from common.checks import ConfigError
    from workflows import search_metakernel as sm
    config = sm.SearchMetakernelConfig(space="lite0", input_size=64, target_macs=260e6, out_dir=str(tmp_path / "a"))
    with pytest.raises(ConfigError, match="outside what the space can reach .* at 64×64"):
        sm.validate(config)
    sm.validate(dataclasses.replace(config, budget_input_size=224))
    space = sm.make_space(config, (3, 5, 7), 10)
    assert sm.budget_space(dataclasses.replace(config, budget_input_size=224), space).input_size == 224
    assert sm.budget_space(config, space) is space


def test_lite0_space_needs_the_meta_kernel_and_lite0s_sizes(tmp_path):
    from common.checks import ConfigError
    from workflows import search_metakernel as sm
    for changes in ({"dw_mode": "multi"}, {"candidates": (3, 7)}):
        config = sm.SearchMetakernelConfig(space="lite0", input_size=64, budget_input_size=224, target_macs=260e6,
                                           out_dir=str(tmp_path / "a"), **changes)
        with pytest.raises(ConfigError, match="--space=lite0 starts from Lite0's 3×3 and 5×5 kernels"):
            sm.validate(config)
