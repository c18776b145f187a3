"""E-DNAS's per-filter latency table (search.kernel_latency): the expected latency equals the table's exact sum for
one-hot choices, the fit recovers known coefficients, files round-trip and bad ones are refused, the projection
lands on a latency budget, and recipes.search_ednas refuses bad input (its end-to-end run is in
tests/test_metakernel_zoo.py, on the committed ablation-space table)."""
import dataclasses
import os

import numpy as np
import pytest
from conftest import ROOT, error_line, run_module

from search import kernel_latency as kl
from search.metakernel_space import cifar_space

SPACE = cifar_space(0.25)


def synthetic_table(space=SPACE, seed=0, noise=0.0):
    """A table fitted to block latencies drawn from known coefficients (no timing)."""
    rng = np.random.default_rng(seed)
    truth = [(rng.uniform(0.01, 0.05), rng.uniform(1e-4, 2e-3, len(space.candidates)), rng.uniform(0, 0.01))
             for _ in space.blocks()]
    archs = [kl.sample_arch(space, rng) for _ in range(30)]
    block_ms = []
    for a in archs:
        row = []
        for (base, per, branch), n in zip(truth, kl.slot_counts(space, a)):
            row.append(base + per @ n + branch * (np.count_nonzero(n) - 1) + noise * rng.normal())
        block_ms.append(row)
    return kl.fit(space, archs, block_ms, fixed_ms=0.1, meta={"source": "synthetic"}), truth, archs


def one_hot(space, arch):
    out = []
    for slot, c in zip(space.blocks(), arch):
        width = len(space.candidates) + (1 if kl.prunable(slot) else 0)
        out.append(np.eye(width, dtype=np.float32)[np.asarray(c)])
    return out


def test_fit_recovers_known_coefficients_and_predicts_exactly():
    table, truth, archs = synthetic_table()
    for s, slot, (base, per, branch) in zip(table.slots, SPACE.blocks(), truth):
        if kl.prunable(slot):  # a block without "None" has one width: only its total per kernel is identifiable
            np.testing.assert_allclose(s.per_filter, per, rtol=1e-5, atol=1e-9)
            assert s.base == pytest.approx(base, rel=1e-4) and s.branch == pytest.approx(branch, rel=1e-4, abs=1e-9)
        assert s.shared == (0 if kl.prunable(slot) else slot.in_ch)
    for slot_fit in table.fit["slots"].values():
        assert slot_fit["points"] == 30 and slot_fit["rmse_ms"] < 1e-6


def test_calibration_recovers_per_kernel_scales_and_keeps_the_exact_sum():
    table, _, archs = synthetic_table()
    scales, rest, fixed = np.array([0.9, 1.1, 1.6]), 0.8, 0.05
    measured = [fixed + kl._terms(table, SPACE, a) @ np.append(scales, rest) for a in archs]
    cal = kl.calibrate(table, SPACE, archs, measured, per_kernel=True)
    assert cal.scale == 1.0 and cal.fixed_ms == pytest.approx(fixed, abs=1e-6)
    assert [cal.fit["calibration"]["kernel_scales"][str(k)] for k in SPACE.candidates] == pytest.approx(scales)
    arch = archs[3]
    assert cal.predict(SPACE, arch) == pytest.approx(measured[3], rel=1e-6)
    assert float(cal.expected_ms(one_hot(SPACE, arch))) == pytest.approx(measured[3], rel=1e-5)
    one = kl.calibrate(table, SPACE, archs, measured)
    assert one.scale != 1.0 and one.slots == table.slots


def test_expected_latency_equals_the_tables_exact_sum_for_one_hot_choices():
    table, _, _ = synthetic_table()
    table = dataclasses.replace(table, scale=1.3)
    rng = np.random.default_rng(5)
    for _ in range(4):
        arch = kl.sample_arch(SPACE, rng)
        expected = float(table.expected_ms(one_hot(SPACE, arch)))
        assert expected == pytest.approx(table.predict(SPACE, arch), rel=1e-5)


