"""parscale-jax: parallel scaling (ParScale) experiments in JAX and Flax NNX."""
from parscale_jax.model import (ModelConfig, ParScaleLM, create_model, generate, load_pretrained,
                                preset, save_pretrained)

__version__ = "0.1.0"
