"""Matplotlib (Agg) figures written by the search recipes. Every function writes one PNG atomically."""
from __future__ import annotations

import io

import numpy as np

from common.io import atomic_write


def save_figure(fig, path: str, dpi: int = 110) -> None:
    """Writes a Matplotlib figure as a PNG (tight bounding box) atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (imported on first use)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def choice_colours(labels: list[str]) -> dict:
    """One colour per choice label, shared by every meta-kernel plot: "pruned" dark grey, kernel sizes along
    viridis from small (purple) to large (yellow)."""
    plt = pyplot()
    kernels = [label for label in labels if label != "pruned"]
    ramp = plt.cm.viridis(np.linspace(0.1, 0.85, max(len(kernels), 1)))
    out = {label: ramp[i] for i, label in enumerate(kernels)}
    out["pruned"] = "dimgrey"
    return out


def kernel_distribution(layers: list[str], counts: np.ndarray, labels: list[str], path: str, title: str) -> None:
    """Stacked bars of filters per choice for every searchable layer (the metaKernel paper's Fig. 6).

    Args:
        layers: layer names (x axis).
        counts: ``(layers, choices)`` filter counts.
        labels: choice names, e.g. ``["pruned", "3×3", "5×5", "7×7"]``.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(layers) + 2), 4))
    bottom = np.zeros(len(layers))
    colours = choice_colours(labels)
    for j, label in enumerate(labels):
        colour = "lightgrey" if label == "pruned" else colours[label]  # a light fill reads as "absent"
        ax.bar(range(len(layers)), counts[:, j], bottom=bottom, label=label, color=colour, edgecolor="white",
               linewidth=0.3)
        bottom += counts[:, j]
    ax.set_xticks(range(len(layers)), layers, rotation=60, ha="right", fontsize=9)
    ax.set_ylabel("depthwise filters")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=9, ncols=min(len(labels), 6))
    save_figure(fig, path)
    plt.close(fig)


def fgnas_layers(rows: list[dict], path: str, title: str) -> None:
    """FGNAS's searched architecture per layer (the paper's Fig. 6–7): left, every channel of the backbone as pruned
    or by how many operations produce it (2 or more: a compositional channel); right, the channels each operation
    produces (the derived branches; their sum is the width the next layer reads).

    Args:
        rows: :meth:`search.fgnas_space.FgnasSpace.summary` rows.
    """
    plt = pyplot()
    names = [r["layer"] for r in rows]
    x = np.arange(len(rows))
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(9.0, 0.9 * len(rows) + 4), 4.2))
    hist = np.array([r["ops_per_channel"] for r in rows])
    m = hist.shape[1] - 1
    ramp = plt.cm.Blues(np.linspace(0.45, 0.95, max(m, 1)))
    bottom = np.zeros(len(rows))
    for n in range(m + 1):
        label = "pruned" if n == 0 else f"{n} operation{'s' if n > 1 else ''}"
        colour = "lightgrey" if n == 0 else ramp[n - 1]
        left.bar(x, hist[:, n], bottom=bottom, color=colour, label=label, edgecolor="white", linewidth=0.3)
        bottom += hist[:, n]
    left.set_ylabel("backbone channels")
    left.set_title("channels: pruned, or produced by n operations", fontsize=10)
    ops = list(rows[0]["per_op"])
    colours = plt.cm.tab10(np.arange(len(ops)) % 10)
    bottom = np.zeros(len(rows))
    for j, op in enumerate(ops):
        counts = np.array([r["per_op"][op] for r in rows])
        right.bar(x, counts, bottom=bottom, color=colours[j], label=op, edgecolor="white", linewidth=0.3)
        bottom += counts
    right.set_ylabel("channels (derived branches)")
    right.set_title("channels per operation (kernel/activation)", fontsize=10)
    for ax in (left, right):
        ax.set_xticks(x, names, rotation=60, ha="right", fontsize=9)
        ax.legend(fontsize=8, ncols=2)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)
    plt.close(fig)


