"""audiomosaic: a reproducibility kit for AudioMosaic (contrastive masked audio representation learning)."""
from .config import (AugmentConfig, DataConfig, EncoderConfig, FrontendConfig, MaskConfig, OptimConfig,
                     PretrainConfig, RuntimeConfig, apply_overrides, encoder_config)
from .frontend import fbank, fbank_batch
from .losses import nt_xent
from .masking import freq_mask, time_mask, unstructured_mask, view_masks
from .model import AudioMosaic, create_model

__version__ = "0.1.0"
