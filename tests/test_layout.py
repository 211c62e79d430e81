"""The package's shape: no import circle between its modules (imports inside functions included)."""
import ast
from pathlib import Path

import pytest

from conftest import REPO


def _imports(path) -> set[str]:
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("parscale_jax"):
      found.add(node.module)
    elif isinstance(node, ast.Import):
      found.update(a.name for a in node.names if a.name.startswith("parscale_jax"))
  return found


def test_no_import_circle():
  package = REPO / "parscale_jax"
  graph = {}
  for path in package.rglob("*.py"):
    name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
    graph[name] = _imports(path)
  assert len(graph) > 30
  state: dict[str, int] = {}  # 1: on the current path, 2: finished.

  def visit(module, path):
    state[module] = 1
    for dep in graph.get(module, ()):
      assert state.get(dep) != 1, "import circle: " + " -> ".join(path + [dep])
      if dep not in state:
        visit(dep, path + [dep])
    state[module] = 2

  for module in graph:
    if module not in state:
      visit(module, [module])


def re_grep(pattern: str) -> list[str]:
  """Lines of the package matching `pattern`, as path:line."""
  import re
  return [f"{p.relative_to(REPO)}:{i}" for p in (REPO / "parscale_jax").rglob("*.py")
          for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(pattern, line)]


def _py_files_outside_the_package():
  return [p for d in ("tests", "benchmarks", "scripts") for p in (REPO / d).rglob("*.py")]


def test_nothing_outside_the_package_uses_its_private_names():
  offenders = []
  for path in _py_files_outside_the_package():
    tree = ast.parse(path.read_text())
    modules = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("parscale_jax"):
        offenders += [f"{path.name}: {a.name}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
        modules.update(a.asname or a.name for a in node.names)
      elif isinstance(node, ast.Import):
        modules.update((a.asname or a.name).split(".")[0] for a in node.names
                       if a.name.startswith("parscale_jax"))
    for node in ast.walk(tree):
      if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
          and node.value.id in modules and node.attr.startswith("_") and not node.attr.startswith("__")):
        offenders.append(f"{path.name}: {node.value.id}.{node.attr}")
  assert not offenders, offenders


def test_one_owner_for_the_law_the_run_record_and_package_paths():
  import re
  package = REPO / "parscale_jax"
  sources = {p: p.read_text() for p in package.rglob("*.py")}
  # k·ln P + 1 is written once, in scaling.py; everything else calls it or the law's multiplier.
  formula = re.compile(r"\*\s*(np|math)\.log\((P|p|best\.P)\b")
  assert [p.name for p, s in sources.items() if formula.search(s)] == ["scaling.py"]
  # The law's parameters are used by name: no position or spelled-out tuple outside its module.
  positional = re.compile(r'theta\[3\]|\[:, 3(:4)?\]|\("E", "A", "alpha", "k"\)')
  assert [p.name for p, s in sources.items() if positional.search(s)] in ([], ["law.py"])
  # Training needs no analysis (the numbers it shares with it live below both).
  train = [p.name for p, s in sources.items() if p.parent.name == "train" and "parscale_jax.analysis" in s]
  assert train == []
  assert not [p.name for p, s in sources.items() if "parents[" in s]
  # result.json is written by RunRecord alone (the sweep publishes copies of finished runs).
  writers = [p.name for p, s in sources.items()
             if re.search(r"write_json_atomic\([^)]*result\.json", s)]
  assert writers == [] and "class RunRecord" in sources[package / "train" / "run_record.py"]
  readers = [p.name for p, s in sources.items() if "RunDir(" in s and ".metrics" in s and "json.loads" in s]
  assert readers == ["metrics.py"]


