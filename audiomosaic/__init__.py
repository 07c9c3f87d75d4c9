"""audiomosaic: a reproducibility kit for AudioMosaic (contrastive masked audio representation learning)."""
from .config import (AugmentConfig, DataConfig, EncoderConfig, FrontendConfig, MaskConfig, OptimConfig,
                     PretrainConfig, RuntimeConfig, apply_overrides, encoder_config)
from .augment import TwoViewAugment, sample_params, two_view_fbank
from .frontend import fbank, fbank_batch
from .losses import nt_xent
from .masking import freq_mask, time_mask, unstructured_mask, view_masks
from .model import AudioMosaic, create_model
from .embed import Embedder, load  # audiomosaic.load(path).embed(waveform, sample_rate)
from .config import TRAIN_PRESETS, resolve
from .engine import pretrain  # audiomosaic.pretrain(audiomosaic.resolve("smoke"), "runs/demo")

__version__ = "0.1.0"