def test_expected_latency_is_differentiable_and_between_the_extremes():
    import tensorflow as tf
    table, _, _ = synthetic_table()
    alphas = [tf.Variable(np.random.default_rng(n).normal(size=(slot.expand or 1, len(SPACE.candidates) +
                                                                 (1 if kl.prunable(slot) else 0))), dtype=tf.float32)
              for n, slot in enumerate(SPACE.blocks())]
    with tf.GradientTape() as tape:
        e = table.expected_ms([tf.nn.softmax(a, axis=-1) for a in alphas])
    grads = tape.gradient(e, alphas)
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)
    lo, hi = table.reach(SPACE)
    assert lo < float(e) < hi


def test_arch_spec_matches_the_supernets_derived_spec():
    from search import supernet as sn
    net = sn.MetaKernelSupernet(sn.build_supernet(SPACE, seed=0, classes=10), SPACE)
    arch = kl.sample_arch(SPACE, np.random.default_rng(1))
    derived = net.derive(arch, name="arch")
    assert kl.arch_spec(SPACE, arch, name="arch").stages == derived.stages
    back = kl.arch_of(SPACE, derived)  # the inverse, up to the order of the filters
    assert [sorted(a.tolist()) for a in back] == [sorted(np.asarray(a).tolist()) for a in arch]


def test_file_round_trip_and_bad_files(tmp_path):
    table, _, _ = synthetic_table()
    path = tmp_path / "t.json"
    table.save(str(path))
    back = kl.KernelLatency.load(str(path))
    assert back == table
    with pytest.raises(ValueError, match="not a per-filter latency table"):
        kl.KernelLatency.from_json({"format": "latency_lut"}, "x.json")
    bad = table.to_json()
    bad["slots"][0]["per_filter"] = [1.0]
    with pytest.raises(ValueError, match="malformed"):
        kl.KernelLatency.from_json(bad, "x.json")
    # every field is checked for its kind and range, naming it: NaN / inf / negative costs, a scale <= 0, numbers
    # or lists given as strings (a string of digits used to read as a list of kernel sizes)
    def damaged(path_value):
        obj = table.to_json()
        *path, key = path_value[0]
        node = obj
        for p in path:
            node = node[p]
        node[key] = path_value[1]
        return obj

    cases = [((("slots", 0, "per_filter"), [float("nan")] * len(table.candidates)), "per_filter"),
             ((("slots", 1, "per_filter"), [-0.001] * len(table.candidates)), "per_filter"),
             ((("slots", 2, "per_filter"), "000"), "per_filter"),
             ((("slots", 0, "base"), "1e999"), "base"), ((("slots", 0, "base"), float("inf")), "base"),
             ((("slots", 0, "branch"), -1.0), "branch"), ((("slots", 0, "shared"), True), "shared"),
             ((("scale",), 0.0), "scale"), ((("scale",), -1.0), "scale"), ((("fixed_ms",), float("inf")), "fixed_ms"),
             ((("candidates",), "357"), "candidates"), ((("candidates",), [3, 3, 5]), "candidates"),
             ((("input_size",), 32.5), "input_size"), ((("slots",), []), "slots"),
             ((("slots", 0, "per_filter"), [1e39] * len(table.candidates)), "per_filter")]  # finite, not in float32
    for change, field in cases:
        with pytest.raises(ValueError, match=f"malformed.*{field}"):
            kl.KernelLatency.from_json(damaged(change), "x.json")
    import os
    os.mkfifo(tmp_path / "fifo.json")  # opening it would wait for a writer forever
    with pytest.raises(ValueError, match="fifo.json: is a FIFO, not a regular file"):
        kl.KernelLatency.load(str(tmp_path / "fifo.json"))
    from search.fgnas_latency import AffineLatency
    from search.latency import LatencyError, LatencyTable
    with pytest.raises(ValueError, match="is a FIFO"):
        AffineLatency.load(str(tmp_path / "fifo.json"))
    with pytest.raises(LatencyError, match="is a FIFO"):
        LatencyTable.load(str(tmp_path / "fifo.json"))
    os.symlink(tmp_path / "loop_a.json", tmp_path / "loop_b.json")
    os.symlink(tmp_path / "loop_b.json", tmp_path / "loop_a.json")  # a symlink loop: one line, not an OSError
    with pytest.raises(ValueError, match="loop_a.json: cannot be looked at"):
        kl.KernelLatency.load(str(tmp_path / "loop_a.json"))
    with pytest.raises(LatencyError, match="cannot be looked at"):
        LatencyTable.load(str(tmp_path / "loop_a.json"))
    (tmp_path / "b.json").write_text("{")
    with pytest.raises(ValueError, match="not JSON"):
        kl.KernelLatency.load(str(tmp_path / "b.json"))
    with pytest.raises(ValueError, match="measured for space"):
        table.check(cifar_space(0.5))
    with pytest.raises(ValueError, match="input size"):
        table.check(SPACE.replace(input_size=64))


