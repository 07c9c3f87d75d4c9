"""Waveform and spectrogram augmentation.

- :mod:`~audiomosaic.augment.chain`: the paper's two-view pre-training chain (docs/method.md §3), batched in torch;
- :mod:`~audiomosaic.augment.filters`: FFT filters (high-pass, band-stop) and per-row helpers;
- :mod:`~audiomosaic.augment.vocoder`: the phase vocoder behind time stretch and pitch shift;
- :mod:`~audiomosaic.augment.supervised`: fine-tuning's mixup, SpecAugment and spectrogram noise.
"""
from audiomosaic.augment.chain import TwoViewAugment, apply_chain, sample_params, two_view_fbank
from audiomosaic.augment.supervised import mixup, spec_augment, spec_noise

__all__ = ["TwoViewAugment", "apply_chain", "sample_params", "two_view_fbank", "mixup", "spec_augment", "spec_noise"]
