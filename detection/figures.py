"""The predictions figure of a detection run: images with predicted boxes (red, labelled with class and score) over
the ground truth (green). Matplotlib (Agg), written atomically through ``reports.plots``."""
from __future__ import annotations

from reports.plots import pyplot, save_figure

FIGURE_SCORE = 0.3  # predictions scoring below are not drawn


def draw_predictions(images, dets, records, class_names, path: str, title: str) -> None:
    """A grid of images (four columns at most) with predictions and ground truth, written as one PNG.

    Args:
        images: uint8 (H, W, 3) images.
        dets: per image ``(boxes, scores, classes)`` in original pixels (``detection.predict.predict``).
        records: the images' ``inputs.voc.Record`` s (ground truth boxes, titles from their ids).
        class_names: label names.
        path: the PNG path.
        title: the figure title.
    """
    plt = pyplot()
    n = len(images)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, (boxes, scores, classes), r in zip(axes.flat, images, dets, records):
        ax.imshow(image)
        for (x0, y0, x1, y1) in r.boxes:
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", lw=1.5))
        for (x0, y0, x1, y1), s, c in zip(boxes, scores, classes):
            if s < FIGURE_SCORE:
                continue
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="red", lw=1.5))
            ax.text(x0, y0, f"{class_names[c]} {s:.2f}", color="white", fontsize=7, va="bottom",
                    bbox={"facecolor": "red", "alpha": 0.7, "pad": 1, "lw": 0})
        ax.set_title(r.id, fontsize=8)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)
    plt.close(fig)
