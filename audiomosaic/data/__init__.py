"""Data: offline corpora built from registry packages, loaders for real benchmarks, datasets and caches.

``build(recipe, out, seed)`` makes (or reuses) a corpus; ``load_manifest`` reads any supported benchmark into a
:class:`Manifest`; :class:`AudioDataset` + :func:`collate` feed DataLoaders; :class:`FeatureCache` stores
fbanks; the ``large`` recipe's render-on-the-fly datasets come from :func:`load_onthefly`.
"""
from audiomosaic.data.cache import CachedFeatureDataset, FeatureCache
from audiomosaic.data.check import check_manifest
from audiomosaic.data.corpus import build
from audiomosaic.data.dataset import AudioDataset, SkipCounter, collate
from audiomosaic.data.manifest import (
                       Item,
                       Manifest,
                       load_audioset,
                       load_csv,
                       load_esc50,
                       load_folder,
                       load_manifest,
                       load_speech_commands,
)
from audiomosaic.data.onthefly import SpeechDataset, SynthNotesDataset, load_onthefly

__all__ = ["build", "Item", "Manifest", "load_manifest", "load_audioset", "load_esc50", "load_speech_commands",
           "load_folder", "load_csv", "AudioDataset", "collate", "SkipCounter", "FeatureCache",
           "CachedFeatureDataset", "check_manifest", "SpeechDataset", "SynthNotesDataset", "load_onthefly"]
