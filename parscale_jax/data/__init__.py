"""Data: the offline code corpus (TFDS, array_record), tokenizers, grain pipelines."""
from parscale_jax.data.pipeline import DataConfig, train_dataset, validation_rows
