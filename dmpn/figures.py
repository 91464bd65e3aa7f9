"""Figures of scoring results (matplotlib, Agg backend, PNG files).

- :func:`bar_chart`: SAD or MSE per method in the style of the paper's Figs. 2 and 3 -- the mean
  over images with error bars (one standard deviation) and the per-image values, grouped by image.
- :func:`qualitative_grid`: like the paper's Fig. 4 -- per image: the image, its trimap, each
  method's matte and the ground truth.
- :func:`make_figures`: all of them for a list of ``dmpn.evaluate.MethodResult``.
- :func:`training_curves`: a `caffe train` log's loss (and test outputs) and learning rate by
  iteration (``dmpn.train_log``).
"""
from __future__ import annotations

import os

import numpy as np

__all__ = ["bar_chart", "qualitative_grid", "make_figures", "training_curves"]

_LABELS = {"sad": "SAD (/1000)", "mse": "MSE (x1000)", "grad": "Grad (/1000)", "conn": "Conn (/1000)"}
_SCALE = {"sad": 1.0, "mse": 1000.0, "grad": 1.0, "conn": 1.0}


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    """``fig`` as a PNG at ``path``, atomically: no half-drawn figure under its name, and no
    temporary file left where savefig fails (imageio.atomic_write)."""
    from dmpn.imageio import atomic_write
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"), suffix=".png")


def _mark_missing(ax, x, values, text="n/a"):
    """A bar with no value (NaN: no image scored, or none of this name) is drawn as nothing,
    which reads as 0: write ``text`` where it would stand."""
    for xi, v in zip(np.atleast_1d(x), np.atleast_1d(values)):
        if not np.isfinite(v):
            ax.text(xi, 0, text, ha="center", va="bottom", rotation=90, fontsize=7, color="0.4")


def bar_chart(results, metric: str, path) -> str:
    """Two panels: mean +- std per method (Fig. 2), and per image grouped by method (Fig. 3).
    A score that is NaN (an image not scored, or a method without any) is marked "n/a"."""
    plt = _plt()
    results = list(results)
    scale, label = _SCALE[metric], _LABELS[metric]
    names = sorted({n for r in results for n in r.per_image})
    methods = [r.name for r in results]
    colors = plt.get_cmap("tab10")(np.arange(len(results)) % 10)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(4 + 0.3 * len(methods) + max(6, 0.5 * len(names) * max(1, len(methods)) / 2), 4.2),
                                   gridspec_kw={"width_ratios": [1, 3]})
    # MethodResult's mean and std: over the images scored (NaN where none was)
    means = np.array([r.mean()[metric] for r in results], dtype=np.float64) * scale
    stds = np.array([r.std()[metric] for r in results], dtype=np.float64) * scale
    x = np.arange(len(methods))
    ax1.bar(x, np.nan_to_num(means), yerr=np.nan_to_num(stds), capsize=4, color=colors)
    _mark_missing(ax1, x, means)
    ax1.set_xticks(x)
    ax1.set_xticklabels(methods, rotation=30, ha="right")
    ax1.set_ylabel(label)
    ax1.set_title(f"mean {metric.upper()} (error bars: 1 std)")
    width = 0.8 / max(1, len(results))
    xi = np.arange(len(names))
    for k, r in enumerate(results):
        vals = [r.per_image.get(n, {}).get(metric, np.nan) for n in names]
        vals = np.array(vals, dtype=np.float64) * scale
        xk = xi + (k - (len(results) - 1) / 2) * width
        ax2.bar(xk, np.nan_to_num(vals), width, label=r.name, color=colors[k])
        _mark_missing(ax2, xk, vals)
    ax2.set_xticks(xi)
    ax2.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
    ax2.set_ylabel(label)
    ax2.set_title(f"{metric.upper()} per image")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return os.fspath(path)


def _thumb(a, max_side=320):
    step = max(1, int(np.ceil(max(a.shape[:2]) / max_side)))
    return a[::step, ::step]


