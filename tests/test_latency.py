"""Latency LUT (search.latency): keys, table files, prediction and fallback arithmetic, a tiny real build, slicing,
and the benchmark's command line."""
import dataclasses
import json
import os

import numpy as np
import pytest
from conftest import ROOT, error_line, run_module

from models.counting import count
from models.spec import MBConvSpec, ShuffleSpec, decode
from search import latency as lat

BLOCK = MBConvSpec(kernels=(3, 5), split=(24, 12), expand_channels=36, filters=16, stride=1, act="swish",
                   se_channels=4)


def tiny_spec(name="tiny"):
    """Stem, two MBConv blocks (one mixed-kernel with SE and a residual, one strided), head: 16×16 input."""
    return decode({
        "schema_version": 1, "name": name, "family": "mbconv",
        "input": {"size": 16, "mean": [127.5] * 3, "std": [127.5] * 3},
        "stem": {"filters": 8, "kernel": 3, "stride": 1, "act": "relu"},
        "stages": [[{"block": "ir", "kernels": [3, 5], "split": [8, 8], "expand_channels": 16, "filters": 8,
                     "stride": 1, "act": "swish", "se_channels": 2},
                    {"block": "ir", "kernels": [3], "expand_channels": 24, "filters": 16, "stride": 2,
                     "act": "relu"}]],
        "head": {"filters": 32, "act": "relu", "dropout": 0.1, "classes": 5}})


# ------------------------------------------------------------------------------------------------------------- keys
def test_block_key_is_stable_and_canonical():
    key = lat.block_key(BLOCK, 16, 20)
    assert key == "ir|i16|n20|k3x24+k5x12|e36|o16|s1|aswish|se4|g1.1|r1|psame"
    same = MBConvSpec(kernels=(3, 5), split=(24, 12), expand_channels=36, filters=16, stride=1, act="swish",
                      se_channels=4, bits=None)
    assert lat.block_key(same, 16, 20) == key
    # What does not change the float TFLite graph does not change the key.
    from models.spec import BitsSpec
    assert lat.block_key(dataclasses.replace(BLOCK, bits=BitsSpec(4, 4)), 16, 20) == key
    shuffle = ShuffleSpec(choice="x", filters=64, mid_channels=32, stride=1)
    assert lat.block_key(shuffle, 64, 14) == "shuffle|i64|n14|cx|o64|m32|s1|arelu|psame"


@pytest.mark.parametrize("change", [
    dict(kernels=(3, 7)), dict(split=(12, 24), ), dict(kernels=(5, 3)), dict(act="relu"), dict(se_channels=0),
    dict(stride=2), dict(filters=24), dict(skip=False), dict(expand_groups=2), dict(project_groups=2),
    dict(kernels=(3,), split=(36,)), dict(kernels=(3,), split=(30,), expand_channels=30),
])
def test_block_key_distinguishes_block_settings(change):
    assert lat.block_key(dataclasses.replace(BLOCK, **change), 16, 20) != lat.block_key(BLOCK, 16, 20)


def test_block_key_distinguishes_input_and_padding():
    base = lat.block_key(BLOCK, 16, 20)
    others = {lat.block_key(BLOCK, 24, 20), lat.block_key(BLOCK, 16, 10),
              lat.block_key(BLOCK, 16, 20, padding="symmetric")}
    assert base not in others and len(others) == 3
    # no expansion conv: its own marker; residual only when the shapes allow it
    no_expand = MBConvSpec(kernels=(3,), split=(16,), expand_channels=None, filters=16, stride=1, act="relu")
    assert "|e-|" in lat.block_key(no_expand, 16, 8) and "|r1|" in lat.block_key(no_expand, 16, 8)
    assert "|r0|" in lat.block_key(dataclasses.replace(no_expand, filters=24), 16, 8)


def test_parts_cover_the_model_and_sum_to_its_macs():
    import zoo
    for spec, size in [(tiny_spec(), None), (zoo.get_spec("mixnet_s"), 224), (zoo.get_spec("spos_shufflenetv2"), 96)]:
        ps = lat.parts(spec, size)
        assert [p.name for p in ps] == ["stem"] + [f"s{i}_b{j}" for i, j, _ in spec.blocks()] + ["head"]
        assert sum(p.macs for p in ps) == count(spec, size).macs
        assert {p.kind for p in ps} <= set(lat.KINDS)
    kinds = {p.kind for p in lat.parts(zoo.get_spec("spos_shufflenetv2"), 96)}
    assert kinds == {"stem", "shuffle", "head"}


