"""Trains a model: ``python launch.py --config=configs/cgmlp.py --workdir=runs/cgmlp``.

Overrides: ``--config.num_epochs=10``, ``--config.model_kw.depth=8`` (any model field), config
arguments: ``--config=configs/cgmlp.py:convs=1``. Starting again with the same workdir resumes from
its latest checkpoint. SIGTERM / Ctrl-C save a checkpoint first and exit with status 128 + the
signal number. A mistake (bad config, missing data, unusable workdir) is one ``error:`` line and
exit status 2 (``CGMLP_JAX_TRACEBACK=1`` adds the traceback); see README "Mistakes".
"""
import sys

import cgmlp_jax  # noqa: F401  (first: sets up malloc before JAX or TF start; cgmlp_jax/allocator.py)
from absl import flags
from ml_collections import config_flags

from cgmlp_jax import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the resolved config.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  cli.setup_process(FLAGS.config)
  from cgmlp_jax.train import Interrupted, train_and_evaluate  # noqa: PLC0415
  try:
    train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except Interrupted as e:
    print(e, flush=True)
    sys.exit(128 + e.signum)


if __name__ == "__main__":
  cli.run(main)