def qualitative_grid(results, path, gt_dir, trimap_dir, images_dir=None, rows: int = 4,
                     names=None) -> str:
    """Rows of image | trimap | each method's matte | ground truth (Fig. 4 style)."""
    from dmpn.imageio import list_images, read_alpha, read_image, read_trimap
    plt = _plt()
    results = list(results)
    gts, tris = list_images(gt_dir), list_images(trimap_dir)
    imgs = list_images(images_dir) if images_dir else {}
    mattes = [r.paths or list_images(r.folder) for r in results]  # the PNGs scored
    if names is None:
        common = set(gts)
        for m in mattes:
            common &= set(m)
        names = sorted(common)[:max(1, rows)]
    cols = (["image"] if imgs else []) + ["trimap"] + [r.name for r in results] + ["ground truth"]
    fig, axes = plt.subplots(len(names), len(cols), figsize=(2.2 * len(cols), 1.9 * max(1, len(names))),
                             squeeze=False)
    for i, n in enumerate(names):
        panels = []
        if imgs:
            panels.append(read_image(imgs[n]) if n in imgs else None)
        panels.append(read_trimap(tris[n]) / 255.0 if n in tris else None)
        panels += [read_alpha(m[n]) if n in m else None for m in mattes]
        panels.append(read_alpha(gts[n]))
        for j, (ax, p) in enumerate(zip(axes[i], panels)):
            if p is not None:
                p = _thumb(p)
                ax.imshow(p, cmap=None if p.ndim == 3 else "gray", vmin=0, vmax=1,
                          interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=9)
            if j == 0:
                ax.set_ylabel(n, fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return os.fspath(path)


def make_figures(results, out_dir, gt_dir, trimap_dir, images_dir=None, rows: int = 4) -> list:
    """sad.png, mse.png and qualitative.png in ``out_dir``; returns the paths written."""
    out_dir = os.fspath(out_dir)
    paths = [bar_chart(results, "sad", os.path.join(out_dir, "sad.png")),
             bar_chart(results, "mse", os.path.join(out_dir, "mse.png")),
             qualitative_grid(results, os.path.join(out_dir, "qualitative.png"), gt_dir, trimap_dir,
                              images_dir=images_dir, rows=rows)]
    return paths


def training_curves(log, path, title: str = "") -> str:
    """``log`` (a dmpn.train_log.TrainingLog) as a PNG: the training loss as logged (faint) and
    its running mean over 10 points, the test outputs whose name says loss beside it (with
    their weighted total, on the training loss's scale, where the net has several losses or a
    loss weight other than 1), the learning rate on a second axis where it changes, and any
    other test output (an accuracy, a SAD) in a panel of its own below."""
    plt = _plt()
    # Keys are "net #K NAME" (and " #I" for a blob's later values): NAME says what it is.
    losses = {k: v for k, v in log.test.items() if "loss" in k.split()[2]}
    others = {k: v for k, v in log.test.items() if k not in losses}
    fig, axes = plt.subplots(2 if others else 1, 1, figsize=(7, 6.5 if others else 4), sharex=True,
                             squeeze=False)
    ax = axes[0, 0]
    its = np.array([p[0] for p in log.train_loss], float)
    loss = np.array([p[1] for p in log.train_loss], float)
    lone = "." if len(its) < 2 else None  # a single point is no line
    if len(its):
        ax.plot(its, loss, color="tab:blue", alpha=0.3, lw=0.8, marker=lone, label="training loss")
    if len(loss) >= 10:
        mean = np.convolve(loss, np.ones(10) / 10, mode="valid")
        ax.plot(its[9:], mean, color="tab:blue", lw=1.5, label="training loss, mean of 10")
    colours = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"][1:] * 4)  # blue is training's

    def draw_tests(axis, series):
        for name, pts in series.items():
            axis.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=3, lw=1, color=next(colours),
                      label=f"test {name}")
    draw_tests(ax, losses)
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    rates = {p[1] for p in log.learning_rate}
    if len(rates) > 1:  # a constant rate (the paper's) says nothing drawn
        ax2 = ax.twinx()
        ax2.step([p[0] for p in log.learning_rate], [p[1] for p in log.learning_rate], where="post",
                 color="tab:gray", lw=1, label="learning rate")
        ax2.set_ylabel("learning rate")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    elif rates:
        lr = f"lr {next(iter(rates)):g}"
        title = f"{title} ({lr})" if title else lr
    if handles:
        ax.legend(handles, labels, fontsize=8, loc="upper right")
    ax.set_title(title)
    if others:
        low = axes[1, 0]
        draw_tests(low, others)
        low.set_ylabel("test outputs")
        low.grid(alpha=0.3)
        low.legend(fontsize=8, loc="best")
    axes[-1, 0].set_xlabel("iteration")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return os.fspath(path)
