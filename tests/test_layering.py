"""The package's import arrows (ARCHITECTURE.md), read from the source: models and data know nothing
of training, and nothing but launch.py, tests and notebooks loads the training loop."""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "cgmlp_jax"


def _is_entry(node):
  return isinstance(node, ast.If) and ast.unparse(node.test) == "__name__ == '__main__'"


def _imports(path):
  """Every module a file imports, at any depth (function-level imports included), but for its
  ``if __name__ == "__main__":`` block: that runs only as the command, never on import, so it is no
  arrow between the layers (``python -m cgmlp_jax.models.summary`` parses its flags with cli)."""
  names = set()
  for top in ast.parse(path.read_text()).body:
    nodes = () if _is_entry(top) else ast.walk(top)
    for node in nodes:
      if isinstance(node, ast.Import):
        names.update(alias.name for alias in node.names)
      elif isinstance(node, ast.ImportFrom) and node.module:
        names.add(node.module)
        names.update(f"{node.module}.{alias.name}" for alias in node.names)
  return {name for name in names if name.startswith("cgmlp_jax.")}


def _modules(folder=""):
  return sorted((PACKAGE / folder).rglob("*.py"))


@pytest.mark.parametrize("layer,allowed", [
    ("models", ("cgmlp_jax.models", "cgmlp_jax.errors")),
    ("data", ("cgmlp_jax.data", "cgmlp_jax.errors", "cgmlp_jax.parallel")),
])
def test_models_and_data_import_nothing_of_training(layer, allowed):
  wrong = {f"{path.relative_to(PACKAGE)}: {name}" for path in _modules(layer)
           for name in _imports(path) if not name.startswith(allowed)}
  assert not wrong, sorted(wrong)


def test_only_the_train_package_reaches_the_loop():
  # train/__init__ exposes train_and_evaluate lazily; no other package module imports the loop.
  reaching = {str(path.relative_to(PACKAGE)) for path in _modules()
              if "cgmlp_jax.train.loop" in _imports(path)}
  assert reaching == {"train/__init__.py"}, sorted(reaching)


# Top level: only what every layer shares; the rest lives in models/, data/, train/, tools/.
SHARED = {"__init__.py", "allocator.py", "cli.py", "errors.py", "metrics.py", "parallel.py"}


def test_the_top_level_holds_only_shared_modules_and_the_four_folders():
  assert {p.name for p in PACKAGE.glob("*.py")} == SHARED
  assert {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()} == {
      "models", "data", "train", "tools"}


def test_training_imports_no_tool():
  wrong = {f"{path.relative_to(PACKAGE)}: {name}" for folder in ("train", "models", "data")
           for path in _modules(folder) for name in _imports(path)
           if name.startswith("cgmlp_jax.tools")}
  assert not wrong, sorted(wrong)


def _module_file(name):
  """The file of module ``cgmlp_jax.a.b`` (``a/b.py`` or ``a/b/__init__.py``), or None."""
  parts = name.split(".")[1:]
  for candidate in (PACKAGE.joinpath(*parts).with_suffix(".py"),
                    PACKAGE.joinpath(*parts, "__init__.py")):
    if parts and candidate.exists():
      return candidate
  return None


def test_no_import_cycles_between_modules():
  # Edges into a package's __init__ are left out: a package importing its own modules is how
  # packages work; a cycle between two modules (visualize <-> its CLI, once) is the smell.
  graph = {}
  for path in _modules():
    targets = {_module_file(name) for name in _imports(path)}
    graph[path] = {t for t in targets if t and t != path and t.name != "__init__.py"}
  done, active = set(), []

  def visit(node):
    if node in active:
      cycle = active[active.index(node):] + [node]
      raise AssertionError(" -> ".join(str(p.relative_to(PACKAGE)) for p in cycle))
    if node in done:
      return
    active.append(node)
    for target in sorted(graph.get(node, ())):
      visit(target)
    active.pop()
    done.add(node)

  for node in sorted(graph):
    visit(node)
