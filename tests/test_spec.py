"""Spec decode/encode: strictness, error paths, round trips, and a hypothesis fuzz test of the decoder."""
import copy
import json
import os

import pytest
from conftest import ROOT
from conftest import tiny_spec_dict as tiny
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zoo
from models import spec as S


@pytest.mark.parametrize("name", zoo.list_models())
def test_zoo_spec_round_trip(name):
    spec = zoo.get_spec(name)
    assert spec.name == name
    assert S.decode(S.encode(spec)) == spec
    assert S.encode(S.decode(json.loads(S.dumps(spec)))) == S.encode(spec)


def test_defaults_are_filled_and_encoded():
    spec = S.decode(tiny())
    enc = S.encode(spec)
    assert enc["stages"][0][0]["split"] == [8]
    assert enc["stages"][1][0]["skip"] is True and enc["padding"] == "same"
    assert S.decode(enc) == spec


@pytest.mark.parametrize("mutate, path", [
    (lambda d: d["stages"][1][0].update(kernels=[3, 4]), "stages[1][0].kernels[1]"),
    (lambda d: d["stages"][1][0].update(split=[8, 9]), "stages[1][0].split"),
    (lambda d: d["stages"][1][0].update(split=[16]), "stages[1][0].split"),
    (lambda d: d["stages"][1][0].update(colour="red"), "stages[1][0].colour"),
    (lambda d: d["stages"][1][0].update(act="gelu"), "stages[1][0].act"),
    (lambda d: d["stages"][1][0].update(stride=3), "stages[1][0].stride"),
    (lambda d: d["stages"][1][0].update(filters=True), "stages[1][0].filters"),
    (lambda d: d["stages"][1][0].update(expand_groups=3), "stages[1][0].expand_groups"),
    (lambda d: d["stages"][0][0].update(kernels=[3, 5], split=[4, 4]), "stages[0][0].kernels"),
    (lambda d: d["stages"][1][0].pop("filters"), "stages[1][0].filters"),
    (lambda d: d["stages"][1].append({"block": "shuffle", "choice": "9", "filters": 16, "mid_channels": 8,
                                      "stride": 1}), "stages[1][1].choice"),
    (lambda d: d["stages"][1].append({"block": "shuffle", "choice": "3", "filters": 12, "mid_channels": 8,
                                      "stride": 1}), "stages[1][1].filters"),
    (lambda d: d["stages"][1].append({"block": "dense"}), "stages[1][1].block"),
    (lambda d: d.update(schema_version=2), "schema_version"),
    (lambda d: d["input"].update(std=[1, 0, 1]), "input.std[1]"),
    (lambda d: d["input"].update(mean=[0, 0]), "input.mean"),
    (lambda d: d["head"].update(dropout=1.5), "head.dropout"),
    (lambda d: d.update(stages=[]), "stages"),
    (lambda d: d.update(name="Bad Name"), "name"),
    (lambda d: d["input"].update(size=4), "input.size"),
])
def test_errors_name_the_path(mutate, path):
    d = tiny()
    mutate(d)
    with pytest.raises(S.SpecError) as e:
        S.decode(d)
    assert e.value.path == path, str(e.value)
    assert "\n" not in str(e.value)


def test_loads_reports_json_syntax():
    with pytest.raises(S.SpecError, match="not valid JSON"):
        S.loads("{", source="x.json")


@pytest.mark.parametrize("text,needle", [
    (b'{"name": "caf\xe9"}', "not UTF-8"),
    ("[" * 100_000 + "]" * 100_000, "nested too deep"),
    ('{"schema_version": ' + "9" * 5000 + "}", "not valid JSON"),
])
def test_loads_refuses_any_bytes_with_spec_error(text, needle):
    with pytest.raises(S.SpecError, match=needle):
        S.loads(text, source="x.json")


@pytest.mark.parametrize("where,value", [
    (("stem", "filters"), 10 ** 30), (("head", "classes"), 10 ** 6), (("head", "filters"), 70000),
])
def test_widths_and_classes_have_upper_bounds(where, value):
    """A 30-digit width used to decode and then fail in counting or building with a non-SpecError."""
    d = json.loads(open(os.path.join(ROOT, "zoo", "specs", "mixnet_s.json")).read())
    d[where[0]][where[1]] = value
    with pytest.raises(S.SpecError, match=f"^{where[0]}.{where[1]}: must be <="):
        S.decode(d)


