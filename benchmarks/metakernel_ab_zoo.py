"""Publication of ``benchmarks.metakernel_ab``'s searched models: which distilled copy ships, and the zoo files with
their model cards (spec, ``<name>-lite0_distilled.npz``, card), re-scored through ``zoo``."""
from __future__ import annotations

import json
import os

from benchmarks.harness import StageTimes, round_floats
from benchmarks.metakernel_ab import ABLATION, KINDS, TAG, TEACHER, _load, _paths, eval_args, search_args, train_args


def pick_published(a, name: str, result: dict) -> tuple[str, str] | None:
    """Which distilled copy of the searched architecture ``name`` ships: of the runs evaluated, timed and with their
    weights in this work directory — the one from Lite0's weights and (``--init_ablation``) the one from the
    supernet's — the lower final training distillation loss (``model_card.json``; never the evaluation images).
    Returns (model, why) or None."""
    found = []
    for model in (name, f"{ABLATION}_{name}"):
        row, p = result["models"].get(model, {}), _paths(a, model)
        card = os.path.join(p["train"], "model_card.json")
        if "top1" in row and "latency_ms" in row and os.path.exists(os.path.join(p["train"], "weights.npz")) \
                and os.path.exists(card):
            found.append((_load(card)["metrics"]["train_loss"], model))
    if not found:
        return None
    found.sort()
    why = "; ".join(f"{m}: final training distillation loss {loss:.4f}" for loss, m in found)
    return found[0][1], f"the lower final training loss of the distilled starts ({why})"


