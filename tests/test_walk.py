"""The one walk over a spec (models.walk): widths, sizes, strides and feature endpoints, without TensorFlow.

Agreement with the built models' layer shapes is in test_builder.py; with the counts in test_counting.py."""
import dataclasses

import pytest
from conftest import tiny_spec_dict

import zoo
from models import spec as S
from models.walk import ENDPOINT_STRIDES, block_site, out_size, walk


def tiny(pool=False, **over):
    d = tiny_spec_dict()
    d["stem"]["pool"] = pool
    d.update(over)
    return S.decode(d)


def test_hand_checked_walk():
    w = walk(tiny())
    assert w.input_size == 32
    assert (w.stem.in_ch, w.stem.in_size, w.stem.out_ch, w.stem.conv_size, w.stem.out_size, w.stem.reduction) == \
        (3, 32, 8, 16, 16, 2)
    a, b = w.blocks
    assert (a.name, a.stage, a.index, a.in_ch, a.out_ch, a.in_size, a.out_size, a.stride, a.reduction) == \
        ("s0_b0", 0, 0, 8, 8, 16, 16, 1, 2)
    assert (b.name, b.in_ch, b.out_ch, b.in_size, b.out_size, b.stride, b.reduction) == ("s1_b0", 8, 16, 16, 8, 2, 4)
    assert a.kind == b.kind == "ir" and a.residual and not b.residual
    assert (w.head.in_ch, w.head.in_size, w.head.width) == (16, 8, 32)
    assert w.features == {2: "s0_b0", 4: "s1_b0"}
    with pytest.raises(S.SpecError, match=r"stride\(s\) \[8, 16, 32\]"):
        w.endpoints()
    assert [s.name for s in w.endpoints((2, 4))] == ["s0_b0", "s1_b0"]


def test_stem_pool_and_odd_sizes():
    w = walk(tiny(pool=True), 37)
    assert (w.stem.conv_size, w.stem.out_size, w.stem.reduction) == (19, 10, 4)
    assert [(s.in_size, s.out_size, s.reduction) for s in w.blocks] == [(10, 10, 4), (10, 5, 8)]
    assert w.features == {4: "s0_b0", 8: "s1_b0"} and (w.head.in_size, w.head.width) == (5, 32)


def test_no_head_conv_keeps_the_block_width():
    spec = tiny()
    w = walk(dataclasses.replace(spec, head=dataclasses.replace(spec.head, filters=None)))
    assert (w.head.in_ch, w.head.width) == (16, 16)


def test_walk_of_a_shuffle_spec():
    w = walk(zoo.get_spec("spos_shufflenetv2"))
    assert (w.stem.out_ch, w.stem.out_size, w.stem.reduction) == (16, 112, 2)
    assert {s.kind for s in w.blocks} == {"shuffle"} and not any(s.residual for s in w.blocks)
    firsts = [s for s in w.blocks if s.index == 0]
    assert [(s.in_ch, s.out_ch, s.stride, s.out_size) for s in firsts] == \
        [(16, 64, 2, 56), (64, 160, 2, 28), (160, 320, 2, 14), (320, 640, 2, 7)]
    assert w.features == {4: "s0_b3", 8: "s1_b3", 16: "s2_b7", 32: "s3_b3"}
    assert [s.name for s in w.endpoints()] == ["s1_b3", "s2_b7", "s3_b3"]
    assert (w.head.in_ch, w.head.in_size, w.head.width) == (640, 7, 1024)


@pytest.mark.parametrize("name", zoo.list_models())
@pytest.mark.parametrize("size", [64, 224, 225])
def test_zoo_walks_chain(name, size):
    spec = zoo.get_spec(name)
    w = walk(spec, size)
    assert [s.block for s in w.blocks] == [b for _, _, b in spec.blocks()]
    assert [s.name for s in w.blocks] == [f"s{i}_b{j}" for i, j, _ in spec.blocks()]
    ch, n, r = w.stem.out_ch, w.stem.out_size, w.stem.reduction
    for s in w.blocks:
        assert (s.in_ch, s.in_size) == (ch, n)
        assert s.out_ch == s.block.filters and s.stride == s.block.stride and s.reduction == r * s.stride
        assert s.out_size == out_size(n, s.stride) == out_size(size, s.reduction)  # ceil(ceil(n/a)/b) = ceil(n/ab)
        ch, n, r = s.out_ch, s.out_size, s.reduction
    assert (w.head.in_ch, w.head.in_size) == (ch, n)
    last = {s.reduction: s.name for s in w.blocks}
    assert w.features == last


def test_block_site_defaults_and_input_size_check():
    b = tiny().stages[1][0]
    s = block_site(b, 8, 15)
    assert (s.name, s.in_ch, s.out_ch, s.in_size, s.out_size, s.reduction) == ("s0_b0", 8, 16, 15, 8, 2)
    with pytest.raises(S.SpecError, match="input_size"):
        walk(tiny(), 4)
    assert ENDPOINT_STRIDES == (8, 16, 32)
