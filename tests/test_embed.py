"""Embedding API: windows, timestamps, batches, the HEAR wrappers, checkpoint formats and the CLI on real files."""
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

import audiomosaic
from audiomosaic.config import FrontendConfig, to_dict
from audiomosaic.data.audio import read_audio
from audiomosaic.embed import Embedder
from audiomosaic.frontend import fbank, samples_for_frames

SR = 16000
T = 128  # window: 128 frames = 1.28 s


@pytest.fixture(scope="module")
def model(nano_model):
    return nano_model


@pytest.fixture(scope="module")
def export(nano_export):
    return nano_export


def _representation(model, wav):
    spec = fbank(torch.as_tensor(wav), SR, FrontendConfig(target_frames=T))[None, None]
    with torch.no_grad():
        return model.forward_head(model.forward_features(spec), pre_logits=True)[0]


def test_load_export_reads_frontend_and_matches_the_model(export, model):
    emb = audiomosaic.load(export, device="cpu")
    assert emb.frontend.target_frames == T and emb.window_seconds == pytest.approx(1.28)
    wav = np.random.default_rng(0).normal(size=SR).astype(np.float32)
    out = emb.embed(wav, SR)
    assert out["embedding"].shape == (64,) and out["window_embeddings"].shape == (1, 64)
    torch.testing.assert_close(out["embedding"], _representation(model, wav), rtol=1e-4, atol=1e-4)


def test_windows_are_the_embeddings_of_the_slices(model):
    emb = Embedder(model, FrontendConfig(target_frames=T), device="cpu")
    wav = np.random.default_rng(1).normal(size=int(3.3 * SR)).astype(np.float32)
    out = emb.embed(wav, SR)
    hop = T * 160  # samples per window hop
    n_win = out["window_embeddings"].shape[0]
    assert n_win == 3  # 328 frames -> windows at frames 0, 128, 256 (the last zero-padded)
    torch.testing.assert_close(out["timestamps"], torch.tensor([0.64, 1.92, 3.20]))
    for k in range(n_win):
        piece = wav[k * hop: k * hop + samples_for_frames(T)]  # exactly the samples window k sees
        torch.testing.assert_close(out["window_embeddings"][k], _representation(model, piece), rtol=1e-4,
                                   atol=1e-4)
    torch.testing.assert_close(out["embedding"], out["window_embeddings"].mean(0))
    overlapped = emb.embed(wav, SR, hop_seconds=0.64)
    assert overlapped["window_embeddings"].shape[0] == 1 + int(np.ceil((328 - T) / 64))
    torch.testing.assert_close(overlapped["window_embeddings"][2], out["window_embeddings"][1], rtol=1e-4,
                               atol=1e-4)


def test_batches_lists_and_sample_rates(model):
    emb = Embedder(model, FrontendConfig(target_frames=T), device="cpu")
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=SR).astype(np.float32), rng.normal(size=2 * SR).astype(np.float32)
    batch = emb.embed(np.stack([a, b[:SR]]), SR)
    assert batch["embedding"].shape == (2, 64) and len(batch["timestamps"]) == 2
    torch.testing.assert_close(batch["embedding"][0], emb.embed(a, SR)["embedding"])
    listed = emb.embed([a, np.stack([b, b])], SR)  # a stereo clip of another length
    torch.testing.assert_close(listed["embedding"][1], emb.embed(b, SR)["embedding"])
    assert emb.embed(b[::2].copy(), 8000)["embedding"].shape == (64,)  # resampled to 16 kHz
    with pytest.raises(ValueError, match="shorter than one"):
        emb.embed(np.zeros(100, np.float32), SR)


def test_hear_functions_wrap_embed(export):
    """The HEAR scene embedding is ``embed``'s; HEAR timestamps are 50-ms segment centres, not window centres
    (the HEAR contract itself is tested in tests/test_hear.py)."""
    emb = audiomosaic.embed.load_model(str(export), device="cpu")
    audio = torch.randn(3, int(2.0 * SR))
    scene = audiomosaic.embed.get_scene_embeddings(audio, emb)
    torch.testing.assert_close(scene, emb.embed(audio, SR)["embedding"])
    torch.testing.assert_close(emb.embed(audio[0], SR)["timestamps"], torch.tensor([0.64, 1.92]))
    ts_emb, ts = audiomosaic.embed.get_timestamp_embeddings(audio, emb)
    assert ts_emb.shape == (3, 40, emb.timestamp_embedding_size)
    torch.testing.assert_close(ts[1], torch.arange(40, dtype=torch.float32) * 50 + 25)


def test_load_resume_checkpoint_uses_its_config(tmp_path, model):
    state = {"model": model.state_dict(), "step": 3,
             "config": {"encoder": to_dict(model.cfg), "frontend": to_dict(FrontendConfig(target_frames=64))}}
    torch.save(state, tmp_path / "step-00000003.pt")
    emb = audiomosaic.load(tmp_path / "step-00000003.pt", device="cpu")
    assert emb.frontend.target_frames == 64  # shorter windows; the position table is interpolated
    assert emb.embed(np.zeros(SR, np.float32) + 0.1, SR)["window_embeddings"].shape == (2, 64)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "audiomosaic", "embed", *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def test_cli_writes_array_and_names_and_rejects_a_corrupt_file(tmp_path, export):
    rng = np.random.default_rng(3)
    good = [tmp_path / "a.wav", tmp_path / "b.flac"]
    sf.write(good[0], 0.1 * rng.normal(size=int(1.5 * SR)), SR, subtype="PCM_16")
    sf.write(good[1], 0.1 * rng.normal(size=(int(0.7 * 44100), 2)), 44100)  # stereo, another rate
    out = tmp_path / "out" / "emb.npy"
    res = _cli(*good, "--checkpoint", export, "--out", out, "--device", "cpu")
    assert res.returncode == 0, res.stderr
    arr = np.load(out)
    assert arr.shape == (2, 64) and arr.dtype == np.float32
    assert json.loads(out.with_suffix(".json").read_text())["files"] == [str(p) for p in good]
    emb = audiomosaic.load(export, device="cpu")
    expected = emb.embed(read_audio(good[1], SR), SR)["embedding"].numpy()
    np.testing.assert_allclose(arr[1], expected, rtol=1e-5, atol=1e-5)

    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 10)
    res = _cli(good[0], bad, "--checkpoint", export, "--out", tmp_path / "x.npy")
    assert res.returncode == 2
    assert "broken.wav" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.npy").exists()