def test_move_costs_are_exact_changes_of_the_prediction():
    """Every single-row move, the extra-branch term included (a move that empties or starts a kernel size)."""
    table, _, archs = synthetic_table()
    rng = np.random.default_rng(1)
    for arch in archs[:3]:
        here, costs = table.predict(SPACE, arch), table.move_costs(SPACE, arch)
        for b, (c, m) in enumerate(zip(arch, costs)):
            assert m.shape == (len(c), len(SPACE.candidates) + kl.prunable(SPACE.blocks()[b]))
            np.testing.assert_allclose(table.move_costs(SPACE, arch, b), m)
            for r in rng.choice(len(c), min(3, len(c)), replace=False):
                for j in range(m.shape[1]):
                    moved = [x.copy() for x in arch]
                    moved[b][r] = j
                    if kl.prunable(SPACE.blocks()[b]) and not moved[b].any():
                        continue  # a block keeps one filter
                    assert m[r, j] == pytest.approx(table.predict(SPACE, moved) - here, abs=1e-12)


def test_projection_lands_on_a_latency_budget():
    from search import supernet as sn
    table, _, _ = synthetic_table()
    net = sn.MetaKernelSupernet(sn.build_supernet(SPACE, seed=0, classes=10, alpha_init_std=1.0), SPACE)
    argmax = table.predict(SPACE, net.choices())
    filters = sum(len(c) for c in net.choices())
    for target in (0.7 * argmax, 1.2 * argmax):
        choice, moves, ms = net.project_to_target(target, 0.03, latency=table)
        assert moves > 0 and abs(ms / target - 1) <= 0.03
        assert ms == pytest.approx(table.predict(SPACE, choice))
        # every move shrinks the exact gap, so the walk ends; it once cycled to its 100,000-move cap when the
        # extra-branch term made a "closer" move land farther away
        assert moves <= 2 * filters


RECIPE = "recipes.search_ednas"


