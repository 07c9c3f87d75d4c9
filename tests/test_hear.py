"""HEAR 2021 API (audiomosaic.hear), driven the way hear-validator and hear-eval-kit drive a module.

``validate`` follows hearvalidator/validate.py (hearbenchmark/hear-validator): import the module by name,
``load_model(path)``, ``model.to(device)``, check ``sample_rate`` and the embedding sizes, then timestamp embeddings
of 2 sounds of 1.07, 1.98 and 4.0 s and scene embeddings of 4 sounds of 2.74 s, all white noise in [-1, 1] made on the
device. Its errors are asserts here, and so are its warnings (hop > 50 ms, timestamps that start late or end early).
"""
import importlib

import numpy as np
import pytest
import torch

import audiomosaic.hear
from audiomosaic.config import FrontendConfig
from audiomosaic.embed import segment_centres_ms
from audiomosaic.frontend import fbank

SR = 16000
T = 128  # window: 128 frames = 1.28 s, 8 patch columns of 160 ms
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def model(nano_model):
    return nano_model


@pytest.fixture(scope="module")
def export(nano_export):
    return str(nano_export)


def _noise(n, seconds, device="cpu"):
    return torch.rand((n, int(seconds * SR)), device=device) * 2 - 1.0  # as the validator makes its batches


def check_timestamps(module, model, num_audio, length, device):
    embeddings, timestamps = module.get_timestamp_embeddings(_noise(num_audio, length, device), model)
    assert embeddings.dtype == torch.float32
    embeddings, timestamps = embeddings.detach().cpu().numpy(), timestamps.detach().cpu().numpy()
    assert embeddings.ndim == 3 and timestamps.ndim == 2
    assert embeddings.shape[0] == num_audio and embeddings.shape[:2] == timestamps.shape
    assert embeddings.shape[2] == model.timestamp_embedding_size
    assert np.isfinite(embeddings).all()
    assert timestamps.shape[1] > 1
    diff = np.diff(timestamps)
    avg = np.mean(diff)
    assert np.max(diff) <= 50.0 and np.max(np.abs(diff - avg)) <= 1  # the validator: warning, then error
    assert (diff > 0).all() and (timestamps == timestamps[:1]).all()  # increasing, the same for every sound
    end = 1000 * length
    assert 0 < timestamps.min() <= avg  # the validator warns when they begin later than one hop
    assert timestamps.max() >= end - avg and timestamps.max() >= end - 50  # error below end - 2 hops, warning here
    assert timestamps.max() < end
    return embeddings, timestamps


def validate(module_name, model_file_path, device):
    module = importlib.import_module(module_name)
    for name in ("load_model", "get_scene_embeddings", "get_timestamp_embeddings"):
        assert hasattr(module, name), name
    model = module.load_model(model_file_path)
    assert isinstance(model, torch.nn.Module)
    model.to(device)
    assert model.sample_rate in [16000, 22050, 44100, 48000]
    assert isinstance(model.scene_embedding_size, int) and isinstance(model.timestamp_embedding_size, int)
    for length in (1.07, 1.98, 4.0):
        check_timestamps(module, model, 2, length, device)
    scene = module.get_scene_embeddings(_noise(4, 2.74, device), model)
    assert scene.dtype == torch.float32
    assert scene.detach().cpu().numpy().shape == (4, model.scene_embedding_size)
    return module, model


@pytest.mark.parametrize("device", DEVICES)
def test_validator_passes(export, device):
    module, model = validate("audiomosaic.hear", export, device)
    assert model.sample_rate == SR and model.scene_embedding_size == model.timestamp_embedding_size == 64
    assert model.device.type == device and not model.training and not model.model.training
    model.train()  # inference only: the encoder stays in eval mode (no drop path)
    assert not model.model.training
    audio = _noise(2, 1.5, device)
    emb, _ = module.get_timestamp_embeddings(audio, model)
    assert not emb.requires_grad


