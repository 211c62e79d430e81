"""The package's shape: no import circle between its modules (imports inside functions included)."""
import ast

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