@pytest.mark.parametrize("args,needle", [
    (["--target_ms=1"], "--latency_table: required"),
    (["--latency_table={table}"], "--target_ms: required"),
    (["--latency_table={table}", "--target_ms=1", "--target_macs=1e6"], "one budget per search"),
    (["--latency_table={table}", "--target_ms=1e6"], "outside what the space can reach"),
    (["--latency_table={table}", "--target_ms=1", "--width=0.5"], "measured for space"),
    (["--latency_table={tmp}/none.json", "--target_ms=1"], "cannot read"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, needle):
    table, _, _ = synthetic_table()
    table.save(str(tmp_path / "t.json"))
    args = [a.format(table=tmp_path / "t.json", tmp=tmp_path) for a in args]
    r = run_module(RECIPE, "--width=0.25", *args, f"--out_dir={tmp_path / 'o'}", "--noprogress")
    assert needle in error_line(r, RECIPE), r.stderr
    assert not (tmp_path / "o").exists()


def test_target_ms_needs_a_table(tmp_path):
    r = run_module("recipes.search_metakernel", "--target_ms=1", f"--out_dir={tmp_path / 'o'}", "--noprogress")
    assert "--target_ms needs --latency_table" in error_line(r, "recipes.search_metakernel"), r.stderr


def test_feedback_benchmark_convergence_and_bad_input(tmp_path):
    from benchmarks.ednas_search import convergence
    history = [{"epoch": e, "step": 10 * e, "seconds": 5.0, "first_in_band_step": None if e < 2 else 13,
                "argmax_changed_share": [None, 0.2, 0.05, 0.004][e - 1], "expected_ms": 1.0, "argmax_ms": 1.1}
               for e in (1, 2, 3, 4)]
    c = convergence(history, steps_per_epoch=10)
    assert c["first_in_band_step"] == 13 and c["first_in_band_s"] == pytest.approx(6.5)
    assert c["argmax_settled_epoch"] == 4 and c["argmax_settled_step"] == 40 and c["argmax_settled_s"] == 20.0
    r = run_module("benchmarks.ednas_search", f"--out={tmp_path / 'x.json'}", "--arms=a,d")
    assert "--arms" in error_line(r, "ednas_search"), r.stderr
    r = run_module("benchmarks.ednas_search", f"--out={tmp_path / 'x.json'}", "--dataset=shapes",
                   f"--latency_table={tmp_path / 'none.json'}")
    assert "cannot read" in error_line(r, "ednas_search"), r.stderr


def test_projection_on_the_committed_ablation_table_ends_within_the_filter_count():
    """The committed ablation-space table (real extra-branch terms), targets below, at and above the reference
    network's latency: the walk ends within one move per filter."""
    from search import supernet as sn
    from search.metakernel_space import ablation_space
    space = ablation_space((3, 5, 7), 6)
    table = kl.KernelLatency.load(os.path.join(ROOT, "benchmarks", "results", "ednas_latency_ablation_table.json"))
    net = sn.MetaKernelSupernet(sn.build_supernet(space, seed=0, classes=10, alpha_init_std=1.0), space)
    filters = sum(len(c) for c in net.choices())
    for f in (0.6, 0.8, 1.0):
        target = table.predict(space, kl.uniform_arch(space, 7)) * f
        choice, moves, ms = net.project_to_target(target, 0.03, latency=table)
        assert abs(ms / target - 1) <= 0.03 and 0 < moves <= filters
        assert ms == pytest.approx(table.predict(space, choice))


@pytest.mark.slow
def test_feedback_benchmark_resumes_from_its_ledger_without_the_work_directory(tmp_path):
    """A finished training is mirrored into the ledger; a later run without the work directory does not train
    again, and a ledger of other settings is one line and exit 2."""
    import json
    import shutil
    out, work, ledger = tmp_path / "e.json", tmp_path / "work", tmp_path / "ledger"
    args = [f"--out={out}", "--arms=r", "--seeds=0", "--dataset=shapes", "--train_limit=64", "--retrain_epochs=2",
            "--latency_rounds=0", f"--work_dir={work}", f"--ledger={ledger}"]
    r = run_module("benchmarks.ednas_search", *args)
    assert r.returncode == 0, r.stderr[-3000:]
    first = json.loads(out.read_text())
    assert first["stages_run_now"] == ["train_r_s0"] and (ledger / "train" / "r_s0" / "model_card.json").is_file()
    shutil.rmtree(work)
    r = run_module("benchmarks.ednas_search", *args)
    assert r.returncode == 0, r.stderr[-3000:]
    again = json.loads(out.read_text())
    assert again["stages_run_now"] == [] and again["arms"]["r"]["top1"] == first["arms"]["r"]["top1"]
    assert again["stage_seconds"]["train_r_s0"] == first["stage_seconds"]["train_r_s0"]
    r = run_module("benchmarks.ednas_search", *args, "--retrain_epochs=3")
    assert "other settings (retrain_epochs)" in error_line(r, "ednas_search"), r.stderr
