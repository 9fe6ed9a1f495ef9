"""Draw the study's pipeline diagram for the book's introduction (writes pipeline.png beside this file).

Run it with the project's environment after changing the pipeline:
``.venv/bin/python book/figures/make_pipeline_figure.py``. The PNG is committed (it is small) so
that building the book does not depend on running this script.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

# (column, row, title, detail, chapter): preprocessing on row 1, learning on rows 0 and -1.
BOXES = {
    "ct": (0, 1, "CT scan", "HU volume, LPS axes;\nmanifest row with\n24 sparse labels", "1"),
    "seg": (1, 1, "Lung segmentation", "conservative: -570 HU,\nclosing / opening;\nrefined: watershed + top-hat", "2"),
    "grid": (2, 1, "Rescale + augment", "512x512x432 -> 256x256x216;\n27 rotations\n(-5°, 0, +5° per axis)", "3"),
    "proj": (3, 1, "Projections", "whole scan: 3 axes, grey;\n6 sub-regions x 3 HU windows\n-> RGB-like images", "3"),
    "sign": (2, 0, "Sign-labelling CNN", "4 signs per sub-region\n(sub-region images)", "5"),
    "dis": (3, 0, "Disease CNN", "CPA vs control\n(whole-scan images)", "4"),
    "cam": (2, -1, "Grad-CAM maps", "where each sign is;\nscored on phantom truth", "6"),
    "surv": (3, -1, "Survival CNN", "2-year survival\n(whole-scan images)", "7"),
}
EDGES = [("ct", "seg"), ("seg", "grid"), ("grid", "proj"), ("proj", "dis"), ("proj", "sign"),
         ("sign", "cam"), ("dis", "surv")]
WIDTH, HEIGHT, DX, DY = 2.55, 1.3, 2.9, 1.75
GAP = 0.07


def centre(name):
    col, row = BOXES[name][:2]
    return col * DX + WIDTH / 2, row * DY + HEIGHT / 2


def main(out=Path(__file__).with_name("pipeline.png")):
    fig, ax = plt.subplots(figsize=(11, 5.6))
    for name, (col, row, title, detail, chapter) in BOXES.items():
        x, y = col * DX, row * DY
        colour = "#dbe9f6" if row == 1 else "#fde7c8"
        ax.add_patch(FancyBboxPatch((x, y), WIDTH, HEIGHT, boxstyle="round,pad=0.04",
                                    facecolor=colour, edgecolor="#3b4a5a", linewidth=1.2))
        ax.text(x + WIDTH / 2, y + HEIGHT - 0.2, title, ha="center", va="center",
                fontsize=10.5, weight="bold")
        ax.text(x + WIDTH / 2, y + HEIGHT / 2 - 0.17, detail, ha="center", va="center", fontsize=8)
        ax.text(x + WIDTH - 0.08, y + 0.1, f"ch. {chapter}", ha="right", va="bottom", fontsize=7,
                color="#5a6a7a")
    for a, b in EDGES:
        (xa, ya), (xb, yb) = centre(a), centre(b)
        if ya == yb:    # same row: side to side
            sign = 1 if xb > xa else -1
            start, end = (xa + sign * (WIDTH / 2 + GAP), ya), (xb - sign * (WIDTH / 2 + GAP), yb)
        elif xa == xb:  # same column: bottom to top
            start, end = (xa, ya - HEIGHT / 2 - GAP), (xb, yb + HEIGHT / 2 + GAP)
        else:           # down and to the left: corner to corner
            start, end = (xa - WIDTH / 2 + 0.3, ya - HEIGHT / 2 - GAP), (xb + WIDTH / 2 - 0.3, yb + HEIGHT / 2 + GAP)
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14,
                                     color="#3b4a5a", linewidth=1.3))
    ax.text(0, 1 * DY + HEIGHT + 0.2, "Preprocessing: one set of images per scan", fontsize=10,
            color="#2c5d8a")
    ax.text(0, 0.35, "Learning from the images:\nCNNs trained on binary labels only\n"
            "(per scan, or per sub-region)", fontsize=10, color="#a0600f", va="bottom")
    ax.set_xlim(-0.2, 3 * DX + WIDTH + 0.2)
    ax.set_ylim(-DY - 0.2, DY + HEIGHT + 0.6)
    ax.set_aspect("equal")
    ax.axis("off")
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


if __name__ == "__main__":
    print(main())