def test_embed_module_exposes_the_same_api(export):
    validate("audiomosaic.embed", export, "cpu")


def test_identical_inputs_give_identical_embeddings(export):
    model = audiomosaic.hear.load_model(export, device="cpu")
    a, b = _noise(1, 1.5)[0], _noise(1, 1.5)[0]
    first_ts, first_t = audiomosaic.hear.get_timestamp_embeddings(torch.stack([a, b, a]), model)
    again_ts, again_t = audiomosaic.hear.get_timestamp_embeddings(torch.stack([a, b, a]), model)
    assert torch.equal(first_ts, again_ts) and torch.equal(first_t, again_t)
    torch.testing.assert_close(first_ts[0], first_ts[2], rtol=0, atol=1e-6)
    assert not torch.allclose(first_ts[0], first_ts[1], atol=1e-3)  # different sounds differ
    scene = audiomosaic.hear.get_scene_embeddings(torch.stack([a, b, a]), model)
    assert torch.equal(scene, audiomosaic.hear.get_scene_embeddings(torch.stack([a, b, a]), model))
    torch.testing.assert_close(scene[0], scene[2], rtol=0, atol=1e-6)
    torch.testing.assert_close(scene[:1], audiomosaic.hear.get_scene_embeddings(a[None], model), rtol=1e-5,
                               atol=1e-5)  # a sound's embedding does not depend on the rest of its batch


