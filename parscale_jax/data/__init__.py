"""Data: the offline code corpus (TFDS, array_record), tokenizers, grain pipelines."""
from parscale_jax.data.config import DataConfig

_PIPELINE_EXPORTS = ("train_dataset", "validation_rows")


def __getattr__(name: str):
  if name in _PIPELINE_EXPORTS:  # Loads grain and TFDS: only where data is read.
    import parscale_jax.data.pipeline as pipeline
    return getattr(pipeline, name)
  raise AttributeError(f"module 'parscale_jax.data' has no attribute {name!r}")
