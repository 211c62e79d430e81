"""The built-in offline corpus: Python source files as a TFDS dataset stored as array_record.

The default source is the running interpreter's standard library (site-packages excluded), our
offline counterpart of the paper's Stack-V2-Python; a user's directory or glob of text files works
the same way. Files are read in sorted order and split into train/validation by a hash of their
relative path, so the split is stable when files are added. Built once per data dir and file
contents (names, sizes, modification times), reused while they are unchanged. Documents are stored
as raw bytes: the byte tokenizer reads them as they are, other tokenizers decode them as UTF-8.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import glob as globlib
import hashlib
import io
import json
import os
from pathlib import Path
import platform
import shutil
import sysconfig
from typing import NamedTuple

from absl import logging as absl_logging
import tensorflow_datasets as tfds

from parscale_jax.bars import progress_bar
from parscale_jax.data.config import STDLIB
from parscale_jax.errors import UserError, is_disk_full


# Documents longer than this are stored as consecutive pieces of at most this many bytes, cut at a
# line end where one is near: the pipeline then never holds a whole huge document (a 64 MB file
# grew training to 20 GB resident), and its memory is bounded whatever the document's size.
# The standard library's largest file is 0.76 MB, so its documents are whole.
MAX_PIECE_BYTES = 1 << 20
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
  return root, sorted(files, key=lambda p: utf8_name(p.relative_to(root).as_posix()))


def is_validation(relative_path: str, val_percent: int) -> bool:
  digest = hashlib.sha256(relative_path.encode()).digest()
  return int.from_bytes(digest[:4], "little") % 100 < val_percent


def utf8_name(name: str) -> str:
  """A file name as text that UTF-8 can encode: the bytes of a name that is not UTF-8 (which
  Python holds as surrogate escapes) are written as \\xNN."""
  return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def utf8_bytes(text: str) -> bytes:
  """UTF-8 bytes of a text; a lone surrogate (JSON's "\\ud800" escape) becomes "?"."""
  return text.encode("utf-8", "replace")


class Listing(NamedTuple):
  """A source's files, listed once per build: its root, sorted files and their content hash."""
  root: Path
  files: list[Path]
  digest: str


def list_source(source: str) -> Listing:
  """The files of `source` and a hash of the file list with each file's size, modification and
  change times: a built dataset is reused only while its files are unchanged. The change time
  (ctime) moves with every write and cannot be set back, so an edit that keeps a file's size and
  mtime is seen too."""
  root, files = source_files(source)
  digest = hashlib.sha256()
  for p in files:
    st = p.stat()
    digest.update(f"{utf8_name(p.relative_to(root).as_posix())}\0{st.st_size}\0{st.st_mtime_ns}"
                  f"\0{st.st_ctime_ns}\n".encode())
  return Listing(root, files, digest.hexdigest()[:12])


def content_hash(source: str) -> str:
  return list_source(source).digest


RECORD_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".arrow": "arrow"}


def record_format(source: str, files: list[Path]) -> str | None:
  """'jsonl', 'parquet' or 'arrow' (a `datasets.save_to_disk` folder) when every file holds records
  with a text field; None when each file is one document."""
  folder = Path(os.path.expanduser(source))
  if folder.is_dir() and (folder / "dataset_dict.json").exists():
    splits = ", ".join(sorted(p.name for p in folder.iterdir() if (p / "state.json").exists()))
    raise UserError(f"data.source: {source} is a saved DatasetDict; point data.source at one of "
                    f"its splits ({splits or 'its split folders'})")
  if folder.is_dir() and (folder / "state.json").exists():
    return "arrow"
  kinds = {RECORD_SUFFIXES.get(p.suffix) for p in files}
  return kinds.pop() if len(kinds) == 1 and None not in kinds else None


def config_name(source: str, text_key: str = "text", digest: str | None = None) -> str:
  if source == STDLIB:
    prefix = f"stdlib-py{platform.python_version()}"
  else:
    key = f"{os.path.abspath(os.path.expanduser(source))}\0{text_key}"
    prefix = "files-" + hashlib.sha256(key.encode()).hexdigest()[:12]
  return f"{prefix}-{digest or content_hash(source)}"


