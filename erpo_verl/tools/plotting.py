"""Side-by-side plots of training runs: one panel per metric, one line per run (PNG, and SVG if asked)."""

from __future__ import annotations

from pathlib import Path

from erpo_verl.tools.metrics_io import series

# (metric key in verl's names, panel title); panels whose metric no run logged are left out
DEFAULT_PANELS = [
    ("critic/score/mean", "reward (critic/score/mean)"),
    ("actor/entropy", "entropy (actor/entropy)"),
    ("response_length/mean", "response length"),
    ("erpo/gate_std", "erpo/gate_std"),
    ("erpo/progress_abs_mean", "erpo/progress_abs_mean"),
    ("erpo/sign_flip_frac", "erpo/sign_flip_frac"),
]


def plot_runs(
    runs: dict[str, list[dict[str, float]]],
    out_png: str | Path,
    panels: list[tuple[str, str]] | None = None,
    title: str | None = None,
    svg: bool = False,
) -> Path:
    """Draw ``runs`` (name -> per-step records) into ``out_png``; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in (panels or DEFAULT_PANELS) if any(series(r, p[0])[0] for r in runs.values())]
    if not panels:
        raise ValueError("none of the runs has any of the metrics to plot")
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    colors = {name: f"C{i % 10}" for i, name in enumerate(runs)}  # one colour per run in every panel
    for ax, (key, label) in zip(axes.flat, panels):
        for name, records in runs.items():
            steps, values = series(records, key)
            if steps:
                ax.plot(steps, values, marker="o", markersize=2.5, linewidth=1.4, label=name, color=colors[name])
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    if svg:
        fig.savefig(out_png.with_suffix(".svg"))
    plt.close(fig)
    return out_png
