"""Shared fixtures: paths to the golden checkpoints, tiny model configs."""
import collections
import os
import signal
import tempfile
from pathlib import Path

import pytest

# Tests write nothing into the user's home: ~/.cache (built corpora, compiled programs) and other
# dot folders are a temporary home, shared by the session's workers and the processes they start.
_HOME = Path(tempfile.gettempdir()) / f"parscale-test-home-{os.environ.get('PYTEST_XDIST_TESTRUNUID', os.getpid())}"
_HOME.mkdir(exist_ok=True)
os.environ["HOME"] = str(_HOME)
# Many tests (and the CLI processes they start) compile the same tiny programs: a persistent
# compilation cache for the session turns the repeats into cache hits. Set before jax starts.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="parscale-test-xla-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# Partitionable threefry (jax's default, right for sharded initialisation at scale) compiles
# parameter initialisation ~3x slower on CPU; the tests, which compare runs made under the same
# setting (CLI subprocesses inherit it), use the classic variant to stay within their time budget.
os.environ.setdefault("JAX_THREEFRY_PARTITIONABLE", "0")
# Tests run tiny programs once: XLA's backend optimisations cost more compile time than they save.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import parscale_jax  # noqa: E402,F401  Before any test module imports JAX: no TPU runtime without a TPU.

REPO = Path(__file__).resolve().parents[1]
# Golden checkpoints and outputs of the reference implementation (tests/fixtures/README.md).
FIXTURES = Path(__file__).resolve().parent / "fixtures"


# Outcomes of the tests marked tpu, stated on their own line at the end of the run: a CI log must
# show that the TPU compiles ran, not that they were skipped for want of libtpu.
_TPU_OUTCOMES = collections.Counter()


def pytest_runtest_logreport(report):
  if "tpu" in report.keywords and (report.when == "call" or report.outcome != "passed"):
    _TPU_OUTCOMES[report.outcome] += 1


def pytest_terminal_summary(terminalreporter):
  if _TPU_OUTCOMES:
    terminalreporter.write_line("TPU compile tests (marked tpu): "
                                + ", ".join(f"{n} {outcome}" for outcome, n in sorted(_TPU_OUTCOMES.items())))


def fixture_dir(name: str) -> Path:
  path = FIXTURES / name
  assert path.is_dir(), f"golden fixture {path} is missing from the repository"
  return path


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """One built copy of the stdlib corpus for the whole session."""
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture
def ctrl_c_reaches_children():
  """Processes the test starts get SIGINT at its default, as a terminal's foreground job does. A
  shell starts background jobs with SIGINT ignored and a child inherits an ignore: from a suite
  started with `nohup ... &`, a Ctrl-C sent to them would reach no one. Handled here, it is the
  default there."""
  inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
  yield
  signal.signal(signal.SIGINT, inherited)


def tiny_train_dict(data_dir: str, **top) -> dict:
  """A seconds-long training config: 2-layer width-32 model, 32-token rows."""
  config = {
      "model": {"hidden_size": 32, "intermediate_size": 64, "num_layers": 2, "num_heads": 4,
                "num_kv_heads": 2, "P": 2, "prefix_tokens": 4},
      "data": {"data_dir": data_dir, "seq_len": 32, "val_tokens": 1024, "shuffle_window": 256},
      "optim": {"lr": 1e-2},
      "tokens": 8 * 32 * 30, "batch_size": 8, "checkpoint_every": 10, "log_every": 1,
      "tensorboard": False,
  }
  for key, value in top.items():
    if isinstance(value, dict):
      config[key] = {**config.get(key, {}), **value}
    else:
      config[key] = value
  return config
