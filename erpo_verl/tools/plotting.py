"""Side-by-side plots of training runs: one panel per metric, one line per run (PNG, and SVG if asked)."""

from __future__ import annotations

from pathlib import Path

from erpo_verl.tools.metrics_io import series

# (metric key in verl's names, panel title, y-axis label); panels whose metric no run logged are left out
DEFAULT_PANELS = [
    ("critic/score/mean", "reward (critic/score/mean)", "mean reward per response"),
    ("actor/entropy", "entropy (actor/entropy)", "mean token entropy (nats)"),
    ("response_length/mean", "response length (response_length/mean)", "tokens per response"),
    ("erpo/gate_std", "erpo/gate_std", "std of the entropy gate"),
    ("erpo/progress_abs_mean", "erpo/progress_abs_mean", "mean |progress term|"),
    ("erpo/sign_flip_frac", "erpo/sign_flip_frac", "fraction of tokens"),
]


def plot_runs(
    runs: dict[str, list[dict[str, float]]],
    out_png: str | Path,
    panels: list[tuple[str, ...]] | None = None,
    title: str | None = None,
    svg: bool = False,
    reference_lines: dict[str, tuple[float, str]] | None = None,
    note: str | None = None,
) -> Path:
    """Draw ``runs`` (name -> per-step records) into ``out_png``; returns the path.

    ``panels``: (metric, title[, y label]) tuples. ``reference_lines``: metric -> (value, label), a dashed
    horizontal line in that panel (e.g. the response-length cap). A panel in which some runs have no data
    says which, so a missing line is never mistaken for a line hidden behind another. ``note``: a line of
    small text under the title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in (panels or DEFAULT_PANELS) if any(series(r, p[0])[0] for r in runs.values())]
    if not panels:
        raise ValueError("none of the runs has any of the metrics to plot")
    reference_lines = reference_lines or {}
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    colors = {name: f"C{i % 10}" for i, name in enumerate(runs)}  # one colour per run in every panel
    for ax, (key, label, *ylabel) in zip(axes.flat, panels):
        missing = []
        for name, records in runs.items():
            steps, values = series(records, key)
            if steps:
                ax.plot(steps, values, marker="o", markersize=2.5, linewidth=1.4, label=name, color=colors[name])
            else:
                missing.append(name)
        if key in reference_lines:
            value, text = reference_lines[key]
            ax.axhline(value, color="0.35", linestyle="--", linewidth=1.0)
            low, high = ax.get_ylim()
            ax.set_ylim(low, max(high, value + 0.12 * (max(high, value) - low)))  # room for the label
            ax.annotate(text, xy=(0.01, value), xycoords=("axes fraction", "data"), fontsize=8, color="0.25",
                        va="bottom")
        if missing:
            ax.text(0.99, 0.02, f"not logged by: {', '.join(missing)}", transform=ax.transAxes, ha="right",
                    va="bottom", fontsize=8, color="0.35")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("training step")
        if ylabel:
            ax.set_ylabel(ylabel[0], fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=9)
    top = 1.0
    if title:
        fig.suptitle(title, fontsize=12)
        top -= 0.07 / rows
    if note:
        fig.text(0.5, top - 0.035 / rows, note, ha="center", va="top", fontsize=8.5, color="0.25", wrap=True)
        top -= 0.06 / rows
    fig.tight_layout(rect=(0, 0, 1, top))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    if svg:
        fig.savefig(out_png.with_suffix(".svg"))
    plt.close(fig)
    return out_png


def plot_bands(
    panels: list[tuple[str, dict[str, tuple[list[int], list[float], list[float]]]]],
    out_png: str | Path,
    title: str,
    cols: int = 3,
) -> Path:
    """Mean curves with a shaded band over seeds: one panel per metric, one colour per method in every panel.

    ``panels``: (panel title, {method: (steps, means, half_widths)}); the caller says what the band is (a standard
    deviation, a standard error) in the title or the legend. Methods with no steps in a panel are left out of it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not panels:
        raise ValueError("nothing to plot: no panels")
    cols = min(cols, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.3 * cols, 3.8 * rows), squeeze=False)
    names = list(dict.fromkeys(name for _, lines in panels for name in lines))
    colors = {name: f"C{i % 10}" for i, name in enumerate(names)}
    for ax, (label, lines) in zip(axes.flat, panels):
        for name, (xs, means, half) in lines.items():
            if not xs:
                continue
            ax.plot(xs, means, color=colors[name], linewidth=1.5, label=name)
            ax.fill_between(xs, [m - h for m, h in zip(means, half)], [m + h for m, h in zip(means, half)],
                            color=colors[name], alpha=0.15, linewidth=0)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
