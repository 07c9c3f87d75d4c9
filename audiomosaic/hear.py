"""HEAR 2021 module (https://hearbenchmark.com/hear-api.html): the name to give hear-validator and hear-eval-kit.

    hear-validator audiomosaic.hear --model runs/<run>/encoder.safetensors
    python -m heareval.embeddings.runner audiomosaic.hear --model runs/<run>/encoder.safetensors \\
        --tasks-dir tasks --model-options '{"timestamp_hop_ms": 25}'

``load_model(model_file_path, device="auto", timestamp_hop_ms=50.0, layer=None, batch_size=16)`` returns an
:class:`audiomosaic.embed.Embedder`, a ``torch.nn.Module`` with ``sample_rate`` (16000), ``scene_embedding_size``
and ``timestamp_embedding_size`` (both the encoder width). An empty path is a ``ValueError``: there are no default
weights. ``get_scene_embeddings(audio, model)`` takes (n_sounds, n_samples) float audio at 16 kHz and returns
(n_sounds, D); ``get_timestamp_embeddings(audio, model)`` returns (n_sounds, n_t, D) and timestamps (n_sounds, n_t)
in ms at the centres of ``timestamp_hop_ms`` segments. How both are computed: the docstring of
:mod:`audiomosaic.embed`.
"""
from audiomosaic.embed import get_scene_embeddings, get_timestamp_embeddings, load_model

__all__ = ["get_scene_embeddings", "get_timestamp_embeddings", "load_model"]
