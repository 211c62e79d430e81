"""The built-in offline corpus: Python source files as a TFDS dataset stored as array_record.

The default source is the running interpreter's standard library (site-packages excluded), our
offline counterpart of the paper's Stack-V2-Python; a user's directory or glob of text files works
the same way. Files are read in sorted order and split into train/validation by a hash of their
relative path, so the split is stable when files are added. Built once per data dir and file
contents (names, sizes, modification times), reused while they are unchanged. Documents are stored
as raw bytes: the byte tokenizer reads them as they are, other tokenizers decode them as UTF-8.
"""
from __future__ import annotations

import fcntl
import glob as globlib
import hashlib
import os
import platform
import sysconfig
from pathlib import Path

import tensorflow_datasets as tfds
from absl import logging as absl_logging

from parscale_jax.errors import UserError

STDLIB = "stdlib"
EXCLUDED_DIRS = {"site-packages", "dist-packages", "__pycache__"}


def source_files(source: str) -> tuple[Path, list[Path]]:
  """(root, sorted files) for `stdlib`, a directory (every file, recursively) or a glob."""
  if source == STDLIB:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in root.rglob("*.py") if not EXCLUDED_DIRS & set(p.relative_to(root).parts)]
  elif os.path.isdir(source):
    root = Path(source)
    files = [p for p in root.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(root).parts)]
  else:
    matches = sorted(globlib.glob(os.path.expanduser(source), recursive=True))
    files = [Path(p) for p in matches if os.path.isfile(p)]
    root = Path(os.path.commonpath(files)) if files else Path(".")
    if root.is_file():
      root = root.parent
  if not files:
    raise UserError(f"data.source: no files found for {source!r}")
  return root, sorted(files, key=lambda p: p.relative_to(root).as_posix())


def is_validation(relative_path: str, val_percent: int) -> bool:
  digest = hashlib.sha256(relative_path.encode()).digest()
  return int.from_bytes(digest[:4], "little") % 100 < val_percent


def content_hash(source: str) -> str:
  """A hash of the file list with each file's size and modification time: a built dataset is
  reused only while its files are unchanged."""
  root, files = source_files(source)
  digest = hashlib.sha256()
  for p in files:
    st = p.stat()
    digest.update(f"{p.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
  return digest.hexdigest()[:12]


def config_name(source: str) -> str:
  if source == STDLIB:
    prefix = f"stdlib-py{platform.python_version()}"
  else:
    prefix = "files-" + hashlib.sha256(os.path.abspath(os.path.expanduser(source)).encode()).hexdigest()[:12]
  return f"{prefix}-{content_hash(source)}"


class CodeCorpusConfig(tfds.core.BuilderConfig):
  def __init__(self, *, source: str, val_percent: int, **kwargs):
    super().__init__(name=f"{config_name(source)}-val{val_percent}", **kwargs)
    self.source = source
    self.val_percent = val_percent


class ParscaleCodeCorpus(tfds.core.GeneratorBasedBuilder):
  """Source files as documents: features `text` and `path`."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=f"Text/code files from {self.builder_config.source}",
        features=tfds.features.FeaturesDict({"text": tfds.features.Text(),
                                             "path": tfds.features.Text()}),
        metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    root, files = source_files(self.builder_config.source)
    self.info.metadata["fingerprint"] = {
        "source": self.builder_config.source, "root": str(root),
        "python_version": platform.python_version(), "file_count": len(files),
        "bytes": sum(p.stat().st_size for p in files), "content_hash": content_hash(self.builder_config.source)}
    val_percent = self.builder_config.val_percent
    rel = [(p, p.relative_to(root).as_posix()) for p in files]
    if len(rel) < 2:
      raise UserError(f"data.source: {self.builder_config.source!r} has {len(rel)} file; a train "
                      f"and a validation split need at least 2")
    val = [x for x in rel if is_validation(x[1], val_percent)]
    if not val or len(val) == len(rel):  # A small corpus: hold out exactly one file.
      val = [min(rel, key=lambda x: hashlib.sha256(x[1].encode()).digest())]
    train = [x for x in rel if x not in val]
    return {"train": self._generate_examples(train), "validation": self._generate_examples(val)}

  def _generate_examples(self, files):
    for path, rel in files:
      data = path.read_bytes()  # Raw bytes: the byte tokenizer sees every byte as it is.
      if data:
        yield rel, {"text": data, "path": rel}


def build_code_corpus(source: str, data_dir: str | Path, val_percent: int = 5):
  """Builds (once) and returns the builder for `source`; later calls reuse the stored files."""
  data_dir = Path(os.path.expanduser(str(data_dir)))
  absl_logging.set_verbosity(absl_logging.ERROR)  # tfds warns about every custom config.
  tfds.disable_progress_bar()
  data_dir.mkdir(parents=True, exist_ok=True)
  make = lambda: ParscaleCodeCorpus(config=CodeCorpusConfig(source=source, val_percent=val_percent),
                                    data_dir=str(data_dir), file_format="array_record")
  builder = make()
  if not builder.is_prepared():
    # Several processes (sweep workers, concurrent sweeps) may ask at once: one builds, the
    # others wait for it and then read what it built.
    with open(data_dir / f".build-{config_name(source)}.lock", "a") as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)
      builder = make()
      if not builder.is_prepared():
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(verify_ssl=False))
  return builder
