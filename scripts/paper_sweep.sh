#!/usr/bin/env bash
# The paper's comparison in one command: gMLP, CgMLP-1conv and CgMLP-2conv with the shared recipe
# (configs/paper.py, or $SWEEP_CONFIG) into sibling workdirs, then the comparison report.
#
#   scripts/paper_sweep.sh runs/paper                          # CIFAR-100 at 64x64
#   scripts/paper_sweep.sh runs/cpu_track small,dataset=cifar10 --config.num_epochs=15
#   SWEEP_CONFIG=configs/cpu_track.py scripts/paper_sweep.sh runs/cpu_fast
#
# Arguments: RUNS_DIR, optional extra config arguments (appended after model=...), then any
# launch.py flags. Re-running resumes every unfinished run.
set -euo pipefail
runs=${1:?usage: scripts/paper_sweep.sh RUNS_DIR [CONFIG_ARGS] [launch.py flags...]}
shift
extra=""
if [[ $# -gt 0 && $1 != --* ]]; then extra=",$1"; shift; fi
config=${SWEEP_CONFIG:-configs/paper.py}
cd "$(dirname "$0")/.."
for model in cgmlp_2conv cgmlp_1conv gmlp; do
  python launch.py --config="${config}:model=${model}${extra}" --workdir="$runs/$model" "$@"
done
python -m cgmlp_jax.tools.report "$runs/gmlp" "$runs/cgmlp_1conv" "$runs/cgmlp_2conv" --out "$runs/report"