def test_timestamp_embeddings_are_interpolated_column_features(export, model):
    """At a column centre (87.5 + 160 k ms) the embedding is fc_norm of that column's token mean; the hop is a
    load_model option; a later window changes nothing before it (windows are tiled, each encoded alone)."""
    hear = audiomosaic.hear.load_model(export, device="cpu", timestamp_hop_ms=5.0)
    wav = _noise(1, 2.0)
    emb, ts = audiomosaic.hear.get_timestamp_embeddings(wav, hear)
    assert ts.shape == (1, 400) and torch.allclose(torch.diff(ts), torch.tensor(5.0))
    cfg = FrontendConfig(target_frames=T)
    windows = [fbank(wav[0, k * T * 160:], SR, cfg) for k in (0, 1)]  # window k starts at frame k * T
    with torch.no_grad():
        tokens = model.forward_features(torch.stack(windows)[:, None])[:, 1:]  # (2, 8 * 8, D) time-major
        means = tokens.reshape(2, T // 16, 8, -1).mean(2).reshape(2 * T // 16, -1)  # (16 columns, D)
    columns = model.fc_norm(means)
    for k in (0, 3, 8, 11):  # columns of window 0 and of window 1 (the zero-padded one)
        j = int((87.5 + 160 * k - 2.5) / 5)
        assert ts[0, j] == 87.5 + 160 * k
        torch.testing.assert_close(emb[0, j], columns[k], rtol=1e-4, atol=1e-4)
    j = int((167.5 - 2.5) / 5)  # half-way between columns 0 and 1: the mean of their token means, fc_norm-ed
    torch.testing.assert_close(emb[0, j], model.fc_norm((means[0] + means[1]) / 2), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(emb[0, 0], columns[0], rtol=1e-4, atol=1e-4)  # before the first centre: clamped
    changed = wav.clone()
    changed[:, int(1.3 * SR):] = _noise(1, 2.0)[:, int(1.3 * SR):]  # new audio from 1.3 s on (window 1)
    emb2, _ = audiomosaic.hear.get_timestamp_embeddings(changed, hear)
    early, late = ts[0] < 1207.5, ts[0] > 1367.5  # up to window 0's last column centre; from window 1's first
    torch.testing.assert_close(emb2[0, early], emb[0, early], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(emb2[0, late], emb[0, late], atol=1e-2)


def test_timestamps_after_the_last_column_centre_repeat_it(export):
    """0.34 s = 32 frames = 2 full columns (centres 87.5, 247.5 ms): later timestamps hold column 1's feature
    instead of leaning towards the zero-padded rest of the window."""
    model = audiomosaic.hear.load_model(export, device="cpu", timestamp_hop_ms=10.0)
    emb, ts = audiomosaic.hear.get_timestamp_embeddings(_noise(1, 0.34), model)
    late = ts[0] >= 247.5
    assert ts[0, -1] == 335 and late.sum() == 9
    torch.testing.assert_close(emb[0, late], emb[0, late][:1].expand(9, -1), rtol=0, atol=1e-6)
    assert not torch.allclose(emb[0, 0], emb[0, -1], atol=1e-3)


@pytest.mark.parametrize("hop", [50.0, 33.3, 12.5, 0.7])
def test_segment_centres_are_inside_the_clip_and_cover_its_end(hop):
    for n_samples in [1, 399, 400, 800, 1876, 17120, 33300, *range(1000, 40000, 997)]:
        t = segment_centres_ms(n_samples, SR, hop)
        duration = n_samples * 1000 / SR
        assert 0 < t.min() and t.max() < duration
        if len(t) > 1:
            assert t.max() >= duration - hop - 1e-9 and torch.allclose(torch.diff(t), torch.tensor(hop, dtype=t.dtype))
        else:
            assert duration <= 1.5 * hop


@pytest.mark.parametrize("seconds", [0.025, 0.04, 0.3, 1.0])  # all shorter than one 1.28-s window
def test_short_clips(export, seconds):
    model = audiomosaic.hear.load_model(export, device="cpu")
    audio = _noise(2, seconds)
    emb, ts = audiomosaic.hear.get_timestamp_embeddings(audio, model)
    n = max(1, round(1000 * seconds / 50))
    assert emb.shape == (2, n, 64) and ts.shape == (2, n) and torch.isfinite(emb).all()
    assert (ts > 0).all() and (ts < 1000 * seconds).all() and (torch.diff(ts) == 50).all()
    assert audiomosaic.hear.get_scene_embeddings(audio, model).shape == (2, 64)


def test_errors_and_dtypes(export):
    with pytest.raises(ValueError, match="needs a checkpoint"):
        audiomosaic.hear.load_model("")
    with pytest.raises(ValueError, match="needs a checkpoint"):
        audiomosaic.hear.load_model()  # what the validator calls without --model
    with pytest.raises(ValueError, match="timestamp_hop_ms"):
        audiomosaic.hear.load_model(export, timestamp_hop_ms=0)
    model = audiomosaic.hear.load_model(export, device="cpu")
    audio = _noise(2, 0.5)
    for fn in (audiomosaic.hear.get_scene_embeddings, audiomosaic.hear.get_timestamp_embeddings):
        with pytest.raises(ValueError, match=r"\(n_sounds, n_samples\)"):
            fn(audio[0], model)  # one 1-D clip
        with pytest.raises(ValueError, match=r"\(n_sounds, n_samples\)"):
            fn(audio[None], model)
        with pytest.raises(ValueError, match="floating point"):
            fn((audio * 32767).short(), model)
        with pytest.raises(ValueError, match="shorter than one 25"):
            fn(audio[:, :399], model)
    scene = audiomosaic.hear.get_scene_embeddings(audio, model)
    scene64 = audiomosaic.hear.get_scene_embeddings(audio.double(), model)
    assert scene64.dtype == torch.float32
    torch.testing.assert_close(scene64, scene)
    ts_np, _ = audiomosaic.hear.get_timestamp_embeddings(audio.numpy(), model)  # numpy, as read by soundfile
    torch.testing.assert_close(ts_np, audiomosaic.hear.get_timestamp_embeddings(audio, model)[0])
    empty_scene = audiomosaic.hear.get_scene_embeddings(audio[:0], model)
    empty_ts, empty_t = audiomosaic.hear.get_timestamp_embeddings(audio[:0], model)
    assert empty_scene.shape == (0, 64) and empty_ts.shape == (0, 10, 64) and empty_t.shape == (0, 10)
