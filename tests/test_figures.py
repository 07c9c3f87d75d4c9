"""Figures: byte-stable files, paper figures drawn from (and only from) the result tables, honest skips."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from audiomosaic.lab import analysis, figures
from audiomosaic.config import MaskConfig
from audiomosaic.metrics import effective_rank

PROV = {"source": "test fixture", "git_sha": "0000000", "machine": "test", "seed": 0, "config_hash": "0" * 12}


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _rank_k(k: int, n: int = 64, d: int = 16, seed: int = 0) -> np.ndarray:
    """n centred points on k orthonormal directions with equal variance: effective rank exactly k (Roy & Vetterli)."""
    g = np.random.default_rng(seed)
    a = g.standard_normal((n, k))
    h = np.linalg.qr(a - a.mean(axis=0))[0]  # orthonormal columns that stay centred
    return h @ np.linalg.qr(g.standard_normal((d, d)))[0][:, :k].T


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Result tables whose values are computed here from first principles (no typed-in numbers)."""
    root = tmp_path_factory.mktemp("results")
    ranks = [{"task": "synthetic", "pretrain_masking": pm, "inference_masking": im,
              "effective_rank": effective_rank(_rank_k(k)), **PROV}
             for pm, base in (("unstructured", 3), ("tf", 6)) for im, k in (("none", base), ("tf", base - 1))]
    pd.DataFrame(ranks).to_csv(root / "fig2_effective_rank.csv", index=False)
    layers = [{"model": "m", "task": "t", "probe": "linear", "layer": i, "metric": "accuracy",
               "value": i / 4, **PROV} for i in range(4)]
    layers += [{"model": "m", "task": "t", "probe": p, "layer": None, "metric": "accuracy", "value": v, **PROV}
               for p, v in (("weighted", 0.5), ("attentive", 0.75))]
    pd.DataFrame(layers).to_csv(root / "fig3_layerwise_probe.csv", index=False)
    grid = [{"ratio_time": rt, "ratio_freq": rf, "task": "t", "metric": "accuracy", "value": rt * rf, **PROV}
            for rt in (0.4, 0.6) for rf in (0.2, 0.4)]
    pd.DataFrame(grid).to_csv(root / "fig4b_tf_ratio_grid.csv", index=False)
    pd.DataFrame([{"model": "m", "task": t, "metric": "accuracy", "value": v, **PROV}
                  for t, v in (("kws10", 0.5), ("inst11", 0.25))]).to_csv(root / "table_finetune.csv", index=False)
    return root


def test_paper_figures_are_byte_identical_across_runs_and_processes(results: Path, tmp_path: Path) -> None:
    written = figures.render_all(results, tmp_path / "a", formats=("png", "pdf", "svg"))
    figures.render_all(results, tmp_path / "b", formats=("png", "pdf", "svg"))
    env = {**os.environ, "MPLBACKEND": "Agg"}
    res = subprocess.run([sys.executable, "-m", "audiomosaic", "figures", "--results", str(results), "--out",
                          str(tmp_path / "c"), "--formats", "png", "pdf", "svg"], capture_output=True, text=True,
                         timeout=300, env=env)
    assert res.returncode == 0, res.stderr
    assert set(written) == {"fig1_masking", "fig2_effective_rank", "fig3_layerwise_probe", "fig4b_tf_ratio_grid",
                            "table_finetune"}
    a, b, c = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert a == b == c and len(a) == 4 * 3 + 1


def test_missing_tables_skip_their_figure_and_say_which_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert figures.paper_figure("fig4c_batch_size", tmp_path, tmp_path / "out") is None
    assert "fig4c_batch_size.csv is missing" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()
    assert figures.paper_figure("fig1_masking", tmp_path) is not None  # the schematic needs no results


def test_a_table_without_its_columns_is_an_error(tmp_path: Path) -> None:
    pd.DataFrame([{"pretrain_masking": "tf", "effective_rank": 1.0}]).to_csv(tmp_path / "fig2_effective_rank.csv")
    with pytest.raises(ValueError, match="inference_masking"):
        figures.paper_figure("fig2_effective_rank", tmp_path)
    with pytest.raises(ValueError, match="allowed"):
        figures.paper_figure("fig9", tmp_path)


def test_figures_draw_the_table_values(results: Path) -> None:
    df = analysis.load_result(results, "fig2_effective_rank")
    ax = figures.fig2_effective_rank(df).axes[0]
    heights = sorted(round(p.get_height(), 6) for p in ax.patches if p.get_height() > 0)
    assert heights == sorted(round(v, 6) for v in df["effective_rank"])
    assert heights == [2.0, 3.0, 5.0, 6.0]  # the ranks built into the fixture
    ax3 = figures.fig3_layerwise(analysis.load_result(results, "fig3_layerwise_probe")).axes[0]
    assert list(ax3.lines[0].get_ydata()) == [0.0, 0.25, 0.5, 0.75]
    assert sorted(line.get_ydata()[0] for line in ax3.lines[1:]) == [0.5, 0.75]


def test_several_tasks_and_seeds_give_one_panel_per_task_and_the_seed_mean() -> None:
    rows = [{"batch_size": b, "task": t, "metric": "accuracy", "value": b * k + seed, "seed": seed}
            for t, k in (("a", 1.0), ("b", 2.0)) for seed in (0, 1) for b in (32, 64)]
    fig = figures.fig4c_batch_size(pd.DataFrame(rows))
    assert [ax.get_title() for ax in fig.axes] == ["a", "b"]
    assert list(fig.axes[1].lines[0].get_ydata()) == [64.5, 128.5]  # mean over seeds 0 and 1


