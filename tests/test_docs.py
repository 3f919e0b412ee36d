"""Every command a document names exists: ``python -m cgmlp_jax.X`` in the repository's Markdown,
JSON, config docstrings and scripts must be a module (a renamed command cannot linger in a doc)."""
import importlib.util
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
COMMAND = re.compile(r"-m\s+(cgmlp_jax(?:\.[a-z_]+)*)\b")


def _documents():
  for pattern in ("*.md", "docs/**/*.md", "weights/*.json", "docs/**/*.json", "configs/*.py",
                  "scripts/*.sh", "benchmarks/**/*.py", "cgmlp_jax/**/*.py"):
    yield from ROOT.glob(pattern)


def test_every_documented_command_is_a_module():
  named = {}
  for path in _documents():
    for module in COMMAND.findall(path.read_text(errors="replace")):
      named.setdefault(module, path.relative_to(ROOT))
  assert "cgmlp_jax.tools.report" in named  # the scan finds the commands at all
  missing = {module: str(path) for module, path in named.items()
             if importlib.util.find_spec(module) is None}
  assert not missing, f"documents name commands that do not exist: {missing}"
