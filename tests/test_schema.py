"""zoo/spec.schema.json: a valid draft 2020-12 schema that accepts every zoo spec and rejects what the decoder
rejects."""
import copy
import json
import os

import pytest
from jsonschema import Draft202012Validator

import zoo
from models import spec as S

SCHEMA_PATH = os.path.join(zoo.ZOO_DIR, "spec.schema.json")


@pytest.fixture(scope="module")
def validator():
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        schema = json.load(f)
    return Draft202012Validator(schema)


def raw(name):
    with open(zoo.spec_path(name), encoding="utf-8") as f:
        return json.load(f)


def errors(validator, obj):
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


def test_schema_is_valid_draft_2020_12(validator):
    Draft202012Validator.check_schema(validator.schema)
    assert validator.schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert validator.schema["$id"] == "https://github.com/nas-zoo/zoo/spec.schema.json"
    assert validator.schema["title"] and "models.spec.decode" in validator.schema["description"]


@pytest.mark.parametrize("name", zoo.list_models())
def test_zoo_specs_and_their_canonical_form_validate(validator, name):
    assert errors(validator, raw(name)) == []
    assert errors(validator, S.encode(zoo.get_spec(name))) == []


def test_schema_top_level_keys_match_the_decoder(validator):
    fields = {f.name for f in S.dataclasses.fields(S.ModelSpec)}
    assert set(validator.schema["properties"]) == fields
    assert set(validator.schema["$defs"]["provenance"]["properties"]) == \
        {f.name for f in S.dataclasses.fields(S.Provenance)}
    assert validator.schema["properties"]["family"]["enum"] == list(S.FAMILIES)
    assert validator.schema["properties"]["padding"]["enum"] == list(S.PADDINGS)
    assert validator.schema["$defs"]["activation"]["enum"] == list(S.ACTIVATIONS)
    assert validator.schema["$defs"]["branch_activation"]["enum"] == list(S.BRANCH_ACTIVATIONS)
    assert validator.schema["$defs"]["conv_block"]["properties"]["pool"]["oneOf"][1]["enum"] == list(S.POOLS)
    assert validator.schema["$defs"]["shuffle_block"]["properties"]["choice"]["enum"] == list(S.SHUFFLE_CHOICES)
    assert validator.schema["properties"]["name"]["pattern"] == S.NAME_RE.pattern


# An "ir" spec (mobilenet_v2_100: stages[1][0] expands 16 -> 96 -> 24) and a "shuffle" spec.
IR, SH = "mobilenet_v2_100", "spos_shufflenetv2"


def _set(path, value):
    def f(d):
        *head, last = path
        for k in head:
            d = d[k]
        d[last] = value
    return f


def _del(path):
    def f(d):
        *head, last = path
        for k in head:
            d = d[k]
        del d[last]
    return f