def test_parts_follow_the_walk():
    import zoo
    from models.walk import walk
    spec = zoo.get_spec("mixnet_s")
    w = walk(spec, 160)
    ps = lat.parts(spec, 160)
    assert [p.site for p in ps[1:-1]] == list(w.blocks) and ps[0].site is None and ps[-1].site is None
    assert [(p.in_ch, p.in_size, p.block) for p in ps[1:-1]] == [(s.in_ch, s.in_size, s.block) for s in w.blocks]
    assert (ps[0].in_ch, ps[0].in_size) == (3, 160) and (ps[-1].in_ch, ps[-1].in_size) == (w.head.in_ch, w.head.in_size)
    assert ps[-1].key == lat.head_key(spec, w.head.in_ch, w.head.in_size)


def test_one_latency_summary():
    from export import litert
    s = lat.summarize([3.0, 1.0, 2.0, 4.0, 5.0])
    assert litert.summarize is lat.summarize
    assert s == {"median_ms": 3.0, "p10_ms": pytest.approx(1.4), "p90_ms": pytest.approx(4.6), "mean_ms": 3.0,
                 "min_ms": 1.0, "max_ms": 5.0, "std_ms": pytest.approx(np.std([1, 2, 3, 4, 5])), "n": 5}


# ----------------------------------------------------------------------------------------------------------- tables
def hand_table(spec, skip=()):
    """Entries ms = 1e-5·MACs + 0.01 for every part of ``spec`` except the names in ``skip``; overhead 0.05 ms."""
    t = lat.LatencyTable(overhead_ms=0.05, meta={})
    for p in lat.parts(spec):
        if p.name not in skip:
            t.entries[p.key] = {"kind": p.kind, "macs": p.macs, "ms": 1e-5 * p.macs + 0.01}
    return t


def test_table_save_load_round_trip(tmp_path):
    t = hand_table(tiny_spec())
    t.meta = {"threads": 1, "host": lat.host(), "versions": lat.versions(), "clock": "cpu", "context": "chain"}
    t.add("stem|c3|n99|o8|k3|s1|arelu|pool0|psame", "stem", 1234, np.array([0.2, 0.3, 0.25]), 0.05,
          extra={"wall_ms": 0.4})
    path = tmp_path / "lut.json"
    t.save(str(path))
    assert os.listdir(tmp_path) == ["lut.json"]  # written to a temp file, then renamed
    u = lat.LatencyTable.load(str(path))
    assert u.entries.keys() == t.entries.keys() and u.overhead_ms == t.overhead_ms
    for k, e in t.entries.items():  # floats are stored to 7 significant digits
        assert u.entries[k] == {f: pytest.approx(v, rel=1e-6) if isinstance(v, float) else v for f, v in e.items()}
    assert u.meta["host"] == json.loads(json.dumps(t.meta["host"])) and u.meta["threads"] == 1
    assert u.to_json() == lat.LatencyTable.load(str(path)).to_json()  # saving is a fixed point after one round
    e = u.entries["stem|c3|n99|o8|k3|s1|arelu|pool0|psame"]
    assert e["raw_ms"] == 0.25 and e["ms"] == pytest.approx(0.2) and e["wall_ms"] == 0.4 and e["n"] == 3
    assert u.predict(tiny_spec()) == pytest.approx(t.predict(tiny_spec()))
    assert u.compatible(1, "cpu", "chain") is None
    assert "thread" in u.compatible(2)
    assert "clock" in u.compatible(1, "wall")


@pytest.mark.parametrize("text, needle", [
    ("{not json", "not valid JSON"),
    ('{"format": "other"}', "not a latency table"),
    ('{"format": "latency_lut", "version": 99, "entries": {}}', "version"),
    ('{"format": "latency_lut", "version": 1, "entries": {"k": {"kind": "ir", "macs": 1, "ms": -1}}}', "entries"),
    ('{"format": "latency_lut", "version": 1, "entries": {"k": {"kind": "dense", "macs": 1, "ms": 1}}}', "entries"),
])
def test_table_load_rejects_bad_files(tmp_path, text, needle):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(lat.LatencyError, match=needle):
        lat.LatencyTable.load(str(path))
    with pytest.raises(lat.LatencyError, match="cannot read"):
        lat.LatencyTable.load(str(tmp_path / "missing.json"))