def alpha_trajectories(history: list[dict], layers: list[str], labels: list[str], path: str,
                       target: float | None = None, cost: str = "macs") -> None:
    """Mean choice probabilities per layer over the search epochs (one panel per layer), plus the expected and the
    argmax cost vs target: MACs (``cost="macs"``) or the latency table's milliseconds (``cost="ms"``)."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator
    epochs = [h["epoch"] for h in history]
    n = len(layers) + 1
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), squeeze=False, sharex=True)
    colours = choice_colours(labels)
    for i, name in enumerate(layers):
        ax = axes[i // cols][i % cols]
        probs = np.array([h["probs"][i] for h in history])  # (epochs, choices); layers without "None" have fewer
        for j, label in enumerate(labels[len(labels) - probs.shape[1]:]):
            ax.plot(epochs, probs[:, j], label=label, color=colours[label], linewidth=1.6,
                    linestyle="--" if label == "pruned" else "-")
        ax.set_title(name, fontsize=10)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax = axes[(n - 1) // cols][(n - 1) % cols]
    unit, scale, title = ("ms", 1.0, "latency (ms, table)") if cost == "ms" else ("macs", 1e6, "MACs (M)")
    label = "latency" if cost == "ms" else "MACs"
    ax.plot(epochs, [h[f"expected_{unit}"] / scale for h in history], color="tab:blue", label=f"E[{label}]")
    ax.plot(epochs, [h[f"argmax_{unit}"] / scale for h in history], color="tab:orange", label=f"argmax {label}")
    if target:
        ax.axhline(target / scale, color="k", linestyle=":", linewidth=1, label="target")
    ax.tick_params(labelsize=9)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title + (" and argmax top-1" if "val_acc_argmax" in history[-1] else ""), fontsize=10)
    handles, texts = ax.get_legend_handles_labels()
    if "val_acc_argmax" in history[-1]:
        acc = ax.twinx()
        acc.plot(epochs, [h.get("val_acc_argmax", np.nan) for h in history], color="tab:red", marker=".",
                 label="argmax top-1")
        acc.set_ylim(0, 1)
        acc.tick_params(labelsize=9)
        h2, t2 = acc.get_legend_handles_labels()
        handles, texts = handles + h2, texts + t2
    ax.legend(handles, texts, fontsize=8, loc="best")
    for k in range(n, rows * cols):
        axes[k // cols][k % cols].axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("epoch", fontsize=9)
    widest = max(range(len(layers)), key=lambda i: len(history[0]["probs"][i]))
    handles, texts = axes[widest // cols][widest % cols].get_legend_handles_labels()
    fig.legend(handles, texts, loc="lower center", ncols=len(texts), fontsize=10, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle("mean choice probability per layer (softmax α) over epochs", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    save_figure(fig, path)
    plt.close(fig)


def evolution_curve(results: dict, path: str, chance: float | None = None) -> None:
    """SPOS Fig. 3: best and top-k mean validation top-1 per iteration, one line pair per search kind; ``chance``
    (1 / classes) drawn for scale."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colours = {"evolution": "tab:red", "random": "tab:blue"}
    for kind, r in results.items():
        it = [h["iteration"] for h in r["history"]]
        c = colours.get(kind, None)
        ax.plot(it, [h["best_acc"] for h in r["history"]], "-o", ms=3, color=c, label=f"{kind}: best")
        ax.plot(it, [h["topk_mean_acc"] for h in r["history"]], "--", color=c, label=f"{kind}: top-k mean")
    if chance:
        ax.axhline(chance, color="grey", linestyle=":", linewidth=1, label=f"chance ({chance:.3g})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("iteration")
    ax.set_ylabel("validation top-1")
    ax.set_title("supernet weights, BatchNorm recalibrated per candidate", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    save_figure(fig, path)
    plt.close(fig)


def population(space, results: dict, max_macs: float | None, path: str, chance: float | None = None) -> None:
    """Every evaluated candidate on the accuracy-vs-MACs plane, the final top-k marked, the MACs limit and
    ``chance`` (1 / classes) drawn."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    markers = {"evolution": ("tab:red", "o"), "random": ("tab:blue", "x")}
    for kind, r in results.items():
        c, m = markers.get(kind, ("gray", "."))
        cands = [t for t in r.get("all", [])] or r["top"]
        ax.scatter([t["macs"] / 1e6 for t in cands], [t["acc"] for t in cands], s=10, c=c, marker=m, alpha=0.5,
                   label=f"{kind} ({r['evaluated']} evaluated)")
        ax.scatter([t["macs"] / 1e6 for t in r["top"]], [t["acc"] for t in r["top"]], s=40, facecolors="none",
                   edgecolors=c, label=f"{kind} top-k")
    if max_macs:
        ax.axvline(max_macs / 1e6, color="k", ls=":", label="MACs limit")
    if chance:
        ax.axhline(chance, color="grey", ls=":", linewidth=1, label=f"chance ({chance:.3g})")
    ax.set_xlabel("MACs (M)")
    ax.set_ylabel("validation top-1")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)
    plt.close(fig)
