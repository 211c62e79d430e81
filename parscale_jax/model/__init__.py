"""The ParScale model: config, modules, accounting, checkpoint import/export and decoding."""
from parscale_jax.model.config import PRESETS, ModelConfig, model_config_from_dict, preset
from parscale_jax.model.decode import decode_step, generate
from parscale_jax.model.hf_checkpoint import CheckpointError, load_pretrained, save_pretrained
from parscale_jax.model.parscale import (ParScaleLM, ParScaleParam, abstract_model, create_model,
                                         init_cache)
