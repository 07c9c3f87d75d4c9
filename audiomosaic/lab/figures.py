"""Every plot of the notebooks and the paper (Figs. 1-4) as a function of arrays or result tables.

Functions build a ``matplotlib.figure.Figure`` directly (no pyplot state, so nothing leaks between calls and a
notebook displays the returned object) under one fixed style. :func:`save` writes byte-stable files: PDFs get no
creation date, SVGs a fixed hash salt and no date, PNGs carry only the matplotlib version, so the same inputs give
the same bytes in every process (docs/notebooks.md §10; tested by hashing).

Spectrograms are (T, F) arrays, time first (docs/style.md 3); they are drawn with time on the x axis. A token mask is a
(N,) bool array, True where the patch is dropped, over the time-major (n_time, n_freq) patch grid.

Paper figures read the committed tables in ``paper_figures/results/`` through :mod:`audiomosaic.repro.results`; a
missing table skips its figure with a printed note (:func:`paper_figure`, CLI ``python -m audiomosaic figures``).
"""
from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure

from audiomosaic import masking
from audiomosaic.config import FrontendConfig
from audiomosaic.frontend import fbank
from audiomosaic.repro import results
from audiomosaic.repro.stats import t_quantile

FORMATS = ("png", "pdf", "svg")
STYLE: dict[str, Any] = {
    **sns.axes_style("whitegrid"),
    "font.family": "DejaVu Sans",  # bundled with matplotlib: the same glyphs on every machine
    "font.size": 9, "axes.titlesize": 8.5, "axes.labelsize": 9, "legend.fontsize": 8,
    "xtick.labelsize": 8, "ytick.labelsize": 8,
    "figure.dpi": 100, "savefig.dpi": 150,
    "svg.hashsalt": "audiomosaic",  # SVG element ids are random otherwise
    "pdf.fonttype": 42,
}
PALETTE = sns.color_palette("colorblind")


@contextlib.contextmanager
def style() -> Iterator[None]:
    """The house plotting style (applied around figure creation and saving)."""
    with matplotlib.rc_context(STYLE):
        yield


def new_figure(nrows: int = 1, ncols: int = 1, width: float = 6.0, height: float = 3.0,
               **subplot_kw: Any) -> tuple[Figure, np.ndarray]:
    """A constrained-layout Figure and its (nrows, ncols) array of axes."""
    with style():
        fig = Figure(figsize=(width, height), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, **subplot_kw)
    return fig, axes


def save(fig: Figure, stem: str | Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Write ``stem.<fmt>`` for each format, byte-identical across runs; returns the paths.

    Raises:
        ValueError: an unknown format.
    """
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown figure format(s) {bad}; allowed: {', '.join(FORMATS)}")
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    meta = {"png": {}, "pdf": {"CreationDate": None, "ModDate": None}, "svg": {"Date": None}}
    paths = []
    with style():
        for fmt in formats:
            path = stem.with_suffix(f".{fmt}")
            fig.savefig(path, format=fmt, metadata=meta[fmt])
            paths.append(path)
    return paths


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes (for IPython ``Image``: displays whatever the matplotlib backend)."""
    buf = io.BytesIO()
    with style():
        fig.savefig(buf, format="png")
    return buf.getvalue()


def show(fig: Figure | None) -> Any:
    """Display object for a notebook cell (an IPython PNG ``Image``; None stays None), whatever the backend:
    a bare ``Figure`` that was not made by pyplot has no rich display of its own."""
    if fig is None:
        return None
    from IPython.display import Image

    return Image(data=png_bytes(fig))


# ------------------------------------------------------------------------------------------ audio and masks

def _np(x: Any) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)


def plot_waveform(wav: Any, sample_rate: int = 16000, ax: Any = None, title: str = "waveform") -> Figure:
    """(S,) waveform against time in seconds."""
    if ax is None:
        fig, axes = new_figure(height=2.0)
        ax = axes[0, 0]
    w = _np(wav).reshape(-1)
    ax.plot(np.arange(len(w)) / sample_rate, w, lw=0.5, color=PALETTE[0])
    ax.set(xlabel="time (s)", ylabel="amplitude", title=title, xlim=(0, len(w) / sample_rate))
    return ax.figure


