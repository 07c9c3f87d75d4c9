"""Analysis helpers: ablation grids, inference-time masks and the effective-rank study, result tables."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiomosaic.lab import analysis
from audiomosaic.config import MaskConfig, PretrainConfig, config_hash, resolve
from audiomosaic.frontend import fbank_batch
from audiomosaic.metrics import effective_rank
from audiomosaic.model import create_model


# -------------------------------------------------------------------------------------------------------- grids

def test_ablation_grid_is_the_cartesian_product_in_key_order() -> None:
    base = resolve("smoke")
    points = analysis.ablation_grid(base, {"mask.ratio_time": [0.4, 0.6], "mask.ratio_freq": [0.2, 0.3, 0.5]})
    assert [p for p, _ in points][:2] == [{"mask.ratio_time": 0.4, "mask.ratio_freq": 0.2},
                                          {"mask.ratio_time": 0.4, "mask.ratio_freq": 0.3}]
    assert len(points) == 6
    assert [(c.mask.ratio_time, c.mask.ratio_freq) for _, c in points][-1] == (0.6, 0.5)
    assert all(c.encoder == base.encoder for _, c in points)  # only the grid keys change
    assert len({config_hash(c) for _, c in points}) == 6


def test_ablation_grid_validates_every_point_before_running() -> None:
    with pytest.raises(ValueError, match="ratio_time"):
        analysis.ablation_grid(PretrainConfig(), {"mask.ratio_time": [0.5, 1.5]})
    with pytest.raises(ValueError, match="unknown config key"):
        analysis.ablation_grid(PretrainConfig(), [{"mask.ratio_tme": 0.5}])


def test_strategy_ratio_points_set_the_ratio_each_strategy_uses() -> None:
    pts = analysis.strategy_ratio_points(["tf", "tt", "ff", "unstructured"], [0.5])
    assert pts == [{"mask.mode": "tf", "mask.ratio_time": 0.5, "mask.ratio_freq": 0.5},
                   {"mask.mode": "tt", "mask.ratio_time": 0.5}, {"mask.mode": "ff", "mask.ratio_freq": 0.5},
                   {"mask.mode": "unstructured", "mask.ratio": 0.5}]
    cfgs = [c for _, c in analysis.ablation_grid(PretrainConfig(), pts)]
    assert [analysis.mask_ratio(c.mask) for c in cfgs] == [0.5] * 4
    assert np.isnan(analysis.mask_ratio(MaskConfig(mode="tf", ratio_time=0.6, ratio_freq=0.4)))
    with pytest.raises(ValueError, match="allowed"):
        analysis.strategy_ratio_points(["time"], [0.5])
    assert analysis.point_name(pts[0]) == "mode-tf_ratio_time-0.5_ratio_freq-0.5"


def test_finetune_jobs_use_the_paper_recipes_and_skip_benchmarks_without_paths(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    jobs = analysis.finetune_jobs("smoke", [], {"optim.epochs": 1},
                                  {"as20k": ["", ""], "esc50": [str(tmp_path)], "spc2": [""]})
    assert list(jobs) == ["esc50"]
    out = capsys.readouterr().out
    assert "as20k: skipped" in out and "spc2: skipped" in out
    esc = jobs["esc50"]
    assert esc.folds == (1, 2, 3, 4, 5) and esc.frontend.target_frames == 512 and esc.optim.epochs == 1
    assert esc.data.manifest == str(tmp_path)
    with pytest.raises(ValueError, match="allowed"):
        analysis.finetune_jobs("smoke", [], benchmarks={"vggsound": ["x"]})


# --------------------------------------------------------------------------------------------- effective rank

@pytest.fixture(scope="module")
def nano() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("vit_nano", spec_size=(64, 64), projector=False).eval()  # 4 x 4 patch grid


def test_inference_masks_keep_the_expected_tokens() -> None:
    cfg = MaskConfig(ratio_time=0.5, ratio_freq=0.5, ratio=0.75)
    grid = (4, 4)
    assert analysis.inference_mask("none", 2, grid, cfg) is None
    counts = {k: analysis.inference_mask(k, 2, grid, cfg, torch.Generator().manual_seed(0)).shape
              for k in ("time", "freq", "unstructured", "tf")}
    assert counts == {"time": (2, 8), "freq": (2, 8), "unstructured": (2, 4), "tf": (2, 4)}
    with pytest.raises(ValueError, match="allowed"):
        analysis.inference_mask("random", 2, grid, cfg)


def test_pooled_features_are_the_models_representation(nano: torch.nn.Module) -> None:
    specs = torch.randn(10, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        direct = nano.forward_head(nano.forward_features(specs), pre_logits=True)
    torch.testing.assert_close(analysis.pooled_features(nano, specs, "none", batch_size=3), direct)
    a = analysis.pooled_features(nano, specs, "unstructured", seed=5)
    b = analysis.pooled_features(nano, specs, "unstructured", seed=5)
    assert torch.equal(a, b) and not torch.allclose(a, direct)


def test_effective_rank_study_has_one_row_per_encoder_and_mask(nano: torch.nn.Module) -> None:
    specs = torch.randn(24, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    df = analysis.effective_rank_study({"tf": nano, "unstructured": nano}, specs, ("none", "tf"),
                                       MaskConfig(ratio_time=0.5, ratio_freq=0.5), seed=0, batch_size=8)
    assert list(df["pretrain_masking"]) == ["tf", "tf", "unstructured", "unstructured"]
    assert set(df["n_clips"]) == {24} and set(df["feature_dim"]) == {64}
    expected = effective_rank(analysis.pooled_features(nano, specs, "none"))
    assert df.loc[0, "effective_rank"] == pytest.approx(expected)
    assert (df["effective_rank"] > 1).all() and (df["effective_rank"] <= 24).all()


def test_load_specs_reads_files_like_the_batched_front_end(tmp_path: Path) -> None:
    cfg = resolve("smoke").frontend
    t = np.arange(16000) / 16000
    paths = []
    for i, (hz, n) in enumerate(((440, 16000), (880, 8000))):  # the second clip is shorter than 1 s
        paths.append(str(tmp_path / f"{i}.wav"))
        sf.write(paths[-1], (0.5 * np.sin(2 * np.pi * hz * t[:n])).astype(np.float32), 16000)
    specs = analysis.load_specs(paths, cfg, clip_seconds=1.0)
    assert specs.shape == (2, 1, 128, 128)
    wav = torch.zeros(1, 16000)
    wav[0, :8000] = torch.from_numpy(sf.read(paths[1], dtype="float32")[0])
    torch.testing.assert_close(specs[1:], fbank_batch(wav, cfg, torch.tensor([8000])))


def test_results_table_reads_run_folders(tmp_path: Path) -> None:
    run = tmp_path / "run1"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"config": {"mask": {"mode": "tt"}}, "derived": {}}))
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    df = analysis.results_table([run], config_keys=["mask.mode"])
    assert df.to_dict("records") == [{"run": "run1", "mask.mode": "tt", "step": 2, "loss": 1.5}]
