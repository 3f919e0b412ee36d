"""The package's import arrows (ARCHITECTURE.md), read from the source: models and data know nothing
of training, and nothing but launch.py, tests and notebooks loads the training loop."""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "cgmlp_jax"


def _imports(path):
  """Every module a file imports, at any depth (function-level imports included)."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
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