def test_predict_is_overhead_plus_sum_of_entries():
    spec = tiny_spec()
    t = hand_table(spec)
    e = t.explain(spec)
    expected = 0.05 + sum(1e-5 * p.macs + 0.01 for p in lat.parts(spec))
    assert e.ms == pytest.approx(expected) and t.predict(spec) == pytest.approx(expected)
    assert e.fallback == 0 and [r["source"] for r in e.parts] == ["table"] * 4
    assert [r["part"] for r in e.parts] == ["stem", "s0_b0", "s0_b1", "head"]


def test_affine_fallback_on_unseen_block():
    spec = tiny_spec()
    t = hand_table(spec, skip=("s0_b1",))
    # a second, different block entry so the "ir" kind has two MAC values to fit a line through
    other = dataclasses.replace(spec.stages[0][1], expand_channels=48, split=(48,))
    t.entries[lat.block_key(other, 8, 16)] = {"kind": "ir", "macs": 99_999, "ms": 1e-5 * 99_999 + 0.01}
    a, b, n = t.fallback_fit()["ir"]
    assert a == pytest.approx(1e-5) and b == pytest.approx(0.01) and n == 2
    e = t.explain(spec)
    assert e.fallback == 1
    row = next(r for r in e.parts if r["part"] == "s0_b1")
    # one entry in s0_b1's slot group (``other``): too few for a line, so the per-kind fit serves
    assert row["source"] == "fallback:ir" and row["ms"] == pytest.approx(1e-5 * row["macs"] + 0.01)
    assert e.ms == pytest.approx(hand_table(spec).predict(spec))  # the data are exactly affine
    # a second entry in the slot group: the group's own line (slope 2e-5 here) takes over
    third = dataclasses.replace(other, expand_channels=12, split=(12,))
    t.entries[lat.block_key(third, 8, 16)] = {"kind": "ir", "macs": 49_999, "ms": 2e-5 * 49_999 + 0.01 - 0.5}
    t.entries[lat.block_key(other, 8, 16)]["ms"] = 2e-5 * 99_999 + 0.01 - 0.5
    t._fit_cache = None
    group = lat.slot_group(lat.parts(spec)[2].key)
    assert group == "ir|i8|n16|o16|s2|arelu|se0|g1.1|r0|psame" and group == lat.slot_group(lat.block_key(third, 8, 16))
    row = next(r for r in t.explain(spec).parts if r["part"] == "s0_b1")
    assert row["source"] == f"fallback:{group}" and row["ms"] == pytest.approx(max(0, 2e-5 * row["macs"] + 0.01 - 0.5))
    row = next(r for r in t.explain(spec, fallback="kind").parts if r["part"] == "s0_b1")
    assert row["source"] == "fallback:ir"
    # a kind with fewer than two MAC values falls back on the fit over all entries
    only = lat.LatencyTable({"x": {"kind": "stem", "macs": 100, "ms": 1.0}, "y": {"kind": "head", "macs": 300,
                                                                                   "ms": 2.0}})
    assert only.fallback_ms("ir", 500) == (pytest.approx(3.0), "all")
    assert hand_table(spec).without([p.key for p in lat.parts(spec)[1:3]]).explain(spec).fallback == 2
    with pytest.raises(lat.LatencyError, match="empty"):
        lat.LatencyTable().predict(spec)


def test_rank_statistics():
    from search.latency import mape, ranks, spearman
    assert ranks([10, 30, 20, 20]).tolist() == [1.0, 4.0, 2.5, 2.5]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    x = np.random.default_rng(0).normal(size=30)
    y = x + np.random.default_rng(1).normal(size=30)
    y[3] = y[4]  # a tie
    scipy_stats = pytest.importorskip("scipy.stats")
    assert spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y)[0])
    assert mape([110, 90], [100, 100]) == pytest.approx(10.0)


