"""Reproduction suites end to end on the tiny corpus: real pre-training, probes, tables, resume and the report."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import math

import pytest
import torch

from audiomosaic.lab.analysis import PROVENANCE, RESULTS
from audiomosaic.config import encoder_config
from audiomosaic.masking import view_masks
from audiomosaic.model import AudioMosaic
from audiomosaic.config import config_hash
from audiomosaic.repro.suites import LAYOUT, MAIN, RATIO, STRATEGY, STRATEGY_RATIOS, Context, pretrain_config
from audiomosaic.cli.repro import main
from audiomosaic.repro.check import compare
from audiomosaic.repro.primary import primary_claims
from audiomosaic.repro.stats import VERDICTS, verdict
from audiomosaic.repro.report import claims_table, replace_section

CONDS = ["tf_paper", "unstructured", "random_init"]


def _argv(corpus: Path, out: Path, runs: Path, *extra: str) -> list[str]:
    return ["--preset", "smoke", "--probe-preset", "smoke", "--tasks", "kws10", "inst11", "--seeds", "0", "1",
            "--out", str(out), "--run-root", str(runs), "--threads", "1", f"data.root={corpus}", "max_steps=2",
            "data.num_workers=0", "probe.optim.epochs=1", "finetune.max_steps=1", *extra]  # options after key=values


def _repro(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "audiomosaic", "repro", *argv], capture_output=True, text=True,
                          timeout=240)


@pytest.fixture(scope="module")
def suite(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The main suite (3 conditions) and the effective-rank suite, 2 seeds, through the real CLI."""
    base = tmp_path_factory.mktemp("repro")
    out, runs = base / "results", base / "runs"
    proc = _repro(*_argv(tiny_corpus, out, runs, "--suite", "main", "erank", "layers", "finetune", "--conditions",
                         *CONDS, "--finetune-preset", "smoke", "--finetune-tasks", "kws10"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tiny_corpus, out, runs


def test_tables_have_every_row_and_provenance(suite) -> None:
    _, out, runs = suite
    probe = pd.read_csv(out / "table_probe.csv")
    for col in (*RESULTS["table_probe"], *PROVENANCE, "condition", "wall_s"):
        assert col in probe.columns, col
    assert len(probe) == len(CONDS) * 2 * 2  # conditions x seeds x tasks
    assert set(probe["condition"]) == set(CONDS) and set(probe["seed"]) == {0, 1}
    assert probe["value"].between(0, 1).all() and (probe["metric"] == "accuracy").all()
    assert (probe["wall_s"] >= 0).all() and probe["machine"].str.contains("cores").all()
    pre = probe[probe["condition"] != "random_init"]
    assert (pre["pretrain_steps"] == 2).all()  # max_steps=2 reached the engine
    # one pre-training per (pre-trained condition, seed), content-addressed by config hash
    assert len(list((runs / "pretrain").glob("*/encoder.safetensors"))) == 2 * 2
    erank = pd.read_csv(out / "fig2_effective_rank.csv")
    assert len(erank) == 3 * 2 * 2 * 3  # encoders x seeds x tasks x inference maskings
    assert set(erank["inference_masking"]) == {"none", "unstructured", "tf"}
    dim = encoder_config("vit_nano").embed_dim
    assert erank["effective_rank"].between(1, dim).all()


def test_layer_and_finetune_tables(suite) -> None:
    _, out, _ = suite
    depth = encoder_config("vit_nano").depth
    layers = pd.read_csv(out / "fig3_layerwise_probe.csv")
    assert set(layers["model"]) == {"tf_paper"} and len(layers) == 2 * 2 * (depth + 3)  # seeds x tasks x heads
    assert set(layers.loc[layers["probe"] == "linear", "layer"]) == set(range(depth + 1))
    assert layers.loc[layers["probe"] != "linear", "layer"].isna().all()
    ft = pd.read_csv(out / "table_finetune.csv")
    assert sorted(ft["model"]) == sorted(CONDS * 2) and (ft["task"] == "kws10").all()
    assert ft["value"].between(0, 1).all()


def test_rerun_skips_and_a_lost_row_is_recomputed_identically(suite) -> None:
    corpus, out, runs = suite
    before = pd.read_csv(out / "table_probe.csv")
    lost = (before["condition"] == "unstructured") & (before["seed"] == 1)
    before[~lost].to_csv(out / "table_probe.csv", index=False)
    proc = _repro(*_argv(corpus, out, runs, "--suite", "main", "--conditions", *CONDS))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("done, skipped") == len(CONDS) * 2 - 1
    after = pd.read_csv(out / "table_probe.csv")
    key = ["condition", "seed", "task"]
    merged = before.merge(after, on=key, suffixes=("_old", "_new"))
    assert len(merged) == len(before)
    # the reused encoder and the seeded probe give the same numbers again
    assert (merged["value_old"] == merged["value_new"]).all()


def test_report_writes_claims_and_keeps_other_sections(suite, tmp_path: Path) -> None:
    _, out, _ = suite
    readme = tmp_path / "README.md"
    readme.write_text("# Figures\n\nintro\n\n## Claims\nold text\n\n## Later\nkept\n")
    for _ in range(2):  # idempotent: the section is replaced, not appended again
        assert main(["--no-run", "--report", "--out", str(out), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.count("## Claims") == 1 and "old text" not in text and "## Later\nkept" in text
    claims = pd.read_csv(out / "claims.csv")
    primary = claims[claims["analysis"] == "primary (pre-registered)"]
    assert len(primary) == 4 and (primary["verdict"] == "not run").all()  # no decide rows in this suite
    pilot = claims[claims["analysis"].str.startswith("pilot")]
    first = pilot.iloc[0]
    assert first["a"] == "tf_paper" and first["b"] == "unstructured" and first["n_pairs"] == 4
    assert "repro" in first["command"]
    assert (claims.loc[claims["table"] == "fig4c_batch_size", "verdict"] == "not run").all()
    assert set(claims["verdict"]) <= {"not run", *VERDICTS}


def test_replace_section_appends_when_missing() -> None:
    assert replace_section("# T\n", "## Claims\nx\n") == "# T\n\n## Claims\nx\n"
    assert replace_section("", "## Claims\nx\n") == "## Claims\nx\n"


def test_reference_layout_equals_paper_layout_on_a_square_grid() -> None:
    # why tf_reference is not run at 128 frames: identical masks and position tables on the 8 x 8 grid
    for layout_seed in range(3):
        paper = view_masks("tf", 4, (8, 8), layout="paper", generator=torch.Generator().manual_seed(layout_seed))
        ref = view_masks("tf", 4, (8, 8), layout="reference", generator=torch.Generator().manual_seed(layout_seed))
        for p, r in zip(paper, ref):
            assert torch.equal(p[0], r[0])
    models = [AudioMosaic(encoder_config("vit_nano", spec_size=(128, 128), sincos_layout=s)) for s in
              ("paper", "reference")]
    assert torch.equal(models[0].pos_embed, models[1].pos_embed)
    wide = [AudioMosaic(encoder_config("vit_nano", spec_size=(256, 128), sincos_layout=s)) for s in
            ("paper", "reference")]
    assert not torch.equal(wide[0].pos_embed, wide[1].pos_embed)


@pytest.mark.parametrize("argv", [["mask.nope=1", "--suite", "main"], ["probe.optim.nope=1", "--suite", "main"],
                                  ["--seeds", "0", "--suite", "main", "--conditions", "nope"]])
def test_bad_input_is_a_one_line_error(argv: list[str], tmp_path: Path, capsys) -> None:
    assert main([*argv, "--out", str(tmp_path), "--run-root", str(tmp_path)]) == 2
    assert "audiomosaic repro: error:" in capsys.readouterr().err


def test_strategy_points_share_encoders_with_equal_configs() -> None:
    # Fig. 4a points equal to a main/ratio condition reuse its encoder (same config hash); the rest are new
    ctx = Context()
    known = {config_hash(pretrain_config(ctx, c, 0)): c.name for c in (*MAIN, *RATIO)}
    shared = {c.name: known.get(config_hash(pretrain_config(ctx, c, 0))) for c in STRATEGY}
    assert shared["tf_r0.4"] == "tf_t0.4_f0.4" and shared["tf_r0.6"] == "tf_t0.6_f0.6"
    assert shared["tt_r0.6"] == "tt" and shared["ff_r0.4"] == "ff"
    assert shared["unstructured_r0.6"] is None and shared["tf_r0.8"] is None
    assert len(STRATEGY) == 4 * len(STRATEGY_RATIOS)


def test_strategy_suite_and_its_paired_claims(suite, tmp_path: Path) -> None:
    corpus, out, runs = suite
    proc = _repro(*_argv(corpus, out, runs, "--suite", "strategy", "--seeds", "0", "1", "--conditions",
                         "tf_r0.4", "unstructured_r0.4", "tf_r0.8", "unstructured_r0.8"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    fig4a = pd.read_csv(out / "fig4a_masking_ratio.csv")
    assert set(fig4a["strategy"]) == {"tf", "unstructured"} and set(fig4a["mask_ratio"]) == {0.4, 0.8}
    assert len(fig4a) == 4 * 2 * 2  # conditions x seeds x tasks
    claims = claims_table(out).set_index("claim")
    row = claims.loc[next(c for c in claims.index if "equal mask ratios" in c and "unstructured" in c)]
    assert row["n_pairs"] == 2 * 2 * 2 and row["n_seeds"] == 2  # (seed, task, ratio) pairs
    assert row["verdict"] != "not run"
    # paired per ratio: the task-and-ratio mean of each arm per seed
    tf = fig4a[fig4a["strategy"] == "tf"].groupby("seed")["value"].mean().mean()
    assert row["a_mean"] == pytest.approx(tf)


def test_check_regenerates_numbers_and_flags_a_tampered_one(suite, tmp_path: Path) -> None:
    corpus, out, runs = suite
    check = ["--check", "--check-root", str(tmp_path / "check"), "--suite", "main", "erank", "--conditions",
             "tf_paper", "random_init", "--seeds", "1"]
    proc = _repro(*_argv(corpus, out, runs), *check)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "table_probe: 4/4 within noise" in proc.stdout
    rep = pd.read_csv(out / "regeneration_check.csv")
    assert set(rep["table"]) == {"table_probe", "fig2_effective_rank"}
    assert len(rep) == 2 * 2 + 2 * 2 * 3  # probe: conditions x tasks; erank: + inference maskings
    # a later check of another table keeps these rows (one key over all tables' columns)
    proc = _repro(*_argv(corpus, out, runs), "--check", "--check-root", str(tmp_path / "check"), "--suite", "layers",
                  "--seeds", "1")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rep = pd.read_csv(out / "regeneration_check.csv")
    assert len(rep) == 2 * 2 + 2 * 2 * 3 + 2 * (encoder_config("vit_nano").depth + 3)
    assert (rep["abs_diff"] == 0).all()  # seeded one-thread runs repeat bit for bit on one machine
    # the scratch run pre-trained its own encoder (a fresh run root), the committed runs were not touched
    assert len(list((tmp_path / "check").glob("*/runs/pretrain/*/encoder.safetensors"))) == 2  # one per check
    # a committed number that the code no longer gives is reported, with a non-zero exit
    probe = pd.read_csv(out / "table_probe.csv")
    hit = (probe["condition"] == "tf_paper") & (probe["seed"] == 1) & (probe["task"] == "kws10")
    probe.loc[hit, "value"] += 0.5
    probe.to_csv(out / "table_probe.csv", index=False)
    proc = _repro(*_argv(corpus, out, runs), *check[:-1], "1")
    probe.loc[hit, "value"] -= 0.5
    probe.to_csv(out / "table_probe.csv", index=False)
    assert proc.returncode == 1 and "table_probe: 3/4 within noise" in proc.stdout, proc.stdout[-2000:]


def test_compare_matches_nan_keys_and_uses_the_seed_spread() -> None:
    committed = pd.DataFrame({"suite": "layers", "condition": "tf_paper", "seed": [0, 1, 2, 0, 1, 2], "task": "a",
                              "probe": ["linear"] * 3 + ["weighted"] * 3, "layer": [2.0] * 3 + [float("nan")] * 3,
                              "value": [0.5, 0.7, 0.9, 0.4, 0.4, 0.4], "git_sha": "abc"})
    fresh = committed.iloc[[0, 3]].assign(value=[0.6, 0.4005], git_sha="def", machine="m", wall_s=1.0)
    cmp = compare("fig3_layerwise_probe", committed, fresh).set_index("probe")
    assert cmp.loc["linear", "seed_sd"] == pytest.approx(0.1414, abs=1e-4)  # seeds 1 and 2 only
    assert cmp.loc["linear", "n_seeds"] == 2 and cmp.loc["linear", "within_noise"]  # 0.1 <= 2 x 0.141
    assert cmp.loc["weighted", "tolerance"] == pytest.approx(1e-3) and cmp.loc["weighted", "within_noise"]
    assert not compare("fig3_layerwise_probe", committed, fresh.assign(value=[0.9, 0.41]))["within_noise"].any()


def test_layout_suite_differs_from_paper_only_in_geometry(suite) -> None:
    corpus, out, runs = suite
    proc = _repro(*_argv(corpus, out, runs, "--suite", "layout", "--seeds", "0"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    probe = pd.read_csv(out / "table_probe.csv")
    rows = probe[probe["suite"] == "layout"]
    assert set(rows["model"]) == {"tf_paper_6x8", "tf_reference_6x8"} and len(rows) == 2 * 2
    ctx = Context(preset="smoke")
    paper, ref = (pretrain_config(ctx, c, 0) for c in LAYOUT)
    assert paper.encoder.spec_size == ref.encoder.spec_size == (96, 128)  # the same 6 x 8 grid
    assert (paper.mask.layout, ref.mask.layout) == ("paper", "reference")
    assert (paper.encoder.sincos_layout, ref.encoder.sincos_layout) == ("paper", "reference")
    # on this non-square grid the geometries really differ (unlike 8 x 8, see the test above)
    masks = [view_masks("tf", 2, (6, 8), layout=lay, generator=torch.Generator().manual_seed(0))[0][0]
             for lay in ("paper", "reference")]
    assert masks[0].shape != masks[1].shape or not torch.equal(masks[0], masks[1])


def test_verdict_vocabulary() -> None:
    base = {"agrees": True, "p_holm": 0.01, "diff_mean": 0.05, "diff_ci_lo": 0.01, "diff_ci_hi": 0.09}
    assert verdict(base) == "reproduced"
    assert verdict({**base, "p_holm": 0.2}) == "inconclusive"  # not significant after Holm
    assert verdict({**base, "agrees": False, "diff_mean": -0.05, "diff_ci_lo": -0.09, "diff_ci_hi": -0.01,
                    "p_holm": 0.5}) == "contradicted"  # the interval excludes the paper's direction
    wide = {**base, "agrees": False, "diff_mean": -0.007, "diff_ci_lo": -0.030, "diff_ci_hi": 0.017, "p_holm": 1}
    assert verdict(wide) == "inconclusive"  # an interval like the pilot's: neither way
    assert verdict(wide, margin=0.02) == "inconclusive"  # not inside the margin either
    assert verdict({**wide, "diff_ci_lo": -0.015}, margin=0.02) == "contradicted"  # equivalence within ±0.02
    assert verdict({**wide, "diff_ci_lo": -0.015}) == "inconclusive"  # no margin fixed: no equivalence claim
    lower = {**base, "agrees": True, "diff_mean": -0.05, "diff_ci_lo": -0.09, "diff_ci_hi": -0.01}
    assert verdict(lower, higher=False) == "reproduced"  # a claim that a should be lower
    assert verdict({"verdict": "not run"}) == "not run"


def test_primary_claims_use_the_seed_as_unit_and_the_gate(tmp_path: Path) -> None:
    rows = []
    for seed in range(6):
        for task in ("inst11", "speaker15", "drums7"):
            for arm, shift in (("tf", 0.05), ("unstructured_matched", 0.0), ("mae", 0.05)):
                rows.append({"model": arm, "task": task, "probe": "weighted", "seed": seed,
                             "value": 0.5 + shift + 0.01 * ((seed * 7 + len(task)) % 3), "gate_pass": True})
    df = pd.DataFrame(rows)
    df.loc[(df["model"] == "mae") & (df["seed"] == 5), "gate_pass"] = False  # a failed gate drops that seed
    df.to_csv(tmp_path / "table_decide.csv", index=False)
    claims = primary_claims(tmp_path).set_index(["probe", "b"])
    unstructured, mae = claims.loc[("weighted", "unstructured_matched")], claims.loc[("weighted", "mae")]
    assert unstructured["n_seeds"] == 6 and unstructured["diff_mean"] == pytest.approx(0.05)
    assert unstructured["verdict"] == "reproduced"
    assert unstructured["sd_diff"] == pytest.approx(0.0, abs=1e-12) and unstructured["seeds_needed"] == 2
    assert mae["n_seeds"] == 5 and mae["diff_mean"] == pytest.approx(0.0, abs=1e-12)
    assert mae["verdict"] == "contradicted"  # identical arms: equivalent within the pre-registered ±0.02
    assert (claims.loc["finetune", "verdict"] == "not run").all()
    three = df[df["seed"] < 3]
    three.to_csv(tmp_path / "table_decide.csv", index=False)
    assert (primary_claims(tmp_path)["verdict"].iloc[:2] == "inconclusive").all()  # fewer seeds than registered


def test_decide_design_matches_the_preregistration() -> None:
    from audiomosaic.repro import decide

    ctx = decide.design(Context(seeds=(0, 1, 2, 3, 4), preset="repro_cpu", tasks=("kws35",)))
    assert ctx.preset == "repro_cpu_long" and ctx.tasks == ("inst11", "speaker15", "drums7") and ctx.seeds[-1] == 4
    visible = {}
    for cond in decide.ARMS[:3]:
        pre = pretrain_config(ctx, cond, 0)
        assert pre.encoder.spec_size == (96, 128) and pre.data.random_crop and pre.runtime.export_every == 400
        m = pre.mask
        if pre.objective == "mae":
            visible[cond.name] = [int(48 * (1 - pre.mae.mask_ratio))]
        else:
            (ka, _, _), (kb, _, _) = view_masks(m.mode, 1, (6, 8), ratio_time=m.ratio_time, ratio_freq=m.ratio_freq,
                                                ratio=m.ratio, layout=m.layout)
            visible[cond.name] = [ka.shape[1], kb.shape[1]]
    assert visible == {"tf": [16, 24], "unstructured_matched": [20, 20], "mae": [9]}  # equal tokens per pair
    pre = pretrain_config(ctx, decide.ARMS[0], 0)
    chance = math.log(2 * pre.data.batch_size - 1)
    assert decide.gate(pre, {"step": 2000, "loss": chance - 0.6, "top1": 0.2})
    assert not decide.gate(pre, {"step": 2000, "loss": chance - 0.1, "top1": 0.2})  # at the constant predictor
    assert not decide.gate(pre, {"step": 2000, "loss": chance - 1.0, "top1": 0.02})  # top-1 near chance
    mae = pretrain_config(ctx, decide.ARMS[2], 0)
    assert decide.gate(mae, {"step": 2000, "loss": 0.5, "baseline": 0.9})
    assert not decide.gate(mae, {"step": 2000, "loss": 0.95, "baseline": 0.9})
    assert decide.gate(pre, {"step": 0}) is None  # random init: nothing to gate


def test_decide_suites_run_seed_major(monkeypatch, tmp_path: Path) -> None:
    """Several decide suites over several seeds run seed by seed, so a stop leaves every suite's finished seeds
    whole (the order is the point: the suites themselves are exercised by the pilot and test_mae_engine)."""
    from audiomosaic.cli import repro as cli
    from audiomosaic.repro import decide

    calls: list[tuple[str, tuple[int, ...]]] = []
    monkeypatch.setattr(decide, "run", lambda name, ctx, conds=(): calls.append((name, ctx.seeds)))
    assert cli.main(["--seeds", "3", "5", "--suite", "decide", "decide_finetune", "decide_curve",
                     "--out", str(tmp_path)]) == 0
    assert calls == [(s, (seed,)) for seed in (3, 5) for s in ("decide", "decide_finetune", "decide_curve")]


def test_code_version_is_the_last_commit_of_the_package() -> None:
    """Rows carry the commit that last changed the training code, not HEAD: a results-, docs- or figure-only
    commit mid-run keeps it."""
    from audiomosaic.repro.suites import ANALYSIS_ONLY, code_version

    pkg = Path(__file__).resolve().parents[1] / "audiomosaic"
    assert all((pkg / p).exists() for p in ANALYSIS_ONLY)  # a renamed module must not fall back into the version
    try:
        want = subprocess.run(["git", "log", "-1", "--format=%h", "--", ".", *(f":!{p}" for p in ANALYSIS_ONLY)],
                              cwd=pkg, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pytest.skip("not a git checkout")
    if not want:
        pytest.skip("not a git checkout")
    assert code_version().removesuffix("+dirty") == want


@pytest.mark.parametrize("scratch, included", [(0.03, False), (0.25, True)])
def test_kws35_enters_the_finetune_mean_only_above_chance_from_scratch(scratch: float, included: bool,
                                                                       tmp_path: Path) -> None:
    """tf leads by 0.1 on inst11 and 0.3 on kws35: the task-averaged lead is 0.2 with kws35, 0.1 without."""
    lead = {"inst11": 0.1, "kws35": 0.3}
    rows = [{"model": arm, "task": task, "seed": seed, "gate_pass": arm != "random_init" or None,
             "value": base + (lead[task] if arm == "tf" else 0.0) + (scratch if arm == "random_init" else 0.0)
             + 0.01 * ((seed * 5) % 3)}
            for seed in range(5) for arm in ("tf", "unstructured_matched", "mae", "random_init")
            for task, base in (("inst11", 0.4), ("kws35", 0.0))]
    pd.DataFrame(rows).to_csv(tmp_path / "table_decide_finetune.csv", index=False)
    ft = primary_claims(tmp_path).set_index("probe").loc["finetune"]
    assert (ft["tasks"] == ("inst11 kws35" if included else "inst11")).all()
    assert (ft["n_seeds"] == 5).all()
    assert ft["diff_mean"].to_numpy() == pytest.approx([0.2, 0.2] if included else [0.1, 0.1])


def test_decide_report_lists_every_arm_with_its_gates(tmp_path: Path) -> None:
    from audiomosaic.repro.report import decide_arms_markdown, primary_markdown

    rows = [{"suite": "decide", "model": arm, "task": task, "probe": probe, "seed": seed,
             "gate_pass": {"tf": True, "mae": seed != 2, "random_init": None}[arm], "value": 0.4 + 0.1 * seed}
            for seed in range(3) for arm in ("tf", "mae", "random_init") for task in ("inst11", "drums7")
            for probe in ("linear", "weighted")]
    pd.DataFrame(rows).to_csv(tmp_path / "table_decide.csv", index=False)
    text = decide_arms_markdown(tmp_path)
    lines = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "| 3/3 |" in lines["tf"] and "| 2/3 |" in lines["mae"] and "untrained" in lines["random_init"]
    assert "0.500 ± 0.248 (n=3)" in lines["tf"]  # mean of 0.4, 0.5, 0.6 with its t-interval (t_0.975,2 = 4.303)
    md = primary_markdown(primary_claims(tmp_path), tmp_path)
    assert "| tf vs mae | weighted (drums7 inst11) | 2 | 0.450 | 0.450 |" in md  # mae's seed 2 failed its gate


def test_check_reruns_decide_cells_through_the_design_and_compares_them(monkeypatch, tmp_path: Path) -> None:
    """--check of a decide suite goes through decide.run (whose preset is fixed) in a scratch folder, and its
    numbers are compared with the committed ones by (suite, arm, seed, task, probe)."""
    from audiomosaic.repro import check, decide

    rows = [{"suite": "decide", "condition": arm, "model": arm, "seed": seed, "task": task, "probe": probe,
             "value": 0.4 + 0.02 * seed + 0.1 * (arm == "tf"), "git_sha": "abc"}
            for arm in ("tf", "random_init") for seed in range(3) for task in ("inst11", "drums7")
            for probe in ("linear", "weighted")]
    committed = pd.DataFrame(rows)
    (tmp_path / "out").mkdir()
    committed.to_csv(tmp_path / "out" / "table_decide.csv", index=False)
    seen: list[tuple[str, tuple[int, ...], tuple[str, ...]]] = []

    def rerun(name: str, ctx: Context, conds: tuple[str, ...] = ()) -> None:  # stands in for 36-epoch training
        seen.append((name, ctx.seeds, conds))
        assert Path(ctx.out) != tmp_path / "out" and Path(ctx.run_root).is_relative_to(tmp_path / "scratch")
        fresh = committed[(committed["seed"].isin(ctx.seeds)) & committed["condition"].isin(conds)]
        fresh = fresh.assign(value=fresh["value"] + np.where(fresh["condition"] == "tf", 0.0, 0.5),
                             git_sha="def", machine="m", wall_s=1.0)
        Path(ctx.out).mkdir(parents=True)
        fresh.to_csv(Path(ctx.out) / "table_decide.csv", index=False)

    monkeypatch.setattr(decide, "run", rerun)
    ctx = Context(seeds=(1,), out=tmp_path / "out")
    df = check.run_check(ctx, ["decide"], ["tf", "random_init"], tmp_path / "scratch")
    assert seen == [("decide", (1,), ("tf", "random_init"))]
    assert len(df) == 2 * 2 * 2  # arms x tasks x probes of seed 1
    ok = df.set_index("condition")["within_noise"]
    assert ok.loc["tf"].all() and not ok.loc["random_init"].any()  # 0.5 off is far outside the seeds' spread
