#!/usr/bin/env bash
# Runs one jaxghpo command on every worker of a Cloud TPU VM slice (one process per host; JAX
# finds its peers by itself on TPU VMs, see jaxghpo/main.py).
#
# Usage:
#   tools/launch_tpu.sh --name=TPU_NAME --zone=ZONE --config=configs/X.py --workdir=gs://BUCKET/RUN \
#       [--project=PROJECT] [--remote_dir=~/jaxghpo] [--sync] [--setup] [--detach] [--python=python3] \
#       [--dry-run] [-- --config.a.b=value ...]
#
#   --name, --zone      the TPU VM (gcloud compute tpus tpu-vm list --zone=ZONE)
#   --project           gcloud project (default: gcloud's configured project)
#   --config            experiment config, relative to the repository root on the workers
#   --workdir           run directory that every host sees (checkpoints are written by all hosts):
#                       a gs:// bucket path (every file goes through orbax or jaxghpo/paths.py), or a
#                       bucket mounted with gcsfuse at the same place on every worker
#   --remote_dir        where the repository lives on every worker (default ~/jaxghpo)
#   --sync              first copy this checkout (all of it: use a clean clone) to --remote_dir on
#                       every worker (gcloud ... scp)
#   --setup             first `pip install -e .` and jax[tpu] (same jax version) on every worker
#   --detach            run under nohup, output in --remote_dir/launch.log on each worker, and return
#   --dry-run           print the gcloud commands instead of running them (no network)
#   everything after `--` is passed to jaxghpo.main (config overrides such as
#   --config.model.path=/mnt/models/Qwen2.5-Math-7B --config.data.files=/mnt/data/math3to5.jsonl)
#
# Example (Qwen2.5-Math-7B GHPO on a v5p-64, 32 chips, 8 hosts):
#   tools/launch_tpu.sh --name=ghpo-v5p --zone=us-east5-a --sync --setup \
#       --config=configs/qwen25_math_7b_ghpo.py --workdir=gs://BUCKET/ghpo/math7b -- \
#       --config.model.path=/mnt/models/Qwen2.5-Math-7B --config.data.files=/mnt/data/math3to5.jsonl
#
# A preempted slice gets SIGTERM: the run saves at the next step boundary and exits 0; run the same
# command again (same --workdir) to resume from the latest checkpoint.
set -euo pipefail

name="" zone="" project="" config="" workdir=""
remote_dir="~/jaxghpo" python_bin="python3"
sync=0 setup=0 detach=0 dry_run=0
extra=()

die() { echo "launch_tpu.sh: $*" >&2; exit 2; }

# Shell-quotes each argument, readably: safe words as they are, others in single quotes.
quote() {
  local out="" word
  for word in "$@"; do
    if [[ "$word" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
      out+="$word "
    else
      out+="'${word//\'/\'\\\'\'}' "
    fi
  done
  printf '%s' "${out% }"
}

while (($#)); do
  case "$1" in
    --name=*) name="${1#*=}" ;;
    --zone=*) zone="${1#*=}" ;;
    --project=*) project="${1#*=}" ;;
    --config=*) config="${1#*=}" ;;
    --workdir=*) workdir="${1#*=}" ;;
    --remote_dir=*) remote_dir="${1#*=}" ;;
    --python=*) python_bin="${1#*=}" ;;
    --name|--zone|--project|--config|--workdir|--remote_dir|--python)
      (($# >= 2)) || die "$1 needs a value"
      case "$1" in
        --name) name="$2" ;; --zone) zone="$2" ;; --project) project="$2" ;; --config) config="$2" ;;
        --workdir) workdir="$2" ;; --remote_dir) remote_dir="$2" ;; --python) python_bin="$2" ;;
      esac
      shift ;;
    --sync) sync=1 ;;
    --setup) setup=1 ;;
    --detach) detach=1 ;;
    --dry-run|--dry_run) dry_run=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown argument '$1' (config overrides go after --; see --help)" ;;
  esac
  shift
done

[[ -n "$name" ]] || die "--name=TPU_NAME is required"
[[ -n "$zone" ]] || die "--zone=ZONE is required"
[[ -n "$config" ]] || die "--config=configs/X.py is required"
[[ -n "$workdir" ]] || die "--workdir is required (a gs:// path on multi-host slices)"
if [[ "$workdir" != gs://* && "$workdir" != /mnt/* ]]; then
  echo "launch_tpu.sh: warning: --workdir=$workdir is neither a gs:// path nor under /mnt (a gcsfuse" \
       "mount); every host of a pod slice must see the same checkpoints" >&2
fi

# The remote directory keeps a leading ~ unquoted so that each worker's shell expands it.
case "$remote_dir" in
  "~") remote_cd='~' ;;
  "~/"*) remote_cd="~/$(quote "${remote_dir#\~/}")" ;;
  *) remote_cd="$(quote "$remote_dir")" ;;
esac

gcloud_flags=(--zone="$zone")
[[ -n "$project" ]] && gcloud_flags+=(--project="$project")

# The command each worker runs, with every user-given word shell-quoted.
run_cmd="$(quote "$python_bin" -m jaxghpo.main --config="$config" --workdir="$workdir" "${extra[@]}")"
if ((detach)); then
  run_cmd="nohup $run_cmd > launch.log 2>&1 < /dev/null &"
fi
remote="cd $remote_cd && "
if ((setup)); then
  py="$(quote "$python_bin")"
  # jax[tpu] at the jax version setup.py resolved, so the TPU runtime matches the installed jax.
  remote+="$py -m pip install -q -e . && "
  remote+="$py -m pip install -q \"jax[tpu]==\$($py -c 'import jax; print(jax.__version__)')\" && "
fi
remote+="$run_cmd"

steps=()
if ((sync)); then
  repo_root="$(cd "$(dirname "$0")/.." && pwd)"
  steps+=("$(quote gcloud compute tpus tpu-vm ssh "$name" "${gcloud_flags[@]}" --worker=all \
    --command="mkdir -p $remote_cd")")
  steps+=("$(quote gcloud compute tpus tpu-vm scp --recurse "$repo_root/." "$name:$remote_dir" \
    "${gcloud_flags[@]}" --worker=all)")
fi
steps+=("$(quote gcloud compute tpus tpu-vm ssh "$name" "${gcloud_flags[@]}" --worker=all --command="$remote")")

for step in "${steps[@]}"; do
  if ((dry_run)); then
    echo "$step"
  else
    echo "+ $step" >&2
    eval "$step"
  fi
done