# ----------------------------------------------------------------------------------------------------- real timing
@pytest.mark.slow
def test_tiny_real_build_table_and_slicing(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from models.builder import build
    spec = tiny_spec()
    table = lat.build_table([spec], warmup=2, runs=2, rounds=2, progress=False)
    keys = [p.key for p in lat.parts(spec)]
    assert sorted(table.entries) == sorted(keys)
    for e in table.entries.values():
        assert e["raw_ms"] > 0 and e["ms"] >= 0 and e["n"] == 4 and e["cpu_ms"] > 0 and e["wall_ms"] > 0
    assert table.overhead_ms > 0 and table.predict(spec) > 0 and table.explain(spec).fallback == 0
    m = table.meta
    assert m["threads"] == 1 and m["clock"] == "cpu" and m["context"] == "chain" and m["warmup"] == 2
    assert m["versions"]["ai-edge-litert"] and m["host"]["cpu_model"] and m["date"] and len(m["sessions"]) == 1
    table.save(str(tmp_path / "lut.json"))
    # extending: nothing left to time for the same spec, so no new entries
    again = lat.build_table([spec], warmup=1, runs=1, rounds=1, progress=False,
                            table=lat.LatencyTable.load(str(tmp_path / "lut.json")))
    assert again.entries.keys() == table.entries.keys() and len(again.meta["sessions"]) == 2
    with pytest.raises(lat.LatencyError, match="thread"):
        lat.build_table([spec], threads=2, table=again, progress=False)

    # The sliced parts chained reproduce the whole model's output exactly, and the one-block Keras model
    # (method="block") converts to the same operators as the slice of that block.
    whole = lat.to_tflite(build(spec))
    pieces = lat.split_tflite(whole, [p.name for p in lat.parts(spec)])

    def run(buf, x):
        it = Interpreter(model_content=buf, num_threads=1)
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        return it.get_tensor(it.get_output_details()[0]["index"])

    x = np.random.default_rng(0).uniform(0, 255, (1, 16, 16, 3)).astype(np.float32)
    y = x
    for p in lat.parts(spec):
        y = run(pieces[p.name], y)
    np.testing.assert_allclose(y, run(whole, x), atol=1e-5)
    p = lat.parts(spec)[1]
    one = lat.to_tflite(lat.block_model(p.site, spec))
    assert op_counts(one) == op_counts(pieces["s0_b0"]) and len(op_counts(one)) >= 4
    with pytest.raises(lat.LatencyError):
        lat.split_tflite(whole, ["stem", "s0_b1", "s0_b0", "head"])


def op_counts(buf):
    from ai_edge_litert import schema_py_generated as fb
    model = fb.ModelT.InitFromPackedBuf(bytearray(buf), 0)
    counts = {}
    for op in model.subgraphs[0].operators:
        oc = model.operatorCodes[op.opcodeIndex]
        code = max(oc.builtinCode, oc.deprecatedBuiltinCode)
        counts[code] = counts.get(code, 0) + 1
    return counts


# -------------------------------------------------------------------------------------------------------- benchmark
@pytest.mark.slow
def test_benchmark_quick(tmp_path):
    lut = os.path.join(ROOT, "benchmarks", "results", "latency_lut.json")
    before = os.path.getmtime(lut) if os.path.exists(lut) else None
    out = tmp_path / "x.json"
    r = run_module("benchmarks.latency_model", "--quick", f"--out={out}", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(out.read_text())
    for key in ("n_archs", "mape", "spearman", "threads", "host", "clock", "targets", "lut", "timing", "archs",
                "comparisons", "method", "command"):
        assert key in report, key
    assert report["n_archs"] == 3 and len(report["archs"]) == 3 and report["threads"] == 1 and report["quick"]
    assert 0 <= report["mape"] < 100 and -1 <= report["spearman"] <= 1
    assert report["host"]["cpu_count"] >= 1 and report["host"]["litert"]
    assert report["command"] == f"python -m benchmarks.latency_model --quick --out={out}"
    for row in report["archs"]:
        assert row["predicted_ms"] > 0 and row["measured_ms"] > 0 and row["macs"] > 0 and row["fallback_parts"] == 0
    assert report["lut"]["path"] is None and report["lut"]["entries"] > 3
    assert (tmp_path / "x.png").stat().st_size > 1000
    assert sorted(os.listdir(tmp_path)) == ["x.json", "x.png"]
    after = os.path.getmtime(lut) if os.path.exists(lut) else None
    assert before == after  # --quick leaves the committed LUT alone


@pytest.mark.slow
def test_benchmark_quick_spos_space(tmp_path):
    """The SPOS ShuffleNetV2 space: uniform paths, every part of them in the table (no fallback)."""
    out = tmp_path / "s.json"
    r = run_module("benchmarks.latency_model", "--quick", "--space=spos_cifar", "--width=0.25", "--nocover",
                   "--whole_sessions=2", "--whole_rounds=1", f"--out={out}", "--plot=", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["space"]["kind"] == "spos_cifar" and report["space"]["input_size"] == 32
    assert report["space"]["choices"] == ["3", "5", "7", "x"] and len(report["space"]["channel_ratios"]) == 8
    assert report["space"]["cover_archs"] == 0 and len(report["archs"]) == 3
    for row in report["archs"]:
        assert row["fallback_parts"] == 0 and row["blocks"] and all(k.startswith("shuffle|") for k, _ in row["blocks"])
        assert row["predicted_ms"] > 0 and row["measured_ms"] > 0
    assert "uniformly sampled paths of search.spos.cifar_space" in report["method"]
    # whole models timed again in two sessions of their own: the metrics use their mean; the in-session numbers
    # and the sessions' repeatability are reported beside it
    assert report["timing"]["whole_sessions"] == 2 and "2 later sessions" in report["method"]
    rep = report["comparisons"]["measurement_repeatability"]
    assert rep["sessions"] == 2 and 0 <= rep["mean_rel_spread"] <= rep["max_rel_spread"]
    assert report["comparisons"]["measured_in_profile_session"]["mape"] >= 0
    assert all(row["measured_in_profile_session_ms"] > 0 for row in report["archs"])


def test_spos_cover_paths_hold_every_block_key():
    """One path per (choice, ratio), every block at it: any path's block keys are all among theirs."""
    from search import spos as sp
    space = sp.cifar_space(0.25, (2, 1, 2, 1), channel_ratios=sp.PAPER_RATIOS)
    cover = [sp.arch_spec(space, a) for a in sp.cover(space)]
    assert len(cover) == len(space.choices) * len(space.channel_ratios) == 32
    keys = {p.key for spec in cover for p in lat.parts(spec)}
    rng = np.random.default_rng(0)
    for _ in range(20):
        spec = sp.arch_spec(space, sp.uniform(space, rng))
        assert {p.key for p in lat.parts(spec)} <= keys
    assert len({p.key for p in lat.parts(cover[0])} & {p.key for p in lat.parts(cover[1])}) == 2  # stem + head


def test_committed_spos_lut_covers_the_imagenet_space():
    """benchmarks/results/latency_lut_spos.json (recipes.search_spos --space=imagenet --latency_table) has every part
    of every path of the paper's space with channel search: no part of a path falls back to the MACs fit."""
    from search import spos as sp
    table = lat.LatencyTable.load(os.path.join(ROOT, "benchmarks", "results", "latency_lut_spos.json"))
    space = sp.imagenet_space(sp.PAPER_RATIOS)
    rng = np.random.default_rng(0)
    for arch in [sp.smallest(space), sp.largest(space), *sp.uniform(space, rng, 50)]:
        e = table.explain(sp.arch_spec(space, arch))
        assert e.fallback == 0 and len(e.parts) == space.n_blocks + 2
        assert e.ms > 0


@pytest.mark.parametrize("args, needle", [
    (("--n_archs=1",), "--n_archs"),
    (("--runs=0",), "--runs"),
    (("--space=mobile",), "space"),
    (("--clock=cpu", "--threads=2"), "--clock"),
    (("--input_size=4",), "--input_size"),
    (("--no_such_flag=1",), "no_such_flag"),
])
def test_benchmark_bad_flags(tmp_path, args, needle):
    out = tmp_path / "x.json"
    r = run_module("benchmarks.latency_model", f"--out={out}", "--quick", *args, timeout=120)
    assert needle in error_line(r, "benchmarks.latency_model"), r.stderr
    assert not out.exists()


def test_benchmark_bad_lut(tmp_path):
    bad = tmp_path / "lut.json"
    bad.write_text("[1, 2")
    out = tmp_path / "x.json"
    r = run_module("benchmarks.latency_model", f"--out={out}", "--quick", f"--lut={bad}", timeout=120)
    assert "--lut" in error_line(r, "benchmarks.latency_model"), r.stderr
    assert not out.exists()


def test_reanalyze_calibrates_a_result_without_timing(tmp_path):
    """``benchmarks.latency_model --reanalyze``: a constant bias of the parts' sum disappears under the
    leave-one-out whole-model calibration; nothing is timed; a file that is not a result is one line, exit 2."""
    rng = np.random.default_rng(0)
    measured = rng.uniform(10, 40, 12)
    rows = [{"name": f"a{i}", "predicted_ms": 1.08 * m + 0.5, "measured_ms": m, "measured_p10_ms": 0.9 * m,
             "measured_p90_ms": 1.2 * m} for i, m in enumerate(measured)]
    out = tmp_path / "r.json"
    out.write_text(json.dumps({"archs": rows, "comparisons": {}}))
    r = run_module("benchmarks.latency_model", "--reanalyze", f"--out={out}")
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(out.read_text())
    c = report["comparisons"]["calibrated_loo"]
    assert c["mape"] < 1e-3 and c["spearman"] == pytest.approx(1.0)
    assert c["scale_all"] == pytest.approx(1 / 1.08, rel=1e-4)
    assert report["comparisons"]["measured_p90_over_p10_median"] == pytest.approx(1.2 / 0.9, rel=1e-4)
    (tmp_path / "bad.json").write_text("[]")
    r = run_module("benchmarks.latency_model", "--reanalyze", f"--out={tmp_path / 'bad.json'}")
    assert "not a latency_model result" in error_line(r, "benchmarks.latency_model"), r.stderr


def test_calibration_goes_into_the_lut_and_the_search_predictor(tmp_path):
    """``--reanalyze --calibrate`` writes the whole-model fit into the result's LUT; ``LatencyTable.calibrated()``
    (what ``recipes.search_spos --latency_table`` steers by) applies it, ``predict`` stays the raw sum of parts; a
    LUT timed again drops it; a broken calibration entry is a LatencyError."""
    from search import latency as lat
    from search.spos import arch_spec, cifar_space
    from workflows.search_spos import SearchSposConfig, load_latency
    space = cifar_space(width=0.25)
    spec = arch_spec(space, [(0, 0, 0)] * space.n_blocks)
    table = lat.LatencyTable({p.key: {"kind": p.kind, "macs": p.macs, "ms": 0.01} for p in lat.parts(spec)}, 0.002)
    lut = tmp_path / "lut.json"
    table.save(str(lut))
    raw = table.predict(spec)
    rng = np.random.default_rng(0)
    measured = rng.uniform(10, 40, 12)
    rows = [{"name": f"a{i}", "predicted_ms": 1.08 * m + 0.5, "measured_ms": m} for i, m in enumerate(measured)]
    out = tmp_path / "r.json"
    out.write_text(json.dumps({"archs": rows, "comparisons": {}, "n_archs": 12, "mape": 9.0, "bias_pct": 9.0,
                               "lut": {"path": str(lut), "entries": len(table)}}))
    r = run_module("benchmarks.latency_model", "--reanalyze", "--calibrate", f"--out={out}")
    assert r.returncode == 0, r.stderr[-2000:]
    loaded = lat.LatencyTable.load(str(lut))
    cal = loaded.calibration
    assert cal["scale"] == pytest.approx(1 / 1.08, rel=1e-4)
    assert cal["offset_ms"] == pytest.approx(-0.5 / 1.08, rel=1e-3)
    assert cal["archs"] == 12 and cal["loo_mape"] < 1e-3 and cal["raw_mape"] == 9.0
    assert json.loads(out.read_text())["lut"]["calibration"]["scale"] == pytest.approx(cal["scale"], rel=1e-4)
    assert loaded.predict(spec) == pytest.approx(raw)  # the parts' sum is unchanged
    assert loaded.calibrated().predict(spec) == pytest.approx(cal["scale"] * raw + cal["offset_ms"])
    searched = load_latency(SearchSposConfig(latency_table=str(lut)))
    assert searched.predict(spec) == pytest.approx(cal["scale"] * raw + cal["offset_ms"])
    assert lat.LatencyTable(table.entries).calibrated().predict(spec) == pytest.approx(table.predict(spec) - 0.002)
    obj = json.loads(lut.read_text())
    obj["calibration"]["scale"] = -1
    with pytest.raises(lat.LatencyError, match="calibration needs a finite scale > 0"):
        lat.LatencyTable.from_json(obj)
    # the LUT changed since the result was measured: refused, nothing written
    table.add("extra|x", "head", 10, [0.5], 0.0)
    table.save(str(lut))
    r = run_module("benchmarks.latency_model", "--reanalyze", "--calibrate", f"--out={out}")
    assert "time it again" in error_line(r, "benchmarks.latency_model"), r.stderr
