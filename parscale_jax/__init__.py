"""parscale-jax: parallel scaling (ParScale) experiments in JAX and Flax NNX."""
__version__ = "0.1.0"

from parscale_jax.platforms import skip_absent_tpu as _skip_absent_tpu
from parscale_jax.versions import check_jax_flax as _check_jax_flax

_check_jax_flax()
_skip_absent_tpu()  # Before anything imports JAX.

# Imported on first use, so that `parscale` can restart itself (parscale_jax/hostmem.py) before
# JAX is loaded.
_MODEL_EXPORTS = ("ModelConfig", "ParScaleLM", "create_model", "generate", "load_pretrained",
                  "preset", "save_pretrained")


def __getattr__(name: str):
  if name in _MODEL_EXPORTS:
    import parscale_jax.model
    return getattr(parscale_jax.model, name)
  if name == "get_tokenizer":
    from parscale_jax.data.tokenizer import get_tokenizer
    return get_tokenizer
  raise AttributeError(f"module 'parscale_jax' has no attribute {name!r}")


def __dir__():
  return sorted([*globals(), *_MODEL_EXPORTS, "get_tokenizer"])