@pytest.mark.parametrize("name", ["mixnet\n", "a" * 101, "Upper", "-dash", ""])
def test_bad_names_are_refused(name):
    d = json.loads(open(os.path.join(ROOT, "zoo", "specs", "mixnet_s.json")).read())
    d["name"] = name
    with pytest.raises(S.SpecError, match="^name"):
        S.decode(d)


def test_byte_level_fuzz_of_spec_files_gives_only_spec_errors(tmp_path):
    """1,000 byte-mutated copies of a zoo spec file (flips, deletions, cuts, inserted long digit runs, deep
    brackets, invalid UTF-8): zoo.get_spec raises SpecError or returns a spec, nothing else."""
    import random

    src = open(os.path.join(ROOT, "zoo", "specs", "mixnet_s.json"), "rb").read()
    rng = random.Random(0)
    inserts = [b"9" * 5000, b"[" * 3000, b"\xff\xfe", b"-", b"1e999", b"null", b"\n", b'"x\n"']
    path = tmp_path / "fuzz.json"
    outcomes = {"spec": 0, "error": 0}
    for _ in range(1000):
        b = bytearray(src)
        for _ in range(rng.randint(1, 4)):
            op, pos = rng.random(), rng.randrange(len(b))
            if op < 0.4:
                b[pos] = rng.randrange(256)
            elif op < 0.6:
                del b[pos:pos + rng.randint(1, 20)]
            elif op < 0.8:
                b[pos:pos] = rng.choice(inserts)
            else:
                b = b[:pos]
        path.write_bytes(bytes(b))
        try:
            zoo.get_spec(str(path))
            outcomes["spec"] += 1
        except S.SpecError as e:
            assert str(path) in str(e)
            outcomes["error"] += 1
    assert outcomes["error"] > 500, outcomes


def test_make_divisible():
    from search import make_divisible
    assert make_divisible(32 * 0.75) == 24
    assert make_divisible(10) == 16  # never below 90% of the value
    assert make_divisible(3, min_value=8) == 8
    assert all(make_divisible(v) % 8 == 0 for v in range(1, 500))


# --- fuzz: random mutations either decode (and then build) or raise SpecError, never anything else -----------------

_values = st.one_of(st.none(), st.booleans(), st.integers(-3, 70), st.floats(-2, 300, allow_nan=True),
                    st.text(max_size=4), st.sampled_from(["relu", "swish", "ir", "shuffle", "x", "3", "same"]),
                    st.lists(st.integers(-1, 12), max_size=4), st.just({}), st.just([[]]))


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _mutate(d, path, op, value):
    if not path:
        return value if op == "replace" else d
    parent = d
    for p in path[:-1]:
        parent = parent[p]
    key = path[-1]
    if op == "delete":
        del parent[key]
    elif op == "replace":
        parent[key] = value
    elif isinstance(parent, dict):
        parent["extra_" + str(key)] = value
    else:
        parent.append(value)
    return d


def _tiny_shuffle():
    d = tiny(family="shufflenet")
    d["stages"] = [[{"block": "shuffle", "choice": "x", "filters": 16, "mid_channels": 8, "stride": 2},
                    {"block": "shuffle", "choice": "5", "filters": 16, "mid_channels": 6, "stride": 1}]]
    return d


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_decoder(data):
    from models.builder import build
    base = data.draw(st.sampled_from([tiny(), _tiny_shuffle()]))
    d = copy.deepcopy(base)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = list(_paths(d))
        path = data.draw(st.sampled_from(paths))
        op = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if op == "delete" and (not path or isinstance(path[-1], int)):
            op = "replace"
        try:
            d = _mutate(d, path, op, data.draw(_values))
        except (KeyError, IndexError, TypeError):
            pass
    try:
        spec = S.decode(d)
    except S.SpecError:
        return
    build(spec)  # a spec that decodes must build
