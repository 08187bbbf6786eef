"""Precision-recall figures: the three WIDER FACE settings, or any labelled curves."""

from typing import Mapping, Sequence, Tuple

from ..utils.file_io import save_figure
from .widerface_protocol import PRCurve


def plot_pr_curves(curves: Mapping[str, PRCurve], path: str, title: str = "WIDER FACE") -> None:
    """Draw each setting's PR curve (legend: AP) into an image file (Agg backend)."""
    plot_curves(
        {
            f"{setting} (AP {curve.ap:.3f})": (curve.recall, curve.precision)
            for setting, curve in curves.items()
        },
        path,
        title,
    )


def plot_curves(
    curves: Mapping[str, Tuple[Sequence[float], Sequence[float]]],
    path: str,
    title: str,
    size: Tuple[float, float] = (5, 5),
) -> None:
    """Draw ``{legend: (recall, precision)}`` into one image file (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    for label, (recall, precision) in curves.items():
        ax.plot(recall, precision, linewidth=2, label=label)
    ax.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.01), title=title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