def test_fig1_shows_the_documented_token_counts() -> None:
    """Paper layout at 1024 x 128 keeps 200 / 256 tokens, the reference layout 192 / 304 (docs/method.md Decision 1)."""
    titles = [ax.get_title() for ax in figures.fig1_masking().axes if ax.get_visible()]
    expected = {"unstructured: 128/512", "paper time view: 200/512", "paper freq view: 256/512",
                "reference time view: 192/512", "reference freq view: 304/512"}
    assert all(any(t.startswith(e) for t in titles) for e in expected), titles


def test_masked_patches_are_drawn_where_the_mask_drops_tokens() -> None:
    """A mask dropping time column 1 of a (4, 2) grid greys exactly that column (time on x, freq on y)."""
    mask = torch.zeros(4 * 2, dtype=torch.bool)
    mask[2:4] = True  # tokens t=1, f=0..1 (time-major)
    img = figures._mask_image(mask, (4, 2))
    assert img.shape == (2, 4) and img[:, 1].all() and img.sum() == 2


def test_view_mask_figure_has_one_panel_per_layout_and_view() -> None:
    spec = torch.randn(128, 128)
    fig = figures.plot_view_masks(spec, spec, MaskConfig(), 16, generator=torch.Generator().manual_seed(0))
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert [t.split(":")[0] for t in titles] == ["paper view A", "paper view B", "reference view A",
                                                  "reference view B"]
    assert titles[0].endswith("24/64 kept")  # 8 x 8 grid, 60% of 8 time columns dropped -> 3 kept x 8 rows


def test_save_rejects_unknown_formats(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="allowed"):
        figures.save(figures.new_figure()[0], tmp_path / "x", formats=("jpg",))


def test_curves_and_show() -> None:
    fig = figures.plot_curves([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0, "top1": 0.5}])
    assert [ax.get_title() for ax in fig.axes] == ["loss", "top1"]
    assert figures.show(fig).data[:8] == b"\x89PNG\r\n\x1a\n" and figures.show(None) is None
    with pytest.raises(ValueError, match="step"):
        figures.plot_curves([{"epoch": 1, "loss": 1.0}])


def test_learning_curve_figure_draws_each_arms_seed_mean_and_is_byte_stable(tmp_path: Path) -> None:
    rows = [{"model": arm, "task": "inst11", "step": step, "metric": "accuracy", "seed": seed,
             "value": base + step / 4000 + seed / 100, **{k: v for k, v in PROV.items() if k != "seed"}}
            for arm, base in (("tf", 0.3), ("mae", 0.2)) for step in (400, 800, 1200) for seed in (0, 2)]
    pd.DataFrame(rows).to_csv(tmp_path / "fig_learning_curve.csv", index=False)
    fig = figures.fig_decide(analysis.load_result(tmp_path, "fig_learning_curve"))
    lines = {c.get_label(): list(np.round(np.asarray(c.lines[0].get_ydata(), dtype=float), 6))
             for c in fig.axes[0].containers}
    assert lines == {"tf": [0.41, 0.51, 0.61], "mae": [0.31, 0.41, 0.51]}  # base + step/4000 + mean seed/100
    for out in ("a", "b"):
        figures.paper_figure("fig_decide_curve", tmp_path, tmp_path / out, ("png", "pdf"))
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") and len(_digest(tmp_path / "a")) == 2


def test_decide_comparison_figure_pairs_seeds_and_leaves_failed_gates_out_of_the_mean(tmp_path: Path) -> None:
    prov = {k: v for k, v in PROV.items() if k != "seed"}
    probes = [{"model": arm, "task": task, "probe": probe, "metric": "accuracy", "seed": seed,
               "gate_pass": None if arm == "random_init" else not (arm == "mae" and seed == 2),
               "value": base + 0.1 * (task == "drums7") + 0.01 * seed, **prov}
              for arm, base in (("tf", 0.5), ("mae", 0.4), ("random_init", 0.3)) for seed in (0, 1, 2)
              for task in ("inst11", "drums7") for probe in ("linear", "weighted")]
    pd.DataFrame(probes).to_csv(tmp_path / "table_decide.csv", index=False)
    fine = [{"model": arm, "task": task, "metric": "accuracy", "seed": seed, "gate_pass": None, "value": v, **prov}
            for arm, v in (("tf", 0.6), ("random_init", 0.5)) for seed in (0, 1) for task in ("inst11", "kws35")]
    pd.DataFrame(fine).to_csv(tmp_path / "table_decide_finetune.csv", index=False)
    fig = figures.paper_figure("fig_decide", tmp_path, tmp_path / "a", ("png", "pdf"))
    assert [ax.get_title().split("\n")[0] for ax in fig.axes] == ["weighted probe", "linear probe", "fine-tune",
                                                                   "fine-tune"]
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["tf", "mae", "random\ninit"]
    means = sorted(round(float(c.lines[0].get_ydata()[0]), 6) for c in ax.containers)
    assert means == [0.36, 0.455, 0.56]  # task mean + 0.01 x mean seed; mae's failed seed 2 is out: 0.45 + 0.005
    assert ax.get_legend() is not None  # the failed gate is marked
    figures.paper_figure("fig_decide", tmp_path, tmp_path / "b", ("png", "pdf"))
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