def _mask_image(mask: Any, grid: tuple[int, int]) -> np.ndarray:
    """(N,) bool token mask -> (n_freq, n_time) patch image (freq rows, time columns) for imshow."""
    return _np(mask).astype(bool).reshape(grid).T  # tokens are time-major: (n_time, n_freq) -> transpose


def draw_spectrogram(ax: Any, spec: Any, title: str = "", mask: Any = None, patch_size: int = 16,
                     frame_shift_ms: float = 10.0) -> None:
    """Draw a (T, F) fbank (time on x); with ``mask`` (N,) grey out the dropped patches and draw the grid."""
    s = _np(spec).squeeze()
    t, f = s.shape
    extent = (0, t * frame_shift_ms / 1000, 0, f)
    ax.imshow(s.T, origin="lower", aspect="auto", cmap="magma", extent=extent, interpolation="nearest")
    if mask is not None:
        grid = (t // patch_size, f // patch_size)
        img = _mask_image(mask, grid)
        shade = np.zeros((*img.shape, 4))
        shade[img] = (0.85, 0.85, 0.85, 0.92)  # dropped patches: near-opaque grey
        ax.imshow(shade, origin="lower", aspect="auto", extent=(0, grid[0] * patch_size * frame_shift_ms / 1000,
                                                                0, grid[1] * patch_size), interpolation="nearest")
        n_keep = int((~_np(mask).astype(bool)).sum())
        title = f"{title}: {n_keep}/{grid[0] * grid[1]} kept"
    ax.set(title=title, xlabel="time (s)", ylabel="mel bin")
    ax.grid(False)


def plot_spectrograms(specs: Mapping[str, Any], masks: Mapping[str, Any] | None = None, patch_size: int = 16,
                      ncols: int = 2, panel_size: tuple[float, float] = (3.6, 2.2)) -> Figure:
    """One panel per named (T, F) spectrogram, optionally with the named (N,) token mask over it."""
    n = len(specs)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = new_figure(nrows, ncols, panel_size[0] * ncols, panel_size[1] * nrows)
    for ax, (name, spec) in zip(axes.flat, specs.items()):
        draw_spectrogram(ax, spec, name, None if masks is None else masks.get(name), patch_size)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    return fig


def demo_clip(seconds: float = 10.24, sample_rate: int = 16000) -> np.ndarray:
    """A deterministic clip with visible time and frequency structure (Fig. 1 needs no data or results).

    A rising chirp, a harmonic tone that switches on and off, and decaying noise bursts; pure numpy, no RNG state.
    """
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    chirp = 0.3 * np.sin(2 * np.pi * (100 * t + 300 * t ** 2 / seconds))  # 100 Hz -> 700 Hz
    gate = (np.sin(2 * np.pi * t / 2.5) > 0).astype(float)
    tone = 0.2 * gate * sum(np.sin(2 * np.pi * 440 * k * t) / k for k in range(1, 6))
    phase = np.sin(12.9898 * np.arange(t.size)) * 43758.5453  # hash-noise: identical on every platform
    burst = 0.15 * (phase - np.floor(phase) - 0.5) * np.exp(-8 * (t % 1.7))
    return (chirp + tone + burst).astype(np.float32)


def plot_clip(wav: Any, spec: Any, sample_rate: int = 16000) -> Figure:
    """A clip's (S,) waveform above its (T, F) log-mel fbank."""
    fig, axes = new_figure(2, 1, 6.0, 4.2)
    plot_waveform(wav, sample_rate, axes[0, 0])
    draw_spectrogram(axes[1, 0], spec, "log-mel fbank (normalised)")
    return fig


def view_mask_dict(grid: tuple[int, int], mode: str = "tf", ratio_time: float = 0.6, ratio_freq: float = 0.4,
                   ratio: float = 0.75, layouts: Sequence[str] = ("paper", "reference"),
                   generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """``{"<layout> view A": (N,) mask, "<layout> view B": ...}``: one example's two view masks per layout."""
    out = {}
    for layout in layouts:
        (_, _, m_a), (_, _, m_b) = masking.view_masks(mode, 1, grid, ratio_time=ratio_time, ratio_freq=ratio_freq,
                                                      ratio=ratio, layout=layout, generator=generator)
        out[f"{layout} view A"], out[f"{layout} view B"] = m_a[0], m_b[0]
    return out


def plot_view_masks(spec_a: Any, spec_b: Any, mask_cfg: Any, patch_size: int = 16,
                    layouts: Sequence[str] = ("paper", "reference"), generator: torch.Generator | None = None
                    ) -> Figure:
    """The two augmented (T, F) views with their masks, one row per layout (``mask_cfg``: a MaskConfig)."""
    s_a, s_b = _np(spec_a).squeeze(), _np(spec_b).squeeze()
    grid = (s_a.shape[0] // patch_size, s_a.shape[1] // patch_size)
    masks = view_mask_dict(grid, mask_cfg.mode, mask_cfg.ratio_time, mask_cfg.ratio_freq, mask_cfg.ratio,
                           layouts, generator)
    specs = {name: (s_a if name.endswith("A") else s_b) for name in masks}
    return plot_spectrograms(specs, masks, patch_size, ncols=2)


def fig1_masking(wav: Any = None, frontend: FrontendConfig = FrontendConfig(), patch_size: int = 16,
                 ratio_time: float = 0.6, ratio_freq: float = 0.4, ratio: float = 0.75, seed: int = 0) -> Figure:
    """Fig. 1 schematic: one spectrogram, unstructured masking and both time-frequency views in both layouts."""
    w = demo_clip(sample_rate=frontend.sample_rate) if wav is None else _np(wav)
    spec = fbank(torch.from_numpy(w), frontend.sample_rate, frontend)  # (T, F)
    grid = (spec.shape[0] // patch_size, spec.shape[1] // patch_size)
    gen = torch.Generator().manual_seed(seed)
    kw = dict(ratio_time=ratio_time, ratio_freq=ratio_freq, ratio=ratio, generator=gen)
    masks = {"unstructured": masking.single_mask("unstructured", 1, grid, **kw)[2][0]}
    views = view_mask_dict(grid, "tf", **kw)
    masks.update({k.replace("view A", "time view").replace("view B", "freq view"): v for k, v in views.items()})
    specs = {"log-mel input": spec, **{k: spec for k in masks}}
    return plot_spectrograms(specs, masks, patch_size, ncols=2)


# ------------------------------------------------------------------------------------------------ training runs

def plot_curves(records: pd.DataFrame | Sequence[Mapping[str, Any]], x: str = "step",
                keys: Sequence[str] = ("loss", "top1")) -> Figure:
    """One panel per metric in ``keys`` present in ``records`` (e.g. the rows of a run's metrics.jsonl)."""
    df = pd.DataFrame(list(records)) if not isinstance(records, pd.DataFrame) else records
    present = [k for k in keys if k in df.columns and df[k].notna().any()]
    if x not in df.columns or not present:
        raise ValueError(f"records need column {x!r} and one of {list(keys)}; got {list(df.columns)}")
    fig, axes = new_figure(1, len(present), 3.2 * len(present), 2.6)
    for ax, key in zip(axes.flat, present):
        d = df[[x, key]].dropna()
        ax.plot(d[x], d[key], marker="o", ms=2, lw=1, color=PALETTE[0])
        ax.set(xlabel=x, ylabel=key, title=key)
    return fig


def plot_bars(df: pd.DataFrame, x: str, y: str, hue: str | None = None, title: str = "",
              ylabel: str | None = None) -> Figure:
    """A (grouped) bar chart of ``y`` by ``x`` (and ``hue``), in table order."""
    fig, axes = new_figure(width=4.5, height=2.8)
    ax = axes[0, 0]
    with style():
        sns.barplot(data=df, x=x, y=y, hue=hue, ax=ax, palette=PALETTE[:df[hue].nunique()] if hue else None,
                    color=None if hue else PALETTE[0], errorbar=None)
    ax.set(title=title, ylabel=ylabel or y)
    return fig


# ------------------------------------------------------------------------------------------------ paper figures
# A table may hold several tasks (one panel each) and several seeds per point (mean, with +-1 s.d. bars).

def _panels(df: pd.DataFrame, width: float = 4.2, height: float = 3.0) -> tuple[Figure, list[tuple[str, Any, Any]]]:
    """One axes per task of ``df``, in table order: (figure, [(task, its rows, axes)])."""
    tasks = list(dict.fromkeys(df["task"].astype(str))) if "task" in df else [""]
    fig, axes = new_figure(1, len(tasks), width * len(tasks), height)
    return fig, [(t, df[df["task"].astype(str) == t] if t else df, ax) for t, ax in zip(tasks, axes.flat)]


def _metric(df: pd.DataFrame) -> str:
    return ", ".join(sorted(map(str, df["metric"].unique()))) if "metric" in df else "value"


def _mean_sd(df: pd.DataFrame, keys: list[str], value: str = "value") -> pd.DataFrame:
    """Mean, s.d. (0 for a single seed) and count of ``value`` per ``keys``, sorted by ``keys``."""
    agg = df.groupby(keys, sort=True)[value].agg(["mean", "std", "count"]).reset_index()
    return agg.assign(std=agg["std"].fillna(0.0))


def _line(ax: Any, df: pd.DataFrame, x: str, label: str, color: Any, dodge: float = 0.0) -> None:
    """Mean ± s.d. over seeds against ``x``; ``dodge`` shifts the points sideways so overlapping bars stay apart."""
    agg = _mean_sd(df, [x])
    ax.errorbar(agg[x] + dodge, agg["mean"], yerr=agg["std"] if (agg["count"] > 1).any() else None, marker="o", ms=3,
                capsize=2, lw=1.2, color=color, label=label)


def fig2_effective_rank(df: pd.DataFrame) -> Figure:
    """Effective rank by pre-training masking (groups) x inference-time masking (bars), one panel per task."""
    fig, panels = _panels(df, 4.5, 2.9)
    for task, d, ax in panels:
        with style():
            sns.barplot(data=d, x="pretrain_masking", y="effective_rank", hue="inference_masking", ax=ax,
                        palette=PALETTE[:d["inference_masking"].nunique()], errorbar="sd", capsize=0.1)
        ax.set(title=task or "effective rank", xlabel="pre-training masking", ylabel="effective rank")
        ax.legend(title="inference masking", loc="best")
    return fig


def fig3_layerwise(df: pd.DataFrame) -> Figure:
    """Linear probes per block (a line per model) plus weighted-sum / attentive probes (dashed / dotted levels)."""
    fig, panels = _panels(df, 5.0, 3.0)
    for task, d, ax in panels:
        for i, (model, m) in enumerate(d.groupby("model", sort=False)):
            color = PALETTE[i % len(PALETTE)]
            _line(ax, m[(m["probe"] == "linear") & m["layer"].notna()].astype({"layer": int}), "layer",
                  f"{model} linear", color)
            for ls, probe in (("--", "weighted"), (":", "attentive")):
                if (m["probe"] == probe).any():
                    ax.axhline(m.loc[m["probe"] == probe, "value"].mean(), ls=ls, color=color, lw=1,
                               label=f"{model} {probe}")
        ax.set(xlabel="block", ylabel=_metric(d), title=task or "layer-wise probes")
        ax.legend(loc="best")
    return fig


def fig4a_masking(df: pd.DataFrame) -> Figure:
    """Downstream metric against mask ratio, one line per masking strategy, one panel per task."""
    fig, panels = _panels(df)
    for task, d, ax in panels:
        groups = list(d.groupby("strategy", sort=False))
        for i, (strategy, g) in enumerate(groups):
            dodge = 0.008 * (i - (len(groups) - 1) / 2)
            _line(ax, g, "mask_ratio", str(strategy), PALETTE[i % len(PALETTE)], dodge)
        ax.set(xlabel="mask ratio", ylabel=_metric(d), title=task or "masking strategy x ratio")
        ax.legend(loc="best", fontsize="small")
    return fig


def fig4b_ratio_grid(df: pd.DataFrame) -> Figure:
    """Heat map of the downstream metric (mean over seeds) over time ratio x frequency ratio, one per task."""
    fig, panels = _panels(df, 4.2, 3.4)
    for task, d, ax in panels:
        table = d.pivot_table(index="ratio_time", columns="ratio_freq", values="value", aggfunc="mean")
        with style():
            sns.heatmap(table, annot=True, fmt=".3g", cmap="viridis", ax=ax, cbar_kws={"label": _metric(d)})
        ax.set(xlabel="frequency mask ratio", ylabel="time mask ratio", title=task or "time/frequency ratio grid")
        ax.invert_yaxis()
    return fig


def fig4c_batch_size(df: pd.DataFrame) -> Figure:
    """Downstream metric against pre-training batch size (log2 axis), one panel per task."""
    fig, panels = _panels(df, 4.0, 3.0)
    for task, d, ax in panels:
        _line(ax, d, "batch_size", _metric(d), PALETTE[0])
        ax.set_xscale("log", base=2)
        sizes = sorted(d["batch_size"].unique())
        ax.set_xticks(sizes, [str(b) for b in sizes])
        ax.set(xlabel="pre-training batch size", ylabel=_metric(d), title=task or "batch size")
    return fig


def ablation_figure(df: pd.DataFrame, ablation: str) -> Figure:
    """The plot of an ``analysis.run_ablation`` table: strategy_ratio (Fig. 4a), tf_ratio_grid (Fig. 4b),
    layout (bars) or batch_size (Fig. 4c)."""
    if ablation == "layout":
        return plot_bars(df, "layout", "value", title="mask layout", ylabel=_metric(df))
    plots = {"strategy_ratio": fig4a_masking, "tf_ratio_grid": fig4b_ratio_grid, "batch_size": fig4c_batch_size}
    if ablation not in plots:
        raise ValueError(f"unknown ablation {ablation!r}; allowed: layout, {', '.join(plots)}")
    return plots[ablation](df)


def fig_alm(df: pd.DataFrame) -> Figure:
    """Audio-language demonstration: each metric's mean over seeds per condition, with 95 % t-intervals."""
    from audiomosaic.alm.report import SHORT, summary_table  # late: the alm package is an optional extra

    summ = summary_table(df)
    conds = [c for c in ("pretrained", "random_init", "no_audio") if f"{c}_mean" in summ]
    fig, axes = new_figure(1, 1, 7.0, 3.0)
    ax, width = axes[0, 0], 0.8 / max(1, len(conds))
    x = np.arange(len(summ))
    for i, c in enumerate(conds):
        err = summ[f"{c}_ci95"].fillna(0.0).to_numpy()
        ax.bar(x + (i - (len(conds) - 1) / 2) * width, summ[f"{c}_mean"], width, yerr=err, capsize=2,
               color=PALETTE[i], label=c.replace("_", " "))
    ax.set_xticks(x, [SHORT[m] for m in summ["metric"]])
    ax.set(ylabel="score on test clips", ylim=(0, None),
           title=f"audio-language adapter on the corpus: mean of {int(summ['n_seeds'].max())} seeds, 95% CI")
    ax.legend(frameon=False)
    return fig


def fig_spoof(df: pd.DataFrame) -> Figure:
    """Spoof detection (``table_spoof``): EER (authors' mode, %) per test set, a bar per model x head (mean over
    seeds, +-1 s.d. when several); one panel per track (columns) and epoch choice (rows: last, best on dev)."""
    d = df[(df["metric"] == "eer") & (df["generator"].astype(str) == "all")].copy()
    tracks = list(dict.fromkeys(d["track"].astype(str)))
    choices = [c for c in ("last", "best_dev") if (d["epoch_choice"] == c).any()]
    d["arm"] = d["model"].astype(str) + " / " + d["head"].astype(str)
    rank = {"pretrained": 0, "random_init": 1, "linear": 0, "aasist": 1}  # fixed colours whatever the row order
    arms = sorted(dict.fromkeys(d["arm"]), key=lambda a: [rank.get(x, 2) for x in a.split(" / ")[::-1]] + [a])
    sets = list(dict.fromkeys(d["test_set"].astype(str)))
    fig, axes = new_figure(len(choices), len(tracks), 5.0 * len(tracks), 2.8 * len(choices))
    width = 0.8 / max(1, len(arms))
    for i, choice in enumerate(choices):
        for j, track in enumerate(tracks):
            ax = axes[i, j]
            sub = d[(d["epoch_choice"] == choice) & (d["track"].astype(str) == track)]
            agg = _mean_sd(sub.assign(value=100 * sub["value"]), ["arm", "test_set"])
            for k, arm in enumerate(arms):
                a = agg[agg["arm"] == arm].set_index("test_set").reindex(sets)
                ax.bar(np.arange(len(sets)) + (k - (len(arms) - 1) / 2) * width, a["mean"], width,
                       yerr=a["std"] if (a["count"] > 1).any() else None, capsize=2, color=PALETTE[k % len(PALETTE)],
                       label=arm)
            ax.axhline(50.0, ls=":", lw=1, color="0.4")  # chance
            ax.set_xticks(np.arange(len(sets)), sets)
            ax.set(ylim=(0, 75), ylabel="EER % (lower is better)",
                   title=f"{track}: {'last epoch' if choice == 'last' else 'best dev epoch'}")
            if i == 0 and j == 0:
                ax.legend(frameon=False, fontsize=7, loc="upper left", ncol=2)
    return fig


def fig_decide(df: pd.DataFrame) -> Figure:
    """The reproduction that can decide (``fig_learning_curve``): inst11 linear-probe accuracy of the encoders
    exported during pre-training, one line per arm (contrastive TF, contrastive unstructured at matched tokens,
    masked reconstruction), mean ± 1 s.d. over seeds."""
    fig, axes = new_figure(1, 1, 5.0, 3.0)
    ax = axes[0, 0]
    for i, (arm, g) in enumerate(df.groupby("model", sort=False)):
        _line(ax, g, "step", str(arm), PALETTE[i % len(PALETTE)])
    n = int(df["seed"].nunique()) if "seed" in df else 1
    ax.set(xlabel="pre-training step", ylabel=_metric(df),
           title=f"{df['task'].iloc[0]} linear probe during pre-training ({n} seed{'s' if n > 1 else ''})")
    ax.legend(loc="best", fontsize="small")
    return fig


DECIDE_ARMS = ("tf", "unstructured_matched", "mae", "random_init")  # the order of repro.decide.ARMS


def _decide_panels(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(title, rows with one value per arm and seed) for each evaluation: probes averaged over their tasks, each
    fine-tuning task on its own."""
    panels = []
    if "probe" in df:
        probes = df[df["table"] == "table_decide"]
        for probe in ("weighted", "linear"):
            sub = probes[probes["probe"] == probe]
            if len(sub):
                tasks = ", ".join(sorted(sub["task"].unique()))
                avg = sub.groupby(["model", "seed"], sort=False).agg(value=("value", "mean"),
                                                                    gate_pass=("gate_pass", "first")).reset_index()
                panels.append((f"{probe} probe\nmean of {tasks}", avg))
    fine = df[df["table"] == "table_decide_finetune"]
    for task in sorted(fine["task"].unique()) if len(fine) else []:
        panels.append((f"fine-tune\n{task}", fine[fine["task"] == task]))
    return panels


def fig_decide_arms(df: pd.DataFrame) -> Figure:
    """The contrastive-vs-generative comparison (``table_decide`` + ``table_decide_finetune``): one panel per
    evaluation, every seed a dot with its arms joined by a thin line (the comparison is paired), the mean and its 95%
    t-interval in black. Seeds whose encoder failed its gate are drawn as crosses and left out of the mean."""
    panels = _decide_panels(df)
    fig, axes = new_figure(1, max(1, len(panels)), 2.6 * max(1, len(panels)), 3.2)
    for ax, (title, d) in zip(axes[0], panels):
        arms = [a for a in DECIDE_ARMS if a in set(d["model"])] + sorted(set(d["model"]) - set(DECIDE_ARMS))
        x = {a: i for i, a in enumerate(arms)}
        failed = d["gate_pass"].astype(str) == "False"
        for seed, g in d.groupby("seed", sort=True):
            g = g.assign(x=g["model"].map(x)).sort_values("x")
            ax.plot(g["x"], g["value"], color="0.75", lw=0.8, zorder=1)
        ok, bad = d[~failed], d[failed]
        ax.scatter(ok["model"].map(x), ok["value"], s=12, color=[PALETTE[x[a] % len(PALETTE)] for a in ok["model"]],
                   zorder=2)
        if len(bad):
            ax.scatter(bad["model"].map(x), bad["value"], s=18, marker="x", color="0.3", zorder=2,
                       label="gate failed")
            ax.legend(frameon=False, fontsize=7)
        for arm, g in ok.groupby("model", sort=False):
            v = g["value"].to_numpy(dtype=float)
            half = (float(np.std(v, ddof=1)) / math.sqrt(len(v)) * t_quantile(0.975, len(v) - 1)) if len(v) > 1 else 0.0
            ax.errorbar(x[arm] + 0.18, v.mean(), yerr=half, fmt="o", ms=4, color="black", capsize=3, zorder=3)
        ax.set_xticks(range(len(arms)), [a.replace("_", "\n") for a in arms])
        with style():  # titles take their size from the style when set
            ax.set(title=title, ylabel="accuracy" if ax is axes[0][0] else "")
    n = int(df["seed"].nunique()) if "seed" in df else 0
    fig.suptitle(f"TF masking vs unstructured (matched tokens) vs masked reconstruction: {n} seed"
                 f"{'s' if n != 1 else ''}", fontsize=9)
    return fig


# figure name -> (result table(s) it reads or None, plotting function); a figure of several tables gets them
# stacked, with a `table` column naming each row's table
PAPER_FIGURES: dict[str, tuple[str | tuple[str, ...] | None, Any]] = {
    "fig1_masking": (None, lambda _: fig1_masking()),
    "fig2_effective_rank": ("fig2_effective_rank", fig2_effective_rank),
    "fig3_layerwise_probe": ("fig3_layerwise_probe", fig3_layerwise),
    "fig4a_masking_ratio": ("fig4a_masking_ratio", fig4a_masking),
    "fig4b_tf_ratio_grid": ("fig4b_tf_ratio_grid", fig4b_ratio_grid),
    "fig4c_batch_size": ("fig4c_batch_size", fig4c_batch_size),
    "fig_alm": ("alm_runs", fig_alm),
    "fig_spoof": ("table_spoof", fig_spoof),
    "fig_decide_curve": ("fig_learning_curve", fig_decide),
    "fig_decide": (("table_decide", "table_decide_finetune"), fig_decide_arms),
}


def paper_figure(name: str, results_dir: str | Path, out_dir: str | Path | None = None,
                 formats: Sequence[str] = ("png", "pdf")) -> Figure | None:
    """Draw paper figure ``name`` from the committed results (and save it into ``out_dir`` if given).

    Returns None, after printing which file is missing, when its result table is not there yet.
    """
    if name not in PAPER_FIGURES:
        raise ValueError(f"unknown paper figure {name!r}; allowed: {', '.join(PAPER_FIGURES)}")
    table, draw = PAPER_FIGURES[name]
    if isinstance(table, tuple):
        parts = [d.assign(table=t) for t in table if (d := results.load_result(results_dir, t)) is not None]
        df = pd.concat(parts, ignore_index=True) if parts else None
    else:
        df = results.load_result(results_dir, table) if table else None
    if table and df is None:
        return None
    fig = draw(df)
    if out_dir is not None:
        save(fig, Path(out_dir) / name, formats)
    return fig


def render_all(results_dir: str | Path, out_dir: str | Path, formats: Sequence[str] = ("png", "pdf")
               ) -> dict[str, list[Path]]:
    """Every paper figure and result table that its committed inputs allow; returns what was written."""
    written: dict[str, list[Path]] = {}
    for name in PAPER_FIGURES:
        if paper_figure(name, results_dir, out_dir, formats) is not None:
            written[name] = [Path(out_dir) / f"{name}.{fmt}" for fmt in formats]
    for name in results.TABLES:
        path = results.write_table(name, results.result_table(name, results_dir), out_dir)
        if path is not None:
            written[name] = [path]
    return written