def publish(a, name: str, model: str, why: str, result: dict, logs: str, seconds: StageTimes) -> dict:
    """Puts the distilled searched architecture ``name`` — the weights of run ``model`` (`pick_published`) — in the
    zoo (``--zoo_dir``: ``specs/<name>.json``, ``weights/<name>-lite0_distilled.npz`` and its model card), then
    re-scores it through ``zoo`` by name and tag (``recipes.evaluate``): the card's top-1 must come back exactly."""
    from common.io import atomic_write, write_text
    from models import spec as spec_lib
    from models.weights import sha256
    from recipes.cli import run_stage
    p, row = _paths(a, model), result["models"][model]
    weights = os.path.join(p["train"], "weights.npz")
    train_card = _load(os.path.join(p["train"], "model_card.json"))
    t, s = result["teacher"], result["searches"].get(name, {})
    os.makedirs(os.path.join(a.zoo_dir, "specs"), exist_ok=True)
    os.makedirs(os.path.join(a.zoo_dir, "weights"), exist_ok=True)
    npz = os.path.join(a.zoo_dir, "weights", f"{name}-{TAG}.npz")
    with open(weights, "rb") as src:
        data = src.read()
    atomic_write(npz, lambda f: f.write(data))
    with open(p["spec"], encoding="utf-8") as f:
        write_text(os.path.join(a.zoo_dir, "specs", f"{name}.json"), spec_lib.dumps(spec_lib.loads(f.read())))
    n_train = (train_card.get("data") or {}).get("train_examples")
    baselines = {b: {k: result["models"][b].get(k) for k in ("macs", "top1", "top5", "top1_se", "latency_ms")}
                 for b in (f"{kind}_{name}" for kind in KINDS[1:]) if b in result["models"]}
    card = {
        "model": name, "tag": TAG, "file": os.path.basename(npz), "sha256": sha256(npz),
        "dataset": f"ImageNet-1k classes. NOT trained on ImageNet: distilled from EfficientNet-Lite0 (zoo weights "
                   f"'imagenet') on {n_train} images of ../shared/data/imagenet_sample (one image per class, "
                   f"unlabelled use: the loss is the teacher's softened outputs), scored on that sample's "
                   f"{row['eval_images']} held-out evaluation images (inputs.classification.TSV_EVAL_IMAGES)",
        "input_size": 224,
        "metrics": {"top1": row["top1"], "top5": row.get("top5"), "eval_images": row["eval_images"],
                    "top1_binomial_se": row["top1_se"],
                    "teacher_top1": t["top1"], "teacher_top5": t.get("top5"), "top1_vs_teacher": row.get(
                        "top1_vs_teacher"),
                    "macs": row["macs"], "params": row["params"], "target_macs": row["target"],
                    "latency_ms_litert_fp32_1thread": row["latency_ms"], "latency_vs_lite0": row["latency_vs_lite0"],
                    "latency_host": result["host"],
                    "baselines_same_macs_same_distillation": baselines,
                    "vs_baselines": {k: v for k, v in result["searched_vs_baselines"].items()
                                     if k.startswith(f"{name}_vs_")},
                    "same_architecture_other_start": {
                        m: {k: result["models"][m].get(k) for k in ("top1", "top5", "top1_se")}
                        for m in (name, f"{ABLATION}_{name}") if m != model and "top1" in result["models"].get(m, {})}},
        "training": {"teacher": TEACHER, "loss": f"T²·KL to the teacher's softened outputs on the same augmented "
                                                f"view (function matching), T = {a.temperature}",
                     "images": n_train, "epochs": a.epochs, "resolution": a.train_size, "batch_size": a.batch_size,
                     "augmentation": f"random-resized crop + flip, mix={a.mix}", "optimizer": f"SGD, lr {a.lr}",
                     "init": ("the search's supernet weights of the derived architecture (derived_init.npz)"
                              if model != name else "Lite0's imagenet weights of the kept filters (kernels "
                              "zero-padded or centre-cropped to the chosen size), as the baselines' "
                              "(benchmarks.metakernel_ab.searched_init)"),
                     "selected_by": why, "train_loss": train_card["metrics"]["train_loss"],
                     "command": "python -m " + " ".join(train_args(a, {"name": model}))},
        "search": {**{k: s.get(k) for k in ("target_macs", "argmax_macs", "argmax_vs_target", "expected_macs",
                                            "projection_filters_changed", "projection_moved_share")},
                   "space": "lite0 (search.metakernel_space.lite0_space, kernels {3,5,7} or None per depthwise "
                            "filter), seeded with Lite0's weights",
                   "command": "python -m " + " ".join(search_args(a, name, row["target"], "OUT"))},
        "caveat": f"the teacher scores {t['top1']:.3f} top-1 on these {row['eval_images']} images and 0.751 on "
                  "ImageNet val (reported upstream for EfficientNet-Lite0): these images are easier than ImageNet "
                  "val, so expect this model's ImageNet-val top-1 below its top1 here",
        "produced_by": result["command"],
        "source": "this repository: meta-kernel search (Chen et al. 2019) in EfficientNet-Lite0's macro "
                  "architecture, then distillation from Lite0 (benchmarks/metakernel_ab.py)",
        "license": "Apache-2.0",
    }
    write_text(os.path.join(a.zoo_dir, "weights", f"{name}-{TAG}.json"), json.dumps(round_floats(card), indent=1)
               + "\n")
    check = os.path.join(a.work_dir, "eval", f"zoo_{name}.json")
    in_repo = os.path.abspath(a.zoo_dir) == os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "zoo"))
    args = eval_args(a, name if in_repo else os.path.join(a.zoo_dir, "specs", f"{name}.json"),
                     TAG if in_repo else npz, check)
    seconds.record(f"zoo_evaluate/{name}", run_stage(name, args, os.path.join(logs, f"zoo_{name}.log")))
    ev = _load(check)
    return {"card": os.path.join(a.zoo_dir, "weights", f"{name}-{TAG}.json"), "weights_of": model, "why": why,
            "card_top1": row["top1"],
            "zoo_evaluate_top1": ev["top1"], "reproduced": abs(ev["top1"] - row["top1"]) < 0.5 / ev["examples"],
            "evaluate_command": "python -m " + " ".join(args)}
