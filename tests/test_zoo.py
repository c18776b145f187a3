"""Zoo registry, CLI contract (DESIGN.md §4), verified weights, and the converted EfficientNet-Lite0."""
import json
import os
import shutil

import numpy as np
import pytest
from conftest import ROOT, error_line, run_module

import zoo
from models.weights import WeightsError, read_npz, sha256


def test_list_json():
    r = run_module("zoo", "list", "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert set(rows) == set(zoo.list_models())
    assert rows["efficientnet_lite0"]["weights"] == ["imagenet"]


def test_describe_mixnet_s_json():
    r = run_module("zoo", "describe", "mixnet_s", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    for key in ("name", "params", "macs", "input_size", "num_classes", "weights"):
        assert key in info
    assert info["params"] == 4_134_606 and info["input_size"] == 224 and info["num_classes"] == 1000
    small = json.loads(run_module("zoo", "describe", "mixnet_s", "--input-size", "112", "--json").stdout)
    assert small["params"] == info["params"] and small["macs"] < info["macs"] / 3


def test_describe_spec_path():
    r = run_module("zoo", "describe", os.path.join(ROOT, "zoo", "specs", "mnasnet_a1.json"), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["name"] == "mnasnet_a1"


@pytest.mark.parametrize("args, needle", [
    (("describe", "no_such_model"), "unknown model 'no_such_model'"),
    (("describe", "missing.json"), "spec file not found"),
    (("describe", "mixnet_s", "--input-size", "4"), "input size"),
    (("describe", "mixnet_s", "--input-size", "abc"), "invalid int"),
    (("frobnicate",), "invalid choice"),
])
def test_cli_bad_input_is_one_line_exit_2(args, needle):
    r = run_module("zoo", *args)
    assert needle in error_line(r, "zoo"), r.stderr
    assert r.stdout == ""


def test_cli_bad_spec_file(tmp_path):
    spec = json.load(open(os.path.join(ROOT, "zoo", "specs", "mixnet_s.json")))
    spec["stages"][2][0]["kernels"] = [3, 5, 6]
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(spec))
    r = run_module("zoo", "describe", str(path))
    assert "broken.json: stages[2][0].kernels[2]" in error_line(r, "zoo"), r.stderr
    path.write_text("{not json")
    r = run_module("zoo", "describe", str(path))
    assert "not valid JSON" in error_line(r, "zoo"), r.stderr


def test_every_card_is_complete_and_verified():
    for name in zoo.list_models():
        for tag, card in zoo.weights_cards(name).items():
            for key in ("model", "tag", "file", "sha256", "dataset", "metrics", "produced_by", "source"):
                assert card.get(key), (name, tag, key)
            assert sha256(zoo.weights_path(name, tag)) == card["sha256"]


def test_sha_mismatch_is_refused(tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    weights.mkdir()
    card = zoo.weights_cards("efficientnet_lite0")["imagenet"]
    shutil.copy(os.path.join(zoo.WEIGHTS_DIR, card["file"].replace(".npz", ".json")), weights)
    (weights / card["file"]).write_bytes(b"tampered")
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", str(weights))
    with pytest.raises(zoo.ZooError, match="fails its sha256 check"):
        zoo.build("efficientnet_lite0", weights="imagenet")
    with pytest.raises(zoo.ZooError, match="no weights 'nope'"):
        zoo.weights_path("efficientnet_lite0", "nope")


def test_weights_file_must_fit(tmp_path):
    from models.weights import load_npz
    model = zoo.build("mobilenet_v2_100", input_size=32, classes=10)
    with pytest.raises(WeightsError, match="has shape .* the model needs"):
        load_npz(model, zoo.weights_path("efficientnet_lite0", "imagenet"))


def test_lite0_imagenet_matches_pytorch_reference():
    """Logits of the converted weights vs logits of efficientnet-lite-pytorch==0.1.0 (stored by the converter)."""
    from tools.convert_efficientnet_lite0 import parity_inputs
    ref = np.load(os.path.join(ROOT, "tests", "data", "efficientnet_lite0_parity.npz"))
    model = zoo.build("efficientnet_lite0", weights="imagenet")
    got = model(parity_inputs(int(ref["seed"]), int(ref["n"])), training=False).numpy()
    assert np.abs(got - ref["logits"]).max() <= 1e-4
    assert (got.argmax(-1) == ref["logits"].argmax(-1)).all()


def test_lite0_backbone_and_new_classes():
    with pytest.raises(Exception, match="include_top=False"):
        zoo.build("efficientnet_lite0", weights="imagenet", classes=10)
    feats = zoo.build("efficientnet_lite0", weights="imagenet", features=True, input_size=64)
    assert len(feats.outputs) == 3
    full = read_npz(zoo.weights_path("efficientnet_lite0", "imagenet"))
    np.testing.assert_array_equal(feats.get_layer("stem_conv").kernel.numpy(), full["stem_conv/kernel"])


def test_imagenet_labels():
    labels = zoo.imagenet_labels()
    assert len(labels) == 1000 and labels[0].startswith("tench") and labels[999].startswith("toilet tissue")


def _damaged_archives(tmp_path):
    """One file per way a weights path can be wrong: each must raise WeightsError naming the file."""
    good = tmp_path / "good.npz"
    np.savez(good, **{"stem_conv/kernel": np.ones((3, 3, 3, 8), np.float32)})
    data = good.read_bytes()
    cases = {
        "random_bytes": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "truncated_half": data[: len(data) // 2],
        "truncated_tail": data[:-10],
        "flipped_payload": data[:200] + bytes(b ^ 0xFF for b in data[200:260]) + data[260:],
        "empty": b"",
        "text": b"not weights\n",
    }
    paths = {}
    for name, blob in cases.items():
        p = tmp_path / f"{name}.npz"
        p.write_bytes(blob)
        paths[name] = p
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, obj=np.array([{"a": 1}], dtype=object))
    paths["pickled"] = pickled
    paths["missing"] = tmp_path / "missing.npz"
    return paths


def test_damaged_weights_files_raise_weights_error(tmp_path):
    for name, path in _damaged_archives(tmp_path).items():
        with pytest.raises(WeightsError) as e:
            read_npz(str(path))
        assert str(path) in str(e.value), (name, str(e.value))
        assert "allow_pickle" not in str(e.value) and "unsafe" not in str(e.value), name  # never invite pickles
    with pytest.raises(WeightsError, match="pickled Python objects"):
        read_npz(str(tmp_path / "pickled.npz"))


def test_weights_that_are_not_finite_numbers_are_refused(tmp_path):
    """A diverged training's NaN/inf, string arrays and a directory are WeightsError naming the file and key."""
    cases = {"nan": np.array([1.0, np.nan], np.float32), "inf": np.full((2, 2), np.inf, np.float32),
             "text": np.array(["a", "b"])}
    for name, array in cases.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, **{"stem_conv/kernel": array})
        with pytest.raises(WeightsError, match=r"stem_conv/kernel.*(NaN/inf|not numbers)") as e:
            read_npz(str(path))
        assert str(path) in str(e.value)
    with pytest.raises(WeightsError, match="is a directory"):
        read_npz(str(tmp_path))
    with pytest.raises(WeightsError, match="NaN/inf"):
        zoo.build("mobilenet_v2_100", weights=str(tmp_path / "nan.npz"), input_size=32, classes=10)
    # float64 and integer arrays are numbers (assign casts them to the variable's dtype)
    np.savez(tmp_path / "ok.npz", **{"a/kernel": np.zeros(3, np.float64), "b/count": np.arange(3)})
    assert set(read_npz(str(tmp_path / "ok.npz"))) == {"a/kernel", "b/count"}


def test_damaged_weights_are_refused_by_zoo_build(tmp_path):
    path = _damaged_archives(tmp_path)["truncated_half"]
    with pytest.raises(WeightsError, match="truncated_half.npz"):
        zoo.build("mobilenet_v2_100", weights=str(path), input_size=32, classes=10)


def test_model_card_beside_weights_is_checked(tmp_path):
    path = tmp_path / "weights.npz"
    np.savez(path, **{"a/kernel": np.zeros(3, np.float32)})
    card = {"file": "weights.npz", "sha256": sha256(str(path))}
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    assert set(read_npz(str(path))) == {"a/kernel"}
    np.savez(path, **{"a/kernel": np.ones(3, np.float32)})  # replaced after the card was written
    with pytest.raises(WeightsError, match="differs from the .* model card"):
        read_npz(str(path))
    (tmp_path / "model_card.json").write_text(json.dumps({**card, "file": "other.npz"}))  # names another file
    assert set(read_npz(str(path))) == {"a/kernel"}


def test_card_with_a_non_string_sha_is_ignored_and_bom_specs_load(tmp_path):
    path = tmp_path / "weights.npz"
    np.savez(path, **{"a/kernel": np.zeros(3, np.float32)})
    (tmp_path / "model_card.json").write_text(json.dumps({"file": "weights.npz", "sha256": 12}))
    assert set(read_npz(str(path))) == {"a/kernel"}
    from models import spec as S
    text = open(os.path.join(ROOT, "zoo", "specs", "mixnet_s.json"), "rb").read()
    assert S.loads(b"\xef\xbb\xbf" + text).name == "mixnet_s"


def test_spec_paths_that_are_not_spec_files_say_what_they_are(tmp_path):
    """A directory, a weights archive or a .tflite given as a spec: one message naming the file once and what it is."""
    import pathlib

    from models.spec import SpecError
    with pytest.raises(zoo.ZooError, match="is a directory, not a spec .json file"):
        zoo.get_spec(str(tmp_path))
    np.savez(tmp_path / "w.npz", a=np.zeros(2, np.float32))
    with pytest.raises(SpecError, match=r"not a spec JSON \(it is a zip archive") as e:
        zoo.get_spec(str(tmp_path / "w.npz"))
    assert str(e.value).count(str(tmp_path / "w.npz")) == 1, str(e.value)
    (tmp_path / "m.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(range(128, 256)))
    with pytest.raises(SpecError, match=r"it is a .tflite model"):
        zoo.get_spec(str(tmp_path / "m.tflite"))
    with pytest.raises(zoo.ZooError, match="a zoo name or a spec .json path, got 123"):
        zoo.get_spec(123)
    assert zoo.get_spec(pathlib.Path(zoo.spec_path("mixnet_s"))).name == "mixnet_s"  # os.PathLike works


def test_build_refuses_argument_types_with_one_spec_error():
    """The Python API's size, shape and module arguments: a SpecError naming the argument, never a Keras error."""
    from models.spec import SpecError
    cases = ((dict(input_size=32.0), "must be an integer"), (dict(input_size="32"), "must be an integer"),
             (dict(input_size=10**12), "from 8 to 4096"), (dict(keras_module="tf_keras"), "not the string"),
             (dict(input_shape=(None, None, 3)), "input_shape"))
    for kwargs, needle in cases:
        with pytest.raises(SpecError, match=needle):
            zoo.build("mixnet_s", **kwargs)
    with pytest.raises(SpecError, match="must be an integer"):
        zoo.describe("mixnet_s", input_size="64")
    assert zoo.build("mixnet_s", input_size=np.int64(32), classes=10).input_shape == (None, 32, 32, 3)
    # stop 28 sweep: the spec itself, the module, the name, numpy integers (converted, never overflowing)
    from models import spec as S
    from models.builder import build
    from models.counting import count
    for bad, needle in (("mixnet_s", "must be a ModelSpec"), (S.encode(zoo.get_spec("mixnet_s")), "ModelSpec")):
        with pytest.raises(SpecError, match=needle):
            build(bad)
    with pytest.raises(SpecError, match="keras_module: must be keras or tf_keras"):
        zoo.build("mixnet_s", keras_module=np)
    for name in ("a/b", 5, ""):
        with pytest.raises(SpecError, match="name: must be a non-empty string without '/'"):
            zoo.build("mixnet_s", name=name)
    for text in (None, 5):
        with pytest.raises(SpecError, match="a spec is JSON text"):
            S.loads(text)
    # stop 32 sweep: switches that are not booleans (a truthy "no" used to build with the top), encode of a non-spec
    for kwargs, needle in ((dict(include_top="no"), "include_top: must be True or False"),
                           (dict(features=1), "features: must be True or False"),
                           (dict(include_preprocessing="yes"), "include_preprocessing: must be True, False or 'fold'")):
        with pytest.raises(SpecError, match=needle):
            zoo.build("mixnet_s", **kwargs)
    for bad in ("x", {"name": "x"}, None):
        with pytest.raises(SpecError, match="encode takes a ModelSpec"):
            S.encode(bad)
    lite0 = zoo.get_spec("efficientnet_lite0")
    d = zoo.describe("efficientnet_lite0", input_size=np.int32(1024))
    assert d["macs"] == count(lite0, 1024).macs > 8e9 and type(d["input_size"]) is int  # no int32 wrap-around
    assert count(lite0, np.uint8(32)).macs == count(lite0, 32).macs
    shape = (np.int64(32), np.int64(32), np.int64(3))
    assert zoo.build("mixnet_s", input_shape=shape, classes=10).input_shape == (None, 32, 32, 3)
    import json
    json.dumps(zoo.describe("mixnet_s", input_size=np.int64(64)))


def test_spec_with_a_duplicate_key_is_refused(tmp_path):
    """JSON keeps the last of two equal keys silently; a spec names the duplicate instead."""
    from models.spec import SpecError
    with open(zoo.spec_path("mixnet_s")) as f:
        text = f.read()
    path = tmp_path / "dup.json"
    path.write_text(text.replace('"name": "mixnet_s"', '"name": "mixnet_s", "name": "other"', 1))
    with pytest.raises(SpecError, match="key 'name' appears twice"):
        zoo.get_spec(str(path))


def test_build_reads_weights_arguments_as_the_command_line_does(tmp_path):
    """'' is random init, a path without the .npz suffix or a pathlib.Path is a file, as with --weights."""
    import pathlib

    from models.weights import save_npz
    model = zoo.build("mixnet_s", input_size=32, classes=10)
    save_npz(model, str(tmp_path / "w.npz"))
    os.rename(tmp_path / "w.npz", tmp_path / "w_noext")
    for weights in ("", str(tmp_path / "w_noext"), pathlib.Path(tmp_path / "w_noext")):
        zoo.build("mixnet_s", weights=weights, input_size=32, classes=10)
    with pytest.raises(zoo.ZooError, match="a zoo tag or a .npz path, got 3"):
        zoo.build("mixnet_s", weights=3)
