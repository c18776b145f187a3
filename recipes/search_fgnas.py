"""FGNAS (Kim et al., "Fine-Grained Neural Architecture Search"): per-channel operation gates with a resource
regularizer, searched to a parameter or MACs budget, then fine-tuned.

    python -m recipes.search_fgnas --dataset=folder:../shared/data/cifar10 --space=vgg --kernels=1,3,5 \\
        --acts=relu,tanh --target=3e6 --pretrain_epochs=2 --search_epochs=10 --finetune_epochs=10 \\
        --out_dir=runs/fgnas_vgg_3m
    python -m recipes.search_fgnas --flagfile=my_search.flags        # absl flagfile

Every searched layer (``--space``: a VGG-style net of conv blocks, or MobileNetV2-style inverted residuals whose
depthwise conv is searched) computes every operation (``--kernels`` × ``--acts``) at full width; a binary gate per
operation and channel (straight-through: binary forward, softmax backward) decides which operations produce each
channel. A channel with every gate off is pruned; one with several is a "compositional" operation. Steps: pre-train
with every gate on (``--pretrain_epochs``), train weights and gates on CE + λ·R/R₀ (R: the exact ``--resource`` of the
current hard architecture, R₀: that of the all-on supernet) until R is at or below ``--target`` — then the gates
freeze — and fine-tune the derived model (``--finetune_epochs``). MACs are multiply-accumulates; the paper's "FLOPs"
are 2 × MACs. Rerunning the same command after a kill resumes (the search from its epoch checkpoint, the fine-tune
from its backup).

Writes under ``--out_dir``: ``derived.json`` (a zoo spec of stock layers: one branch per operation, pruned channels
removed, compositional channels in each of their branches with the sum folded into the next layer's weights),
``derived_init.npz``, ``fgnas_layers.png`` (per layer: channels pruned / by number of operations, channels per
operation), ``history.json``, ``summary.json``, ``tensorboard/``, ``checkpoints/`` and ``finetune/`` (weights.npz,
model_card.json).
"""
from __future__ import annotations

import dataclasses

from absl import flags

from recipes.cli import UsageError, define_on_bad_image, run
from workflows.search_fgnas import SearchFgnasConfig
from workflows.search_fgnas import run as run_search

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "shapes", "Data: 'shapes' (built-in synthetic), 'folder:PATH' (class-per-folder images, "
                                         "PATH/train and PATH/test) or a tensorflow-datasets name.")
flags.DEFINE_string("data_dir", None, "tensorflow-datasets data directory.")
define_on_bad_image()
flags.DEFINE_enum("space", "vgg", ["vgg", "mbconv"],
                  "Backbone: 'vgg' (3×3 stem, conv blocks [w, pool] [2w, 2w, pool] [4w, 4w, pool] [8w, 8w] with 2×2 "
                  "average pools, every conv block searched) or 'mbconv' (MobileNetV2-style CIFAR net, expansion 6: "
                  "the expanded channels and their depthwise operation searched).")
flags.DEFINE_integer("width", 12, "Width w of the 'vgg' backbone (12: 7.6M MACs at 32×32; at most 1024).",
                     lower_bound=1)
flags.DEFINE_list("kernels", ["3"], "Candidate kernel sizes of every operation (distinct odd integers; 'vgg': k×k "
                                    "convs, 'mbconv': k×k depthwise convs).")
flags.DEFINE_list("acts", ["relu"], "Candidate activations of every operation (relu, relu6, swish, hswish, tanh, "
                                    "prelu); operations are every (kernel, activation) pair.")
flags.DEFINE_integer("input_size", 32, "Input size.", lower_bound=8)
flags.DEFINE_enum("resource", "macs", ["params", "macs", "latency"], "The regularized resource R and the unit of "
                  "--target: parameters, MACs, or predicted LiteRT milliseconds (--latency_model: the paper's "
                  "per-condition affine functions of MACs measured on this host).")
flags.DEFINE_string("latency_model", "", "With --resource=latency: the fitted latency model JSON "
                                         "(python -m benchmarks.fgnas_latency writes benchmarks/results/"
                                         "fgnas_latency_model.json).")
flags.DEFINE_float("target", None, "Budget: the search stops once the hard architecture's --resource is at or below "
                                   "it (e.g. 3e6 MACs, or 0.2 ms).")
flags.DEFINE_float("lam", 1.0, "λ of CE + λ·R/R₀ (--normalize: R₀ = the target, so a network at the target costs λ "
                               "nats; or the all-on supernet's resource).", lower_bound=0.0)
flags.DEFINE_enum("normalize", "target", ["target", "supernet"], "R₀ of λ·R/R₀: 'target' (the push per MAC is λ/T in "
                  "every space, like the paper's raw λ·R) or 'supernet' (the all-on supernet: with several "
                  "operations its deployed cost is 10-80× the backbone's, which weakens the push as much).")
flags.DEFINE_bool("refill", True, "After the stopping step, turn back on the off gates closest to on while the exact "
                  "--resource stays at or below --target (one gate step can switch many gates at once and land far "
                  "below it). Not in the paper: --norefill stops exactly where its rule does.")