class CodeCorpusConfig(tfds.core.BuilderConfig):
  def __init__(self, *, source: str, val_percent: int, text_key: str = "text", **kwargs):
    self.listing = list_source(source)
    super().__init__(name=f"{config_name(source, text_key, self.listing.digest)}-val{val_percent}",
                     **kwargs)
    self.source = source
    self.val_percent = val_percent
    self.text_key = text_key


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
    root, files, digest = self.builder_config.listing
    sizes = {p: p.stat().st_size for p in files}
    self.info.metadata["fingerprint"] = {
        "source": self.builder_config.source, "root": str(root),
        "python_version": platform.python_version(), "file_count": len(files),
        "bytes": sum(sizes.values()), "content_hash": digest}
    val_percent = self.builder_config.val_percent
    fmt = record_format(self.builder_config.source, files)
    if fmt is not None:
      return self._record_splits(fmt, [p for p in files if fmt != "arrow" or p.suffix == ".arrow"],
                                 root, val_percent)
    rel = [(p, utf8_name(p.relative_to(root).as_posix())) for p in files if sizes[p] > 0]
    if len(rel) < 2:
      raise UserError(f"data.source: {self.builder_config.source!r} has {len(rel)} non-empty "
                      f"file(s); a train and a validation split need at least 2")
    val = [x for x in rel if is_validation(x[1], val_percent)]
    if not val or len(val) == len(rel):  # A small corpus: hold out exactly one file.
      val = [min(rel, key=lambda x: hashlib.sha256(x[1].encode()).digest())]
    val_paths = {p for p, _ in val}
    train = [x for x in rel if x[0] not in val_paths]
    bar = progress_bar(len(rel), 0, f"building the corpus of {self.builder_config.source}", "file")
    return {"train": self._generate_examples(train, bar),
            "validation": self._generate_examples(val, bar)}

  def _record_splits(self, fmt: str, files: list[Path], root: Path, val_percent: int):
    """Records split into train and validation by a hash of each document's text."""
    docs = list(read_records(fmt, files, root, self.builder_config.text_key))
    if len(docs) < 2:
      raise UserError(f"data.source: {self.builder_config.source!r} has {len(docs)} non-empty "
                      f"document; a train and a validation split need at least 2")
    digest = lambda d: hashlib.sha256(d[1]).hexdigest()
    val = [d for d in docs if is_validation(digest(d), val_percent)]
    if not val or len(val) == len(docs):
      val = [min(docs, key=digest)]
    val_ids = {d[0] for d in val}
    train = [d for d in docs if d[0] not in val_ids]

    def examples(split):
      for key, text in split:
        for i, piece in enumerate(pieces(text)):
          piece_key = key if i == 0 else f"{key}#{i}"
          yield piece_key, {"text": piece, "path": piece_key}
    return {"train": examples(train), "validation": examples(val)}

  def _generate_examples(self, files, bar):
    for path, rel in files:
      # Raw bytes: the byte tokenizer sees every byte as it is. Read piece by piece.
      with open(path, "rb") as f:
        for i, piece in enumerate(pieces(f)):
          key = rel if i == 0 else f"{rel}#{i}"
          yield key, {"text": piece, "path": key}
      bar.update()
      if bar.n == bar.total:
        bar.close()


