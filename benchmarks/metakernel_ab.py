"""metaKernel-A/B from ImageNet-trained EfficientNet-Lite0: search, baselines, distillation, evaluation (issue 15).

Stages (each writes under ``--work_dir`` and is skipped when its output is present, so rerunning the command resumes;
the JSON and the plot are rewritten after every finished stage):

1. **teacher**: EfficientNet-Lite0 ``imagenet`` on the evaluation split (``recipes.evaluate``, split ``test``: the
   fixed 300 images of a ``tsv:`` list, `inputs.classification.TSV_EVAL_IMAGES`, which no stage trains on).
2. **search** at every ``--targets`` budget (metaKernel-A 260M, B 370M MACs counted at 224):
   ``recipes.search_metakernel --space=lite0`` seeded with Lite0's weights, distilling from Lite0 on the training
   split (``--teacher``, ``--mix``), the supernet trained at ``--search_size`` with the budget counted at 224
   (``--budget_input_size``), λ = 2, η = 0.1 (the recipe's defaults), no validation on the evaluation split.
   ``--search_flags`` adds the recipe flags this data needs (default: α lr 0.03 and weights lr 0.01 for ~17 steps
   an epoch from pretrained weights; ``--a_entropy=2`` so that the per-filter choices commit and the argmax lands in
   the band where Eq. 6 holds E[MACs], instead of collapsing to "None").
3. **baselines** per target (`search.pruning`, from the same seeded supernet): (a) Lite0 with its 5×5 kernels
   cropped to 3×3 and channels pruned by L1 norm to the target; (b) Lite0 pruned by L1 norm to the target.
4. **distill** every searched and baseline model from its inherited weights with one schedule: ``recipes.train
   --teacher=efficientnet_lite0:imagenet`` on the training split at ``--train_size``, ``--epochs``;
5. **evaluate** it at 224 on the evaluation split (top-1/top-5 with labels), next to the teacher.
6. **latency**: median single-thread LiteRT float latency of every model and Lite0, interleaved rounds, one process.
7. **publish** every searched model distilled in this work directory into the zoo (``--zoo_dir``:
   ``specs/<name>.json``, ``weights/<name>-lite0_distilled.npz`` and its model card), then re-score it through
   ``zoo`` by name and tag.

    python -m benchmarks.metakernel_ab --out benchmarks/results/metakernel_ab.json
    python -m benchmarks.metakernel_ab --out … --only=metakernel_a      # one target's search and models this run
    python -m benchmarks.metakernel_ab --out … --stop_after=search      # up to one stage

Runs outlive a session through ``--ledger`` (committed beside the result): the teacher's and every model's
evaluation, spec and distillation card, each search's summary, derived spec, history and kernel plot, and the
latency session. A later run (with an empty work directory) restores them and runs only what is missing; a model's
weights stay in the work directory, so a target is searched, distilled and published within one session.

The data (default ``tsv:../shared/data/imagenet_sample``: 700 training, 300 evaluation images, one per class) make
every number relative to the teacher on the same images, never an ImageNet accuracy claim. Standard errors are
binomial on the evaluation images.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time

from benchmarks import harness
from benchmarks.harness import StageTimes, host_info, round_floats, usage_error, write_json

DATA = "tsv:../shared/data/imagenet_sample"
TEACHER = "efficientnet_lite0:imagenet"
STAGES = ("teacher", "search", "baselines", "distill", "evaluate", "latency", "publish")
LEDGER = os.path.join("benchmarks", "results", "metakernel_ab_runs")
TAG = "lite0_distilled"  # the zoo weights tag of the published models
SEARCH_FILES = ("summary.json", "derived.json", "history.json", "kernel_distribution.png")
# Settings every stage's outputs depend on (the run directory's identity; --stop_after and --latency_rounds are not)
IDENTITY = ("dataset", "targets", "names", "search_size", "search_epochs", "search_batch", "search_steps",
            "search_flags", "train_size", "epochs", "steps_per_epoch", "batch_size", "lr", "mix", "temperature",
            "eval_limit")
KINDS = ("searched", "crop_prune", "prune")  # per target: the search's model and the two baselines
# the searched architecture with the search's supernet weights as its start (the usual one-shot inheritance) instead
# of Lite0's: an ablation of the starting point, for the targets in --init_ablation
ABLATION = "supernet_init"


def _load(path):
    with open(path) as f:
        return json.load(f)


def parse(argv):
    p = harness.ArgumentParser(prog="metakernel_ab", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="result JSON path (a PNG is written beside it)")
    p.add_argument("--work_dir", default="runs/metakernel_ab")
    p.add_argument("--dataset", default=DATA, help="a 1000-class dataset with a test split (default: the ImageNet "
                                                   "sample as a tsv: list)")
    p.add_argument("--targets", default="260e6,370e6", help="MACs budgets at 224 (metaKernel-A, -B)")
    p.add_argument("--names", default="metakernel_a,metakernel_b", help="one name per target")
    p.add_argument("--search_size", type=int, default=128, help="supernet training resolution")
    p.add_argument("--search_epochs", type=int, default=16)
    p.add_argument("--search_batch", type=int, default=32)
    p.add_argument("--search_steps", type=int, default=0, help="steps per search epoch (0: one pass)")
    p.add_argument("--search_flags", default="--a_lr=0.03 --w_lr=0.01 --a_entropy=2",
                   help="extra flags of recipes.search_metakernel, space-separated as on a command line (quoted)")
    p.add_argument("--train_size", type=int, default=224, help="distillation resolution")
    p.add_argument("--epochs", type=int, default=20, help="distillation epochs")
    p.add_argument("--steps_per_epoch", type=int, default=0, help="distillation steps per epoch (0: one pass)")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.01, help="SGD peak learning rate (from inherited weights)")
    p.add_argument("--mix", default="both", choices=["none", "mixup", "cutmix", "both"])
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--eval_limit", type=int, default=0, help="evaluation images (0: the whole evaluation split)")
    p.add_argument("--latency_rounds", type=int, default=5, help="interleaved LiteRT rounds (0: skip)")
    p.add_argument("--stop_after", default="publish", choices=STAGES)
    p.add_argument("--only", default="",
                   help="comma-separated --names to search, distil and evaluate in this run (default: all); the "
                        "others keep what the ledger holds — a target at a time fits a session")
    p.add_argument("--ledger", default=LEDGER,
                   help="committed folder of finished stages (specs, search summaries, evaluations, latency) that a "
                        "later session resumes from ('' for none)")
    p.add_argument("--init_ablation", default=None,
                   help="comma-separated --names whose searched architecture is also distilled from the search's "
                        "supernet weights (the searched model itself starts from Lite0's own weights, as the "
                        "baselines do); default the first of --names, '' for none")
    p.add_argument("--zoo_dir", default="zoo", help="where the searched models are published (specs/, weights/)")
    a = p.parse_args(argv)

    def fail(msg):
        usage_error("metakernel_ab", msg)
    try:
        a.targets = [float(t) for t in a.targets.split(",") if t]
    except ValueError as e:
        fail(f"--targets: comma-separated numbers ({e})")
    a.names = [n for n in a.names.split(",") if n]
    a.only = [n for n in a.only.split(",") if n] or list(a.names)

    if set(a.only) - set(a.names):
        fail(f"--only: {sorted(set(a.only) - set(a.names))[0]!r} is not one of --names ({','.join(a.names)})")
    if not a.targets or len(a.names) != len(a.targets):
        fail(f"--targets and --names: one name per target (got {len(a.targets)} and {len(a.names)})")
    a.init_ablation = a.names[:1] if a.init_ablation is None else [n for n in a.init_ablation.split(",") if n]
    if set(a.init_ablation) - set(a.names):
        fail(f"--init_ablation: {sorted(set(a.init_ablation) - set(a.names))[0]!r} is not one of --names "
             f"({','.join(a.names)})")
    from models.spec import NAME_RE
    bad = [n for n in a.names if not NAME_RE.fullmatch(n)]
    if bad:
        fail(f"--names: {bad[0]!r} is not a model name (lower-case letters, digits, '_', '.', '-')")
    if min(a.search_size, a.train_size) < 32 or min(a.search_epochs, a.epochs, a.search_batch, a.batch_size) < 1 \
            or min(a.search_steps, a.steps_per_epoch, a.eval_limit, a.latency_rounds) < 0 or a.lr <= 0 \
            or a.temperature <= 0:
        fail("--search_size/--train_size ≥ 32, epochs and batch sizes ≥ 1, step and limit counts ≥ 0, --lr and "
             "--temperature > 0")
    from inputs.classification import DataError, known_classes, validate
    try:
        validate(a.dataset)
        classes = known_classes(a.dataset)
    except DataError as e:
        fail(f"--dataset={a.dataset}: {e}")
    if classes is not None and classes != 1000:
        fail(f"--dataset={a.dataset}: {classes} classes; the Lite0 teacher and the searched models have 1000")
    from search.metakernel_space import lite0_space
    lo, hi = lite0_space().macs_range()
    for t in a.targets:
        if not lo < t < hi:
            fail(f"--targets: {t:,.0f} is outside the lite0 space's {lo:,} … {hi:,} MACs at 224")
    import shlex
    try:
        a.search_flag_list = shlex.split(a.search_flags)
    except ValueError as e:
        fail(f"--search_flags: {e}")
    from common.errors import InputError
    from common.rundir import RunDir
    a.run_dir = RunDir(a.work_dir, {k: getattr(a, k) for k in IDENTITY}, flag="--work_dir")
    try:  # every stage's outputs belong to these settings: other settings need another --work_dir
        a.run_dir.check(what="a metakernel_ab run")
    except InputError as e:
        fail(str(e))
    a.ledger_dir = a.ledger or None
    if a.ledger_dir and os.path.exists(os.path.join(a.ledger_dir, "setup.json")):  # checked here, written by main
        try:
            ledger(a)
        except ValueError as e:
            fail(f"--ledger: {e}")
    return a


def ledger(a) -> harness.Ledger:
    """The committed ledger of this run's settings (its ``setup.json`` is written when missing; ValueError when the
    ledger holds other settings)."""
    return harness.Ledger(a.ledger_dir, a.work_dir, setup={k: getattr(a, k) for k in IDENTITY})


def _paths(a, name: str) -> dict:
    w = a.work_dir
    return {"spec": os.path.join(w, "specs", f"{name}.json"), "init": os.path.join(w, "specs", f"{name}_init.npz"),
            "train": os.path.join(w, "distill", name), "eval": os.path.join(w, "eval", f"{name}.json")}


def models(a) -> list[dict]:
    out = []
    for name, target in zip(a.names, a.targets):
        kinds = KINDS + ((ABLATION,) if name in a.init_ablation else ())
        out += [{"name": name if kind == "searched" else f"{kind}_{name}", "kind": kind, "target": target,
                 "search": name} for kind in kinds]
    return out


def search_args(a, name: str, target: float, out_dir: str) -> list[str]:
    return ["recipes.search_metakernel", "--space=lite0", f"--dataset={a.dataset}", f"--teacher={TEACHER}",
            f"--mix={a.mix}", f"--temperature={a.temperature}", f"--input_size={a.search_size}",
            "--budget_input_size=224", f"--target_macs={target:.0f}", f"--epochs={a.search_epochs}",
            f"--batch_size={a.search_batch}", *([f"--steps_per_epoch={a.search_steps}"] if a.search_steps else []),
            "--val_limit=0", "--seed=0", f"--name={name}", "--noprogress", f"--out_dir={out_dir}",
            *a.search_flag_list]


def train_args(a, m: dict) -> list[str]:
    p = _paths(a, m["name"])
    return ["recipes.train", f"--model={p['spec']}", f"--weights={p['init']}", f"--dataset={a.dataset}",
            f"--teacher={TEACHER}", f"--mix={a.mix}", f"--temperature={a.temperature}",
            f"--input_size={a.train_size}", f"--epochs={a.epochs}", f"--batch_size={a.batch_size}",
            *([f"--steps_per_epoch={a.steps_per_epoch}"] if a.steps_per_epoch else []), "--optimizer=sgd",
            f"--lr={a.lr}", "--val_limit=0", "--seed=0", "--noprogress", f"--out_dir={p['train']}"]


def eval_args(a, model: str, weights: str, json_path: str) -> list[str]:
    return ["recipes.evaluate", f"--model={model}", f"--weights={weights}", f"--dataset={a.dataset}", "--split=test",
            "--input_size=224", *([f"--limit={a.eval_limit}"] if a.eval_limit else []), f"--json={json_path}",
            "--noprogress"]


def _lite0_supernet():
    """A ``lite0``-space supernet seeded with Lite0's ``imagenet`` weights, and Lite0's spec."""
    import zoo
    from models.weights import read_npz
    from search.metakernel_space import lite0_space
    from search.supernet import MetaKernelSupernet, build_supernet
    space = lite0_space()
    net = MetaKernelSupernet(build_supernet(space), space)
    lite0 = zoo.get_spec("efficientnet_lite0")
    net.inherit(read_npz(zoo.weights_path("efficientnet_lite0", "imagenet")), lite0)
    return net, lite0


def searched_init(search_dir: str, spec_path: str, init_path: str) -> None:
    """The searched model's starting weights from Lite0's own (as the baselines'): the search's derived choices
    (``derived_arch.npz``) extracted from a freshly Lite0-seeded supernet — kept filters carry Lite0's kernels
    zero-padded or centre-cropped to their chosen size, everything else Lite0's weights of the kept channels."""
    import numpy as np

    from common.io import atomic_write
    from models import spec as spec_lib
    net, _ = _lite0_supernet()
    with np.load(os.path.join(search_dir, "derived_arch.npz")) as f:
        arch = [f[b.name] for b in net.blocks]
    with open(spec_path, encoding="utf-8") as f:
        spec = spec_lib.loads(f.read())
    derived = net.derive(arch, name=spec.name, provenance=spec.provenance)
    if spec_lib.dumps(derived) != spec_lib.dumps(spec):
        raise SystemExit(f"metakernel_ab: {search_dir}/derived_arch.npz does not derive {spec_path}")
    weights = net.extract(arch, derived)
    atomic_write(init_path, lambda f: np.savez(f, **weights))


def write_baselines(a) -> dict:
    """Specs and inherited weights of the two baselines per target (`search.pruning`); returns what they are."""
    import numpy as np

    from models import spec as spec_lib
    from search.pruning import crop_kernels, l1_prune
    net, lite0 = _lite0_supernet()
    member = net.member_choice(lite0)
    info = {}
    for m in models(a):
        if m["kind"] in ("searched", ABLATION):
            continue
        base = crop_kernels(net, member, {5: 3}) if m["kind"] == "crop_prune" else member
        if net.macs(base) > m["target"] * 1.01:
            try:
                arch, share, macs = l1_prune(net, base, m["target"])
            except ValueError as e:
                raise SystemExit(f"metakernel_ab: --targets: {m['name']}: {e}") from None
        else:
            arch, share, macs = base, 1.0, net.macs(base)
        how = ("Lite0, 5x5 kernels cropped to 3x3, " if m["kind"] == "crop_prune" else "Lite0, ") + \
            f"{share:.1%} of each block's depthwise filters kept by expansion-filter L1 norm"
        prov = spec_lib.Provenance(method="baseline", source="search space lite0 (search.pruning)",
                                   target=m["target"], target_macs=int(m["target"]), seed=None,
                                   data="efficientnet_lite0 imagenet weights", notes=how, metrics=())
        spec = net.derive(arch, name=m["name"], provenance=prov)
        p = _paths(a, m["name"])
        os.makedirs(os.path.dirname(p["spec"]), exist_ok=True)
        from common.io import atomic_write, write_text
        weights = net.extract(arch, spec)
        atomic_write(p["init"], lambda f, w=weights: np.savez(f, **w))
        write_text(p["spec"], spec_lib.dumps(spec))
        info[m["name"]] = {"kept_share": share, "macs": macs, "how": how}
    return info


def aggregate(a, teacher: dict | None, searches: dict, evals: dict, latency: dict, baselines: dict) -> dict:
    from models import spec as spec_lib
    from models.counting import count
    rows = {}
    t_top1 = teacher["top1"] if teacher else None
    for m in models(a):
        p = _paths(a, m["name"])
        if not os.path.exists(p["spec"]):
            continue
        with open(p["spec"], encoding="utf-8") as f:
            c = count(spec_lib.loads(f.read()))
        row = {"kind": m["kind"], "target": m["target"], "macs": c.macs, "macs_vs_target": c.macs / m["target"] - 1,
               "params": c.params}
        ev = evals.get(m["name"])
        if ev:
            n = ev["examples"]
            row.update(top1=ev["top1"], top5=ev.get("top5"), eval_images=n,
                       top1_se=math.sqrt(ev["top1"] * (1 - ev["top1"]) / n))
            if t_top1 is not None:
                row["top1_vs_teacher"] = ev["top1"] - t_top1
        if m["name"] in latency and "efficientnet_lite0" in latency:
            row["latency_ms"] = latency[m["name"]]["median_ms"]
            row["latency_vs_lite0"] = latency[m["name"]]["median_ms"] / latency["efficientnet_lite0"]["median_ms"]
        if m["name"] in baselines:
            row["baseline"] = baselines[m["name"]]
        rows[m["name"]] = row
    vs = {}
    for name in a.names:  # searched minus each baseline of its budget, with the SE of the difference
        s = rows.get(name, {})
        for kind in (*KINDS[1:], ABLATION):
            b = rows.get(f"{kind}_{name}", {})
            if "top1" in s and "top1" in b:
                se = math.sqrt(s["top1_se"] ** 2 + b["top1_se"] ** 2)
                d = s["top1"] - b["top1"]
                vs[f"{name}_vs_{kind}"] = {"diff": d, "se": se, "exceeds_2se": abs(d) > 2 * se}
    return {"models": rows, "searched_vs_baselines": vs, "searches": searches,
            "teacher": teacher and {**teacher, "latency_ms": latency.get("efficientnet_lite0", {}).get("median_ms")}}


def plot(result: dict, path: str) -> None:
    from reports.plots import pyplot, save_figure
    plt = pyplot()
    rows = result["models"]
    if not any("top1" in r for r in rows.values()):
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = {"searched": "tab:red", "crop_prune": "tab:blue", "prune": "tab:green", ABLATION: "tab:orange"}
    labels = {"searched": "meta-kernel search", "crop_prune": "Lite0 5×5→3×3 + L1 prune", "prune": "Lite0 L1 prune",
              ABLATION: "search, from its supernet's weights"}
    for ax, key, xlabel in ((axes[0], "macs", "MACs at 224 (M)"), (axes[1], "latency_ms", "LiteRT ms (1 thread)")):
        for kind in (*KINDS, ABLATION):
            pts = [(r[key] / (1e6 if key == "macs" else 1), 100 * r["top1"], 100 * r["top1_se"])
                   for r in rows.values() if r["kind"] == kind and "top1" in r and key in r]
            if pts:
                x, y, e = zip(*pts)
                ax.errorbar(x, y, yerr=e, fmt="o", capsize=3, color=colours[kind], label=labels[kind])
        t = result.get("teacher")
        if t and (key == "macs" or t.get("latency_ms")):
            x = t["macs"] / 1e6 if key == "macs" else t["latency_ms"]
            ax.errorbar([x], [100 * t["top1"]], yerr=[100 * math.sqrt(t["top1"] * (1 - t["top1"]) / t["examples"])],
                        fmt="*", ms=12, capsize=3, color="k", label="teacher: Lite0")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("top-1 on the evaluation split (%)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=9)
    fig.suptitle("distilled from Lite0 on the ImageNet sample; ± binomial SE", fontsize=11)
    save_figure(fig, path)
    plt.close(fig)


def _restore_model(a, ledger, m: dict) -> None:
    """A later session's work directory starts empty: a model whose evaluation is in the ledger gets back its spec,
    its evaluation and its distillation card (and, for a searched model, the search's summary), nothing else."""
    p = _paths(a, m["name"])
    ledger.restore(os.path.dirname(p["eval"]), [os.path.basename(p["eval"])])
    if os.path.exists(p["eval"]):
        ledger.restore(os.path.dirname(p["spec"]), [os.path.basename(p["spec"])])
        ledger.restore(p["train"], ["model_card.json"])
        if m["kind"] == "searched":
            ledger.restore(os.path.join(a.work_dir, "search", m["search"]), SEARCH_FILES)


def main(argv=None) -> int:
    a = parse(argv)
    from recipes.cli import run_stage
    a.run_dir.start()
    for d in ("logs", "search", "specs", "distill", "eval"):
        os.makedirs(os.path.join(a.work_dir, d), exist_ok=True)
    seconds = StageTimes(os.path.join(a.work_dir, "stage_seconds.json"), seed=StageTimes.previous(a.out))
    ledger_ = ledger(a)
    logs = os.path.join(a.work_dir, "logs")
    state = {"teacher": None, "searches": {}, "evals": {}, "latency": {}, "baselines": {}, "published": {}}
    base_info = os.path.join(a.work_dir, "specs", "baselines.json")
    eval_dir = os.path.join(a.work_dir, "eval")

    def report():
        result = aggregate(a, state["teacher"], state["searches"], state["evals"], state["latency"],
                           state["baselines"])
        if result["teacher"]:
            import zoo
            from models.counting import count
            result["teacher"]["macs"] = count(zoo.get_spec("efficientnet_lite0")).macs
        result.update(setup={k: getattr(a, k) for k in IDENTITY}, teacher_spec=TEACHER,
                      published=state["published"], stage_seconds=dict(seconds), stages_run_now=seconds.ran,
                      host=host_info(),
                      command="python -m benchmarks.metakernel_ab " + " ".join(sys.argv[1:] if argv is None else argv))
        write_json(a.out, round_floats(result))
        plot(result, os.path.splitext(a.out)[0] + ".png")

    def done(stage):
        report()
        return a.stop_after == stage

    # 1. teacher
    t_json = os.path.join(eval_dir, "teacher.json")
    ledger_.restore(eval_dir, ["teacher.json"])
    if not os.path.exists(t_json):
        seconds.record("teacher", run_stage("teacher", eval_args(a, "efficientnet_lite0", "imagenet", t_json),
                                            os.path.join(logs, "teacher.log")))
    ledger_.keep(eval_dir, ["teacher.json"])
    state["teacher"] = _load(t_json)
    ledger_.restore(os.path.dirname(base_info), [os.path.basename(base_info)])
    for m in models(a):
        _restore_model(a, ledger_, m)
        if os.path.exists(_paths(a, m["name"])["eval"]):
            state["evals"][m["name"]] = _load(_paths(a, m["name"])["eval"])
    if done("teacher"):
        return 0
    # 2. searches (a search whose models are all evaluated is not needed again)
    for name, target in zip(a.names, a.targets):
        out_dir = os.path.join(a.work_dir, "search", name)
        p = _paths(a, name)
        q = _paths(a, f"{ABLATION}_{name}") if name in a.init_ablation else None
        pending = [x for x in (p, q) if x and not os.path.exists(x["eval"]) and not os.path.exists(x["init"])]
        weights = [os.path.join(out_dir, f) for f in ("derived_init.npz", "derived_arch.npz")]
        if name in a.only and pending and not all(os.path.exists(f) for f in weights):
            if os.path.exists(os.path.join(out_dir, "summary.json")) and not os.path.isdir(
                    os.path.join(out_dir, "checkpoints")):  # a ledger's summary without the weights: search again
                shutil.rmtree(out_dir)
            seconds.record(f"search/{name}", run_stage(name, search_args(a, name, target, out_dir),
                                                       os.path.join(logs, f"search_{name}.log")))
        if not os.path.exists(os.path.join(out_dir, "summary.json")):
            continue
        ledger_.keep(out_dir, [f for f in SEARCH_FILES if os.path.exists(os.path.join(out_dir, f))])
        s = _load(os.path.join(out_dir, "summary.json"))
        state["searches"][name] = {k: s.get(k) for k in (
            "target_macs", "macs", "macs_vs_target", "argmax_macs", "argmax_vs_target", "expected_macs",
            "projection_filters_changed", "projection_moved_share", "params")}
        state["searches"][name]["mixture"] = s["mixture"]
        for x in (p, q):
            if x and not os.path.exists(x["spec"]):
                shutil.copyfile(os.path.join(out_dir, "derived.json"), x["spec"])
        if p in pending and all(os.path.exists(f) for f in weights):
            t0 = time.time()
            searched_init(out_dir, p["spec"], p["init"])
            seconds.record(f"init/{name}", time.time() - t0)
        if q in pending and os.path.exists(weights[0]):
            shutil.copyfile(weights[0], q["init"])
    if done("search"):
        return 0
    # 3. baselines (specs and inherited weights; cheap, so rewritten whenever one is needed and missing)
    need = [m for m in models(a) if m["kind"] not in ("searched", ABLATION) and m["search"] in a.only
            and not os.path.exists(_paths(a, m["name"])["eval"]) and not os.path.exists(_paths(a, m["name"])["init"])]
    if need or not os.path.exists(base_info):
        t0 = time.time()
        write_json(base_info, round_floats(write_baselines(a)))
        seconds.record("baselines", time.time() - t0)
    ledger_.keep(os.path.dirname(base_info), [os.path.basename(base_info)])
    state["baselines"] = _load(base_info)
    if done("baselines"):
        return 0
    # 4. distillation and 5. evaluation, model by model (a finished model's evaluation lands in the ledger)
    for m in models(a):
        p = _paths(a, m["name"])
        if m["search"] not in a.only or os.path.exists(p["eval"]) or not os.path.exists(p["spec"]):
            continue
        card = os.path.join(p["train"], "model_card.json")
        if not (os.path.exists(card) and os.path.exists(os.path.join(p["train"], "weights.npz"))):
            if os.path.exists(card):  # a ledger's card without its weights
                os.remove(card)
            seconds.record(f"distill/{m['name']}", run_stage(m["name"], train_args(a, m),
                                                             os.path.join(logs, f"distill_{m['name']}.log")))
        report()
        if a.stop_after == "distill":
            continue
        seconds.record(f"eval/{m['name']}", run_stage(
            m["name"], eval_args(a, p["spec"], os.path.join(p["train"], "weights.npz"), p["eval"]),
            os.path.join(logs, f"eval_{m['name']}.log")))
        ledger_.keep(os.path.dirname(p["spec"]), [os.path.basename(p["spec"])])
        ledger_.keep(p["train"], ["model_card.json"])
        ledger_.keep(os.path.dirname(p["eval"]), [os.path.basename(p["eval"])])
        state["evals"][m["name"]] = _load(p["eval"])
    if a.stop_after in ("distill", "evaluate"):
        report()
        return 0
    # 6. latency: every model with a spec and Lite0 in one session (re-measured whenever a model joins)
    lat_path = os.path.join(a.work_dir, "latency.json")
    ledger_.restore(a.work_dir, ["latency.json"])
    if os.path.exists(lat_path):
        state["latency"] = _load(lat_path)
    specs = {m["name"]: _paths(a, m["name"])["spec"] for m in models(a)
             if os.path.exists(_paths(a, m["name"])["spec"])}
    if a.latency_rounds and set(specs) - set(state["latency"]):
        import zoo
        from benchmarks.kernel_ablation import measure_latency
        t0 = time.time()
        state["latency"] = measure_latency({"efficientnet_lite0": zoo.spec_path("efficientnet_lite0"), **specs},
                                           a.latency_rounds)
        write_json(lat_path, state["latency"])
        seconds.record("latency", time.time() - t0)
    if os.path.exists(lat_path):
        ledger_.keep(a.work_dir, ["latency.json"])
    if done("latency"):
        return 0
    # 7. publish every searched model that is evaluated, timed and distilled here (its weights are in this work dir)
    from benchmarks.metakernel_ab_zoo import pick_published, publish
    result = _load(a.out)
    for name in a.names:
        pick = pick_published(a, name, result)
        if pick:
            state["published"][name] = publish(a, name, *pick, result, logs, seconds)
    report()
    print(json.dumps(_load(a.out)["searched_vs_baselines"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
