"""audiomosaic: a reproducibility kit for AudioMosaic (contrastive masked audio representation learning)."""
from audiomosaic.augment.chain import TwoViewAugment, sample_params, two_view_fbank
from audiomosaic.config import (
                     AugmentConfig,
                     DataConfig,
                     EncoderConfig,
                     FrontendConfig,
                     MaskConfig,
                     OptimConfig,
                     PretrainConfig,
                     RuntimeConfig,
                     apply_overrides,
                     encoder_config,
                     resolve,
)
from audiomosaic.embed import Embedder, load  # audiomosaic.load(path).embed(waveform, sample_rate)
from audiomosaic.frontend import fbank, fbank_batch
from audiomosaic.losses import nt_xent
from audiomosaic.masking import freq_mask, time_mask, unstructured_mask, view_masks
from audiomosaic.model import AudioMosaic, create_model
from audiomosaic.presets import TRAIN_PRESETS
from audiomosaic.train.pretrain import pretrain  # audiomosaic.pretrain(audiomosaic.resolve("smoke"), "runs/demo")

__version__ = "0.1.0"
