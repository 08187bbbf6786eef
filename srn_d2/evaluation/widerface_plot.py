"""Precision-recall figure of the three WIDER FACE settings."""
from typing import Mapping

from ..utils.file_io import save_figure
from .widerface_protocol import PRCurve


def plot_pr_curves(curves: Mapping[str, PRCurve], path: str, title: str = "WIDER FACE") -> None:
    """Draw each setting's PR curve (legend: AP) into an image file (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    for setting, curve in curves.items():
        ax.plot(curve.recall, curve.precision, linewidth=2, label=f"{setting} (AP {curve.ap:.3f})")
    ax.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.01), title=title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
