"""export.mixed_precision: int8 / int16×8 / float per part of one LiteRT model, and export_tflite --mode=mixed."""
import json

import numpy as np
import pytest
from conftest import error_line, randomized_weights, run_module

from search import spos as sp

# a small SPOS network (the shuffle blocks: splits, concatenations, channel shuffles) at 32×32
SPACE = sp.cifar_space(0.25, (1, 1, 1, 1), channel_ratios=(1.0,), bits=((8, 8), (8, 16), (32, 32)))
ARCH = np.array([[0, 0, 0], [3, 0, 1], [1, 0, 2], [2, 0, 0]], np.int32)  # int8, int16x8, float, int8


@pytest.fixture(scope="module")
def converted():
    """(spec, model, calibration/check images, {precision: flatbuffer})."""
    from export import mixed_precision as mp
    from models.builder import build
    from models.weights import assign
    spec = sp.arch_spec(SPACE, ARCH, name="mixed_test")
    model = build(spec)
    assign(model, randomized_weights(model))
    x = np.random.default_rng(0).uniform(0, 255, (12, 32, 32, 3)).astype(np.float32)
    return spec, model, x, mp.conversions(model, lambda: ([xi[None]] for xi in x[:8]))


def run_tflite(buf, x):
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_content=buf)
    it.allocate_tensors()
    out = []
    for xi in x:
        it.set_tensor(it.get_input_details()[0]["index"], xi[None])
        it.invoke()
        out.append(it.get_tensor(it.get_output_details()[0]["index"]).copy())
    return np.concatenate(out), it


def test_precision_of_and_spec_plan():
    from export import mixed_precision as mp
    from models.spec import BitsSpec
    assert [mp.precision_of(b) for b in (None, (8, 8), (4, 2), (8, 16), (2, 16), (32, 32), (32, 8), (8, 32))] == [
        "int8", "int8", "int8", "int16x8", "int16x8", "float", "float", "float"]
    assert mp.precision_of(BitsSpec(8, 16)) == "int16x8" and mp.precision_of(None, "float") == "float"
    plan = mp.spec_plan(sp.arch_spec(SPACE, ARCH))
    assert plan == {"stem": "int8", "s0_b0": "int8", "s1_b0": "int16x8", "s2_b0": "float", "s3_b0": "int8",
                    "head": "int8"}
    assert mp.spec_plan(sp.arch_spec(SPACE, ARCH), "float")["head"] == "float"
    with pytest.raises(mp.MixedPrecisionError, match="default precision"):
        mp.spec_plan(sp.arch_spec(SPACE, ARCH), "int4")


def test_spec_bits_accept_the_deployable_widths_only():
    from models import spec as S
    text = json.loads(S.dumps(sp.arch_spec(SPACE, ARCH)))
    assert text["stages"][1][0]["bits"] == {"w": 8, "a": 16} and text["stages"][2][0]["bits"] == {"w": 32, "a": 32}
    assert S.loads(json.dumps(text)) == sp.arch_spec(SPACE, ARCH)
    for w, a, where in ((9, 8, "bits.w"), (16, 8, "bits.w"), (8, 12, "bits.a"), (8, 64, "bits.a")):
        text["stages"][0][0]["bits"] = {"w": w, "a": a}
        with pytest.raises(S.SpecError, match=where.replace(".", r"\.")):
            S.loads(json.dumps(text))


@pytest.mark.slow
def test_one_precision_everywhere_reproduces_that_conversion(converted):
    """The splice takes each operator and its input tensors from its precision's conversion: a plan of one
    precision is that conversion, bit for bit."""
    from export import mixed_precision as mp
    spec, _, x, bufs = converted
    names = list(mp.spec_plan(spec))
    for p in mp.PRECISIONS:
        buf, report = mp.splice(bufs, names, {n: p for n in names})
        assert report["inserted"] == {"QUANTIZE": 0, "DEQUANTIZE": 0}
        np.testing.assert_array_equal(run_tflite(buf, x)[0], run_tflite(bufs[p], x)[0])