def _cut(data: bytes) -> int:
  """Where to end a piece of `data` (longer than MAX_PIECE_BYTES): after the last newline in its
  second half, else at a UTF-8 character boundary."""
  newline = data.rfind(b"\n", MAX_PIECE_BYTES // 2, MAX_PIECE_BYTES)
  if newline >= 0:
    return newline + 1
  end = MAX_PIECE_BYTES
  while end > 0 and data[end] & 0xC0 == 0x80:  # A UTF-8 continuation byte: back off.
    end -= 1
  return end or MAX_PIECE_BYTES


def pieces(stream):
  """The non-empty pieces (each at most MAX_PIECE_BYTES) of a binary stream or a bytes object,
  holding at most two pieces' bytes at a time."""
  if isinstance(stream, bytes):
    stream = io.BytesIO(stream)
  buffer = b""
  while True:
    chunk = stream.read(MAX_PIECE_BYTES)
    buffer += chunk
    while len(buffer) > MAX_PIECE_BYTES or (not chunk and buffer):
      end = _cut(buffer) if len(buffer) > MAX_PIECE_BYTES else len(buffer)
      yield buffer[:end]
      buffer = buffer[end:]
    if not chunk:
      return


def read_records(fmt: str, files: list[Path], root: Path, text_key: str):
  """(id, UTF-8 bytes) of every non-empty text in record files; a missing field is an error."""
  for path in files:
    rel = utf8_name(path.relative_to(root).as_posix() if path != root else path.name)
    if fmt == "jsonl":
      with open(path, "rb") as f:
        for i, line in enumerate(f, 1):
          if not line.strip():
            continue
          try:
            # A byte-order mark may open a UTF-8 file (Windows editors write one).
            record = json.loads(line.decode("utf-8-sig" if i == 1 else "utf-8"))
          except UnicodeDecodeError as e:
            raise UserError(f"data.source: {path}:{i}: not UTF-8 text ({e.reason} at byte "
                            f"{e.start}); JSON lines must be UTF-8") from None
          except json.JSONDecodeError:
            raise UserError(f"data.source: {path}:{i}: not a JSON object") from None
          if not isinstance(record, dict) or text_key not in record:
            fields = ", ".join(record) if isinstance(record, dict) else type(record).__name__
            raise UserError(f"data.text_key: {path}:{i} has no field {text_key!r} (has: {fields})")
          if not isinstance(record[text_key], str):
            raise UserError(f"data.text_key: {path}:{i}: field {text_key!r} is not a string")
          if record[text_key]:
            yield f"{rel}:{i}", utf8_bytes(record[text_key])
      continue
    import pyarrow as pa
    import pyarrow.parquet as pq
    try:
      table = pq.read_table(path) if fmt == "parquet" else pa.ipc.open_stream(pa.memory_map(str(path))).read_all()
    except (pa.ArrowInvalid, OSError) as e:
      raise UserError(f"data.source: {path}: cannot be read as {fmt} ({str(e).splitlines()[0]})") from None
    if text_key not in table.column_names:
      raise UserError(f"data.text_key: {path} has no column {text_key!r} "
                      f"(has: {', '.join(table.column_names)})")
    column = table.column(text_key)
    if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
      raise UserError(f"data.text_key: column {text_key!r} of {path} is {column.type}, not text")
    if column.null_count:
      first = column.to_pylist().index(None)
      raise UserError(f"data.text_key: column {text_key!r} of {path} has {column.null_count} null "
                      f"text(s) (first at row {first}); drop or fill them")
    texts = column.to_pylist()
    if not any(texts):
      raise UserError(f"data.text_key: column {text_key!r} of {path} is empty")
    for i, text in enumerate(texts):
      if text:
        yield f"{rel}:{i}", utf8_bytes(text)


def build_code_corpus(source: str, data_dir: str | Path, val_percent: int = 5, text_key: str = "text"):
  """Builds (once) and returns the builder for `source`; later calls reuse the stored files."""
  data_dir = Path(os.path.expanduser(str(data_dir)))
  absl_logging.set_verbosity(absl_logging.ERROR)  # tfds warns about every custom config.
  tfds.disable_progress_bar()
  data_dir.mkdir(parents=True, exist_ok=True)
  config = CodeCorpusConfig(source=source, val_percent=val_percent, text_key=text_key)
  make = lambda: ParscaleCodeCorpus(config=config, data_dir=str(data_dir), file_format="array_record")
  builder = make()
  if not builder.is_prepared():
    # Several processes (sweep workers, concurrent sweeps) may ask at once: one builds, the
    # others wait for it and then read what it built.
    with open(data_dir / f".build-{config.name}.lock", "a") as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)
      builder = make()
      if not builder.is_prepared():
        _prepare(builder)
  return builder


def _prepare(builder) -> None:
  """Builds the corpus, quietly (TFDS announces a download of 'Unknown size'); a failed build
  leaves no half-built folder behind that a retry would trip over, and a full disk is one
  OSError(ENOSPC) (the stored records are compressed: their size is not known beforehand)."""
  target = Path(builder.data_dir)
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(verify_ssl=False))
  except BaseException as e:
    shutil.rmtree(target, ignore_errors=True)
    for parent in (target.parent, target.parent.parent):  # version/, then the config folder.
      with contextlib.suppress(OSError):
        parent.rmdir()  # Only if empty.
    # array_record reports a full disk as RuntimeError("... No space left on device; ...").
    if is_disk_full(e):
      raise OSError(errno.ENOSPC, "No space left on device (building the corpus)",
                    str(target.parent.parent)) from None
    raise