flags.DEFINE_integer("pretrain_epochs", 2, "Epochs with every gate on before the gates train.", lower_bound=0)
flags.DEFINE_integer("search_epochs", 10, "At most this many gate epochs (the search stops at the target).",
                     lower_bound=1)
flags.DEFINE_integer("finetune_epochs", 0, "Epochs of fine-tuning the derived model from the extracted weights "
                                           "(0: none).", lower_bound=0)
flags.DEFINE_integer("batch_size", 64, "Batch size.", lower_bound=1)
flags.DEFINE_integer("steps_per_epoch", None, "Steps per epoch (default: one pass over the training split).",
                     lower_bound=1)
flags.DEFINE_integer("limit", None, "Use only the first N training examples (quick runs).", lower_bound=2)
flags.DEFINE_integer("val_limit", 1000, "Test examples for the per-epoch top-1 of the current architecture (0: skip).",
                     lower_bound=0)
flags.DEFINE_integer("finetune_val_limit", None, "Test examples scored after the last fine-tune epoch (default: the "
                                                 "whole test split; 0: none). Nothing is selected on them.",
                     lower_bound=0)
flags.DEFINE_float("w_lr", 0.05, "Weight learning rate (SGD, Nesterov momentum 0.9, weight decay 1e-4).",
                   lower_bound=0.0)
flags.DEFINE_float("psi_lr", None, "Gate learning rate (default: 0.1 with --normalize=target, 0.2 × the number of "
                                   "operations with --normalize=supernet; SGD). Faster gates "
                                   "reach the target sooner but prune the high-resolution layers before the "
                                   "cross-entropy can respond (measured: workflows/search_fgnas.py PSI_LR_PER_OP).",
                   lower_bound=0.0)
flags.DEFINE_enum("psi_optimizer", "sgd", ["sgd", "adam"], "Gate optimizer: 'sgd' (momentum 0.9: each gate moves in "
                  "proportion to its gradient, so the resource falls gradually) or 'adam' (every gate moves ~lr per "
                  "step: gates pushed the same way flip together).")
flags.DEFINE_enum("input_count", "deployed", ["deployed", "paper"], "Input width a layer's cost counts: 'deployed' "
                  "(a compositional channel once per branch, as the derived model reads it: R is exact) or 'paper' "
                  "(Eq. 10: each live channel once; same gradient, under-counts compositional channels).")
flags.DEFINE_enum("gating", "full", ["full", "no_prune", "one_op"], "Gating function (the paper's Table 7): 'full' "
                  "(any subset of operations per channel; none prunes it), 'no_prune' (several operations, no pruning) "
                  "or 'one_op' (pruning, one operation per channel).")
flags.DEFINE_float("gate_init", 2.0, "Initial gate margin ψ_on − ψ_off (gates start on), at most 100.",
                   lower_bound=1e-3, upper_bound=100.0)
flags.DEFINE_integer("seed", 0, "Seed of initialisation and data order.")
flags.DEFINE_string("name", None, "Name of the derived spec (default: fgnas_<space>_<resource>_<target>).")
flags.DEFINE_string("output", None, "Path of the derived spec (default: OUT_DIR/derived.json).")
flags.DEFINE_string("out_dir", "runs/search_fgnas", "Directory for every output and the resumable state.")
flags.DEFINE_bool("progress", True, "Show a progress bar.")


def config_from_flags() -> SearchFgnasConfig:
    """The flags as a config (every field of the config is a flag of the same name)."""
    try:
        kernels = tuple(int(k) for k in FLAGS.kernels)
    except ValueError as e:
        raise UsageError(f"--kernels={','.join(FLAGS.kernels)}: {e}") from None
    fields = {f.name for f in dataclasses.fields(SearchFgnasConfig)} - {"kernels", "acts"}
    return SearchFgnasConfig(kernels=kernels, acts=tuple(FLAGS.acts), **{k: getattr(FLAGS, k) for k in fields})


def main(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    s = run_search(config_from_flags())
    acc = "n/a" if s["supernet_val_acc"] is None else f"{s['supernet_val_acc']:.3f}"
    tuned = s.get("finetune", {}).get("val_top1")
    tuned = "" if tuned is None else f"; fine-tuned top-1 {tuned:.3f}"
    fmt = (lambda v: f"{v:.4g} ms") if s["resource"] == "latency" else (lambda v: f"{v:,.0f}")  # noqa: E731
    print(f"{s['name']}: {s['resource']} {fmt(s['resource_value'])} ({s['vs_target']:+.2%} vs target "
          f"{fmt(s['target'])}, {'reached' if s['reached'] else 'NOT reached'}); {s['macs']:,} MACs, "
          f"{s['params']:,} params (backbone {s['backbone_macs']:,} MACs); {s['kept_share']:.0%} of channels kept, "
          f"{s['compositional_share']:.0%} compositional; supernet top-1 {acc}{tuned} -> {s['spec']}")


if __name__ == "__main__":
    run(main)