@pytest.mark.slow
def test_mixed_plan_runs_each_part_at_its_precision(converted):
    from export import mixed_precision as mp
    spec, model, x, bufs = converted
    plan = mp.spec_plan(spec)
    buf, report = mp.splice(bufs, list(plan), plan)
    y, it = run_tflite(buf, x)
    ref = model.predict(x, verbose=0)
    err8 = np.abs(run_tflite(bufs["int8"], x)[0] - ref).max()
    assert np.abs(y - ref).max() <= 2 * err8 + 1e-6  # as close to float as int8 everywhere, or closer
    # the int16x8 block's convolutions read int16, the float block's float32, the rest int8
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    by_part = {}
    for op in it._get_ops_details():
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            name = tensors[op["outputs"][0]]["name"]
            part = next((p for p in plan if f"/{p}_" in name or f"{p}_" in name.split("/")[-1]), None)
            by_part.setdefault(part, set()).add(tensors[op["inputs"][0]]["dtype"].__name__)
    assert by_part["s0_b0"] == {"int8"} and by_part["s1_b0"] == {"int16"} and by_part["s2_b0"] == {"float32"}
    assert report["inserted"]["QUANTIZE"] >= 2 and report["inserted"]["DEQUANTIZE"] >= 1
    assert report["precision_operators"]["int16x8"] > 0 and report["precision_operators"]["float"] > 0
    with pytest.raises(mp.MixedPrecisionError, match="plan"):
        mp.splice(bufs, list(plan), {**plan, "s1_b0": "int4"})


@pytest.mark.slow
def test_export_recipe_mode_mixed(converted, tmp_path):
    from models import spec as S
    from models.weights import save_npz
    spec, model, _, _ = converted
    (tmp_path / "m.json").write_text(S.dumps(spec))
    save_npz(model, str(tmp_path / "m.npz"))
    out = tmp_path / "m.tflite"
    r = run_module("recipes.export_tflite", f"--model={tmp_path / 'm.json'}", f"--weights={tmp_path / 'm.npz'}",
                   "--mode=mixed", f"--output={out}", "--check_examples=16", "--representative_steps=8")
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "m.tflite.json").read_text())
    assert report["mode"] == "mixed" and report["mixed_precision"]["plan"]["s1_b0"] == "int16x8"
    assert report["parity"]["top1_agreement"] >= 0.9 and "s2_b0: float" in r.stdout
    r = run_module("recipes.export_tflite", f"--model={tmp_path / 'm.json'}", f"--weights={tmp_path / 'm.npz'}",
                   "--mode=mixed", "--preprocessing=layer", f"--output={tmp_path / 'n.tflite'}")
    assert "--mode=mixed splits the network" in error_line(r, "recipes.export_tflite")


@pytest.mark.parametrize("args, needle", [
    # one input mean folds into a PADV2 the splice cannot quantize: refused before any work, not a broken file
    (["--model=metakernel_cifar10_3m", "--weights=cifar10", "--mode=mixed"], "cannot quantize"),
    (["--model=metakernel_cifar10_3m", "--weights=cifar10", "--mode=float16", "--mixed_default=int16x8"],
     "--mixed_default=int16x8 needs --mode=mixed"),
    (["--model=metakernel_cifar10_3m", "--weights=cifar10", "--mode=float16", "--mixed_default=int8"],
     "--mixed_default=int8 needs --mode=mixed"),  # given, even at the mixed default, outside mixed mode
])
def test_export_mixed_refuses_what_it_cannot_deploy(args, needle, tmp_path):
    r = run_module("recipes.export_tflite", *args, f"--out_dir={tmp_path / 'o'}", timeout=120)
    assert needle in error_line(r, "recipes.export_tflite"), r.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