INVALID = [
    ("unknown key in ir block", IR, _set(("stages", 1, 0, "expansion"), 6)),
    ("unknown key in shuffle block", SH, _set(("stages", 0, 0, "kernel"), 3)),
    ("unknown top-level key", IR, _set(("version",), 1)),
    ("unknown key in head", IR, _set(("head", "pool"), "avg")),
    ("even block kernel", IR, _set(("stages", 1, 0, "kernels"), [4])),
    ("even stem kernel", IR, _set(("stem", "kernel"), 2)),
    ("kernel over 31", IR, _set(("stages", 1, 0, "kernels"), [33])),
    ("repeated kernels", IR, _set(("stages", 1, 0, "kernels"), [3, 3])),
    ("stride 3 in ir block", IR, _set(("stages", 1, 0, "stride"), 3)),
    ("stride 3 in shuffle block", SH, _set(("stages", 1, 0, "stride"), 3)),
    ("stride 0 in stem", IR, _set(("stem", "stride"), 0)),
    ("unknown block kind", IR, _set(("stages", 1, 0, "block"), "mbconv")),
    ("shuffle kind on ir fields", IR, _set(("stages", 1, 0, "block"), "shuffle")),
    ("missing block kind", IR, _del(("stages", 1, 0, "block"))),
    ("missing filters in ir block", IR, _del(("stages", 1, 0, "filters"))),
    ("missing filters in shuffle block", SH, _del(("stages", 0, 0, "filters"))),
    ("missing head filters", IR, _del(("head", "filters"))),
    ("missing stem filters", IR, _del(("stem", "filters"))),
    ("string filters", IR, _set(("stages", 1, 0, "filters"), "24")),
    ("string classes", IR, _set(("head", "classes"), "1000")),
    ("string input size", IR, _set(("input", "size"), "224")),
    ("bool for int", IR, _set(("stages", 1, 0, "expand_channels"), True)),
    ("std 0", IR, _set(("input", "std"), [128.0, 0, 128.0])),
    ("std negative", IR, _set(("input", "std"), [128.0, -1.0, 128.0])),
    ("std below float32 range", IR, _set(("input", "std"), [128.0, 1e-300, 128.0])),  # 1/std overflows float32
    ("mean beyond float32 range", IR, _set(("input", "mean"), [1e308, 0.0, 0.0])),
    ("border white", IR, _set(("input", "border"), "white")),
    ("dropout 1", IR, _set(("head", "dropout"), 1.0)),
    ("bits 9", IR, _set(("stages", 1, 0, "bits"), {"w": 9, "a": 8})),
    ("bits missing a", IR, _set(("stages", 1, 0, "bits"), {"w": 4})),
    ("bad shuffle choice", SH, _set(("stages", 0, 0, "choice"), "9")),
    ("bad activation", IR, _set(("stem", "act"), "gelu")),
    ("bad padding", IR, _set(("padding",), "valid")),
    ("bad family", IR, _set(("family",), "resnet")),
    ("bad name", IR, _set(("name",), "MobileNet")),
    ("name ending in a newline", IR, _set(("name",), "mobilenet\n")),
    ("schema_version 2", IR, _set(("schema_version",), 2)),
    ("empty stage", IR, _set(("stages", 1), [])),
    ("bn eps 0", IR, _set(("bn",), {"eps": 0})),
    ("null provenance method", IR, _set(("provenance", "method"), None)),
    ("string metric", IR, _set(("provenance", "metrics"), {"top1": "0.72"})),
    ("null metrics", IR, _set(("provenance", "metrics"), None)),
    ("several kernels without split", IR, lambda d: (d["stages"][1][0].update(kernels=[3, 5]),
                                                    d["stages"][1][0].pop("split"))),
    ("no expansion with several kernels", IR, _set(("stages", 0, 0, "kernels"), [3, 5])),
    ("repeated kernels in a conv block", IR, _set(("stages", 1, 0), {
        "block": "conv", "kernels": [3, 3], "split": [12, 12], "filters": 24, "stride": 2, "act": "relu"})),
    ("conv block pool 'min'", IR, _set(("stages", 1, 0), {
        "block": "conv", "kernels": [3], "filters": 24, "stride": 2, "act": "relu", "pool": "min"})),
    ("conv block with expand_channels", IR, _set(("stages", 1, 0), {
        "block": "conv", "kernels": [3], "filters": 24, "stride": 2, "act": "relu", "expand_channels": 24})),
    ("unknown branch activation", IR, _set(("stages", 1, 0, "acts"), ["gelu"])),
    ("tanh as an ir block's act", IR, _set(("stages", 1, 0, "act"), "tanh")),
    ("string depthwise stem flag", IR, _set(("stem", "depthwise"), "yes")),
]


@pytest.mark.parametrize("what,name,mutate", INVALID, ids=[w for w, _, _ in INVALID])
def test_invalid_mutations_are_rejected_by_schema_and_decoder(validator, what, name, mutate):
    d = copy.deepcopy(raw(name))
    mutate(d)
    assert errors(validator, d), f"schema accepted: {what}"
    with pytest.raises(S.SpecError):
        S.decode(d)


VALID = [
    ("bits on ir block", IR, _set(("stages", 1, 0, "bits"), {"w": 4, "a": 8})),
    ("bits on shuffle block", SH, _set(("stages", 0, 0, "bits"), {"w": 1, "a": 8})),
    ("no head conv", IR, _set(("head", "filters"), None)),
    ("provenance with metrics", IR, _set(("provenance",), {"method": "spos", "source": None, "target": 3.3e8,
                                                           "seed": 0, "metrics": {"top1": 0.72, "flops": 3e8}})),
    ("minimal provenance", IR, _set(("provenance",), {"method": "reference"})),
    ("defaults omitted", IR, lambda d: [d.pop(k) for k in ("bn", "padding", "provenance")]),
    ("optional block keys omitted", IR, lambda d: [d["stages"][1][0].pop(k) for k in
                                                   ("split", "se_channels", "expand_groups", "project_groups",
                                                    "skip", "bits")]),
    ("empty bn", IR, _set(("bn",), {})),
    ("conv block", IR, _set(("stages", 1, 0), {
        "block": "conv", "kernels": [3, 3, 5], "split": [8, 8, 8], "acts": ["relu", "prelu", "tanh"], "filters": 24,
        "stride": 2, "act": "relu", "pool": "avg"})),
    ("minimal conv block", IR, _set(("stages", 1, 0), {
        "block": "conv", "kernels": [3], "filters": 24, "stride": 1, "act": "prelu"})),
    ("per-branch activations in an ir block", IR, _set(("stages", 1, 0, "acts"), ["tanh"])),
    ("depthwise stem", IR, lambda d: (d["stem"].update(filters=33, kernel=11, depthwise=True),
                                      d["stages"][0][0].update(split=[33]))),
    ("a repeated kernel told apart by acts", IR, lambda d: d["stages"][1][0].update(
        kernels=[3, 3], split=[48, 48], acts=["relu6", "prelu"])),
]


@pytest.mark.parametrize("what,name,mutate", VALID, ids=[w for w, _, _ in VALID])
def test_valid_variants_are_accepted_by_schema_and_decoder(validator, what, name, mutate):
    d = copy.deepcopy(raw(name))
    mutate(d)
    S.decode(d)
    assert errors(validator, d) == []
