"""metaKernel-A/B from ImageNet-trained EfficientNet-Lite0: search, baselines, distillation, evaluation (issue 15).

Stages (each writes under ``--work_dir`` and is skipped when its output is present, so rerunning the command resumes;
the JSON and the plot are rewritten after every finished stage):

1. **teacher**: EfficientNet-Lite0 ``imagenet`` on the evaluation split (``recipes.evaluate``, split ``test``: the
   fixed 300 images of a ``tsv:`` list, `inputs.classification.TSV_EVAL_IMAGES`, which no stage trains on).
2. **search** at every ``--targets`` budget (metaKernel-A 260M, B 370M MACs counted at 224):
   ``recipes.search_metakernel --space=lite0`` seeded with Lite0's weights, distilling from Lite0 on the training
   split (``--teacher``, ``--mix``), the supernet trained at ``--search_size`` with the budget counted at 224
   (``--budget_input_size``), λ = 2, η = 0.1 (the recipe's defaults), no validation on the evaluation split.
3. **baselines** per target (`search.pruning`, from the same seeded supernet): (a) Lite0 with its 5×5 kernels
   cropped to 3×3 and channels pruned by L1 norm to the target; (b) Lite0 pruned by L1 norm to the target.
4. **distill** every searched and baseline model from its inherited weights with one schedule: ``recipes.train
   --teacher=efficientnet_lite0:imagenet`` on the training split at ``--train_size``, ``--epochs``.
5. **evaluate** each distilled model at 224 on the evaluation split (top-1/top-5 with labels), next to the teacher.
6. **latency**: median single-thread LiteRT float latency of every model and Lite0, interleaved rounds, one process.

    python -m benchmarks.metakernel_ab --out benchmarks/results/metakernel_ab.json
    python -m benchmarks.metakernel_ab --out … --stop_after=search           # one stage at a time

The data (default ``tsv:../shared/data/imagenet_sample``: 700 training, 300 evaluation images, one per class) make
every number relative to the teacher on the same images, never an ImageNet accuracy claim. Standard errors are
binomial on the evaluation images.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time

from benchmarks import harness
from benchmarks.harness import StageTimes, host_info, round_floats, usage_error, write_json

DATA = "tsv:../shared/data/imagenet_sample"
TEACHER = "efficientnet_lite0:imagenet"
STAGES = ("teacher", "search", "baselines", "distill", "evaluate", "latency")
# Settings every stage's outputs depend on (the run directory's identity; --stop_after and --latency_rounds are not)
IDENTITY = ("dataset", "targets", "names", "search_size", "search_epochs", "search_batch", "search_steps",
            "search_flags", "train_size", "epochs", "steps_per_epoch", "batch_size", "lr", "mix", "temperature",
            "eval_limit")
KINDS = ("searched", "crop_prune", "prune")  # per target: the search's model and the two baselines


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
    p.add_argument("--search_epochs", type=int, default=4)
    p.add_argument("--search_batch", type=int, default=32)
    p.add_argument("--search_steps", type=int, default=0, help="steps per search epoch (0: one pass)")
    p.add_argument("--search_flags", default="",
                   help="extra flags of recipes.search_metakernel, space-separated as on a command line (quoted)")
    p.add_argument("--train_size", type=int, default=224, help="distillation resolution")
    p.add_argument("--epochs", type=int, default=10, help="distillation epochs")
    p.add_argument("--steps_per_epoch", type=int, default=0, help="distillation steps per epoch (0: one pass)")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.01, help="SGD peak learning rate (from inherited weights)")
    p.add_argument("--mix", default="both", choices=["none", "mixup", "cutmix", "both"])
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--eval_limit", type=int, default=0, help="evaluation images (0: the whole evaluation split)")
    p.add_argument("--latency_rounds", type=int, default=5, help="interleaved LiteRT rounds (0: skip)")
    p.add_argument("--stop_after", default="latency", choices=STAGES)
    a = p.parse_args(argv)

    def fail(msg):
        usage_error("metakernel_ab", msg)
    try:
        a.targets = [float(t) for t in a.targets.split(",") if t]
    except ValueError as e:
        fail(f"--targets: comma-separated numbers ({e})")
    a.names = [n for n in a.names.split(",") if n]
    if not a.targets or len(a.names) != len(a.targets):
        fail(f"--targets and --names: one name per target (got {len(a.targets)} and {len(a.names)})")
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
    return a


def _paths(a, name: str) -> dict:
    w = a.work_dir
    return {"spec": os.path.join(w, "specs", f"{name}.json"), "init": os.path.join(w, "specs", f"{name}_init.npz"),
            "train": os.path.join(w, "distill", name), "eval": os.path.join(w, "eval", f"{name}.json")}


def models(a) -> list[dict]:
    out = []
    for name, target in zip(a.names, a.targets):
        out += [{"name": name if kind == "searched" else f"{kind}_{name}", "kind": kind, "target": target,
                 "search": name} for kind in KINDS]
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


def write_baselines(a) -> dict:
    """Specs and inherited weights of the two baselines per target (`search.pruning`); returns what they are."""
    import numpy as np

    import zoo
    from models import spec as spec_lib
    from models.weights import read_npz
    from search.metakernel_space import lite0_space
    from search.pruning import crop_kernels, l1_prune
    from search.supernet import MetaKernelSupernet, build_supernet
    space = lite0_space()
    net = MetaKernelSupernet(build_supernet(space), space)
    lite0 = zoo.get_spec("efficientnet_lite0")
    net.inherit(read_npz(zoo.weights_path("efficientnet_lite0", "imagenet")), lite0)
    member = net.member_choice(lite0)
    info = {}
    for m in models(a):
        if m["kind"] == "searched":
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
        for kind in KINDS[1:]:
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
    colours = {"searched": "tab:red", "crop_prune": "tab:blue", "prune": "tab:green"}
    labels = {"searched": "meta-kernel search", "crop_prune": "Lite0 5×5→3×3 + L1 prune", "prune": "Lite0 L1 prune"}
    for ax, key, xlabel in ((axes[0], "macs", "MACs at 224 (M)"), (axes[1], "latency_ms", "LiteRT ms (1 thread)")):
        for kind in KINDS:
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
        ax.legend(fontsize=9)
    fig.suptitle("distilled from Lite0 on the ImageNet sample; ± binomial SE", fontsize=11)
    save_figure(fig, path)
    plt.close(fig)


def main(argv=None) -> int:
    a = parse(argv)
    from recipes.cli import run_stage
    a.run_dir.start()
    for d in ("logs", "search", "specs", "distill", "eval"):
        os.makedirs(os.path.join(a.work_dir, d), exist_ok=True)
    seconds = StageTimes(os.path.join(a.work_dir, "stage_seconds.json"), seed=StageTimes.previous(a.out))
    logs = os.path.join(a.work_dir, "logs")
    state = {"teacher": None, "searches": {}, "evals": {}, "latency": {}, "baselines": {}}
    base_info = os.path.join(a.work_dir, "specs", "baselines.json")

    def report():
        result = aggregate(a, state["teacher"], state["searches"], state["evals"], state["latency"],
                           state["baselines"])
        if result["teacher"]:
            import zoo
            from models.counting import count
            result["teacher"]["macs"] = count(zoo.get_spec("efficientnet_lite0")).macs
        result.update(setup={k: getattr(a, k) for k in ("dataset", "targets", "names", "search_size", "search_epochs",
                                                         "search_batch", "search_steps", "train_size", "epochs",
                                                         "steps_per_epoch", "batch_size", "lr", "mix", "temperature",
                                                         "eval_limit")},
                      teacher_spec=TEACHER, stage_seconds=dict(seconds), stages_run_now=seconds.ran,
                      host=host_info(),
                      command="python -m benchmarks.metakernel_ab " + " ".join(sys.argv[1:] if argv is None else argv))
        write_json(a.out, round_floats(result))
        plot(result, os.path.splitext(a.out)[0] + ".png")

    def done(stage):
        report()
        return a.stop_after == stage

    # 1. teacher
    t_json = os.path.join(a.work_dir, "eval", "teacher.json")
    if not os.path.exists(t_json):
        seconds.record("teacher", run_stage("teacher", eval_args(a, "efficientnet_lite0", "imagenet", t_json),
                                            os.path.join(logs, "teacher.log")))
    state["teacher"] = _load(t_json)
    if done("teacher"):
        return 0
    # 2. searches
    for name, target in zip(a.names, a.targets):
        out_dir = os.path.join(a.work_dir, "search", name)
        if not os.path.exists(os.path.join(out_dir, "summary.json")):
            seconds.record(f"search/{name}", run_stage(name, search_args(a, name, target, out_dir),
                                                       os.path.join(logs, f"search_{name}.log")))
        s = _load(os.path.join(out_dir, "summary.json"))
        state["searches"][name] = {k: s.get(k) for k in (
            "target_macs", "macs", "macs_vs_target", "argmax_macs", "argmax_vs_target", "expected_macs",
            "projection_filters_changed", "projection_moved_share", "params")}
        state["searches"][name]["mixture"] = s["mixture"]
        p = _paths(a, name)
        if not os.path.exists(p["init"]):
            import shutil
            shutil.copyfile(os.path.join(out_dir, "derived.json"), p["spec"])
            shutil.copyfile(os.path.join(out_dir, "derived_init.npz"), p["init"])
    if done("search"):
        return 0
    # 3. baselines
    if not os.path.exists(base_info):
        t0 = time.time()
        write_json(base_info, round_floats(write_baselines(a)))
        seconds.record("baselines", time.time() - t0)
    state["baselines"] = _load(base_info)
    if done("baselines"):
        return 0
    # 4. distillation
    for m in models(a):
        p = _paths(a, m["name"])
        if not os.path.exists(os.path.join(p["train"], "model_card.json")):
            seconds.record(f"distill/{m['name']}", run_stage(m["name"], train_args(a, m),
                                                             os.path.join(logs, f"distill_{m['name']}.log")))
        report()
    if done("distill"):
        return 0
    # 5. evaluation
    for m in models(a):
        p = _paths(a, m["name"])
        if not os.path.exists(p["eval"]):
            seconds.record(f"eval/{m['name']}", run_stage(
                m["name"], eval_args(a, p["spec"], os.path.join(p["train"], "weights.npz"), p["eval"]),
                os.path.join(logs, f"eval_{m['name']}.log")))
        state["evals"][m["name"]] = _load(p["eval"])
    if done("evaluate"):
        return 0
    # 6. latency
    lat_path = os.path.join(a.work_dir, "latency.json")
    if a.latency_rounds:
        if os.path.exists(lat_path):
            state["latency"] = _load(lat_path)
        specs = {m["name"]: _paths(a, m["name"])["spec"] for m in models(a)}
        if set(specs) - set(state["latency"]):
            import zoo
            from benchmarks.kernel_ablation import measure_latency
            t0 = time.time()
            state["latency"] = measure_latency({"efficientnet_lite0": zoo.spec_path("efficientnet_lite0"), **specs},
                                               a.latency_rounds)
            write_json(lat_path, state["latency"])
            seconds.record("latency", time.time() - t0)
    report()
    print(json.dumps(_load(a.out)["searched_vs_baselines"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