def test_run_and_results_folder_names_are_spelled_in_rundir_alone():
  """Every file and folder name of a run or a results folder is a constant of rundir.py; a
  module that spells one itself (as a string of its own) would drift from the others."""
  from parscale_jax import rundir

  names = {v for k, v in vars(rundir).items() if k.isupper() and isinstance(v, str)} | {"runs", "trunks"}
  assert {"result.json", "config.yaml", "checkpoints", "final", "sweep.json", "table.csv"} <= names
  offenders = []
  for path in (REPO / "parscale_jax").rglob("*.py"):
    if path.name == "rundir.py":
      continue
    tree = ast.parse(path.read_text())
    in_fstrings = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
    for node in ast.walk(tree):
      if isinstance(node, ast.Constant) and node.value in names and id(node) not in in_fstrings:
        offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
  assert not offenders, offenders
  assert len(re_grep(r'"runs" /')) == 1


def test_a_flax_too_old_for_the_installed_jax_is_one_line_and_tests_keep_out_of_home():
  import tempfile
  from importlib import metadata

  from parscale_jax.versions import check_jax_flax, release
  installed = {"jax": "0.11.2", "flax": "0.12.8"}
  with pytest.raises(ImportError, match=r"^parscale_jax: flax 0.12.8 does not work with jax 0.11.2; "
                                        r"pip install 'flax>=0.12.10' \(or jax<0.11\)$"):
    check_jax_flax(installed.get)
  check_jax_flax({"jax": "0.11.2", "flax": "0.12.10"}.get)
  check_jax_flax({"jax": "0.10.2", "flax": "0.12.8"}.get)
  check_jax_flax(metadata.version)  # The installed pair.
  assert release("0.11.0rc1") == (0, 11, 0) and release("0.12.10.dev3+g1") == (0, 12, 10)
  # conftest.py: ~/.cache of the tests (corpora, compiled programs) is a temporary folder.
  assert Path("~/.cache").expanduser().is_relative_to(tempfile.gettempdir())


# Where JAX must not be loaded yet: the entry point restarts the process under a glibc tunable
# (hostmem.py), the package fixes the platform's environment (platforms.py) before it, and a sweep
# worker takes its cores, threads and GPU (sweep/worker.py) before it.
BEFORE_JAX = {"__init__.py", "launch.py", "hostmem.py", "platforms.py", "versions.py", "sweep/worker.py"}


@pytest.mark.parametrize("module", sorted(BEFORE_JAX))
def test_the_before_jax_modules_import_no_jax(module):
  import subprocess
  import sys

  name = "parscale_jax" + ("" if module == "__init__.py" else "." + module.removesuffix(".py").replace("/", "."))
  loaded = subprocess.run([sys.executable, "-c", f"import sys, {name}; print(*sys.modules)"],
                          capture_output=True, text=True, check=True, cwd=REPO).stdout.split()
  assert name in loaded and "jax" not in loaded and "flax" not in loaded


def test_imports_inside_functions_defer_something():
  """An import inside a function is kept only where it defers work: in a module that runs before
  JAX is loaded, or of a module that the command line's start (`parscale --help`) has not loaded
  (a command's own library, an optional package). Everything else is imported at module top."""
  import subprocess
  import sys

  started = set(subprocess.run(
      [sys.executable, "-c", "import sys, parscale_jax.cli as c; c.build_parser(); print(*sys.modules)"],
      capture_output=True, text=True, check=True, cwd=REPO).stdout.split())
  assert "parscale_jax.cli" in started and "matplotlib" not in started
  package = REPO / "parscale_jax"
  known = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
           for p in package.rglob("*.py")}
  offenders = []
  for path in package.rglob("*.py"):
    if path.relative_to(package).as_posix() in BEFORE_JAX:
      continue
    for function in ast.walk(ast.parse(path.read_text())):
      if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
        continue
      for node in ast.walk(function):
        if isinstance(node, ast.Import):
          modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):  # `from package import module` imports the module.
          modules = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]
        else:
          continue
        for module in modules:
          if module in started or module.split(".")[0] in sys.stdlib_module_names:
            offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {module}")
  assert not offenders, "imports that defer nothing (move them to the module's top):\n" + "\n".join(
      sorted(set(offenders)))
