# Shared by the sbatch templates in this folder (sourced; submit from the repository
# root, or set QED_HOME to it). Provides `qed_fit` (the trainer as one job step, one
# task per device) and `start_server` (a `vllm serve`, e.g. the grader, as its own job step).
#
# Settings (environment; `sbatch --export=ALL,NAME=value ...`):
#   QED             the qed command, word-split (default: qed; e.g. ".venv/bin/python -m qed_lightning")
#   QED_ACCELERATOR gpu (default) or cpu
set -euo pipefail

QED_HOME=${QED_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}
cd "$QED_HOME"
QED=${QED:-qed}
QED_ACCELERATOR=${QED_ACCELERATOR:-gpu}

log() { echo "[$(date -u +%FT%TZ)] job ${SLURM_JOB_ID:-?} restart ${SLURM_RESTART_COUNT:-0}: $*"; }

# The allocation's hosts, one per line.
job_hosts() { scontrol show hostnames "$SLURM_JOB_NODELIST"; }

# qed_fit NODES NODELIST CONFIG [overrides...]
# One trainer task per device on each of NODES nodes. Lightning reads its ranks,
# world size and master address/port from srun's variables, and refuses a task count
# that does not match --trainer.num_nodes x --trainer.devices; both come from the
# allocation here. ckpt_path=last: a requeued job resumes from its own last.ckpt (its
# log directory is runs/<name>/slurm_<job id> on every start).
qed_fit() {
  local nodes=$1 nodelist=$2 config=$3
  shift 3
  local per_node=${SLURM_NTASKS_PER_NODE:?submit with --ntasks-per-node=<devices per node> (Lightning requires it)}
  per_node=${per_node%%(*}
  local flags=(--nodes="$nodes" --nodelist="$nodelist" --ntasks="$((nodes * per_node))"
               --ntasks-per-node="$per_node" --kill-on-bad-exit=1)
  # srun would take the allocation's SLURM_NTASKS and SLURM_CPUS_PER_TASK is not
  # inherited by steps (Slurm >= 22.05): both are given explicitly.
  [ -n "${SLURM_CPUS_PER_TASK:-}" ] && flags+=(--cpus-per-task="$SLURM_CPUS_PER_TASK")
  [ "$QED_ACCELERATOR" = gpu ] && flags+=(--gpus-per-node="$per_node")
  # Inside a step SLURM_NODELIST is still the whole allocation's, whose first host may
  # be a server node: rank 0 runs on the first host of this step.
  MASTER_ADDR=$(scontrol show hostnames "$nodelist" | head -n 1)
  export MASTER_ADDR
  log "qed fit --config $config on $nodes node(s) x $per_node task(s) [$nodelist], master $MASTER_ADDR"
  # shellcheck disable=SC2086  # QED may be several words
  srun "${flags[@]}" \
    $QED fit --config "$config" --trainer.num_nodes="$nodes" --trainer.devices="$per_node" \
    --trainer.accelerator="$QED_ACCELERATOR" --ckpt_path=last "$@"
}

# start_server NODE PORT GPUS MODEL [vllm serve args...]: a `vllm serve` on NODE as
# its own job step, in the background; sets SERVER_URL (.../v1) and SERVER_PID and
# returns once the server answers /health. The step ignores SIGUSR1: the preemption
# signal is for the trainer, and a grader must keep answering until the trainer's
# save is done (an ignored signal stays ignored across exec).
start_server() {
  local node=$1 port=$2 gpus=$3 model=$4
  shift 4
  # --exact with its own CPU count: without it a step takes every CPU of the node, and
  # a second server on that node (rc.sbatch) would wait for the first to end
  local flags=(--nodes=1 --ntasks=1 --nodelist="$node" --exact --cpus-per-task="${SERVER_CPUS:-16}")
  [ "$QED_ACCELERATOR" = gpu ] && flags+=(--gpus-per-node="$gpus")
  log "vllm serve $model on $node:$port ($gpus GPU(s))"
  srun "${flags[@]}" \
    bash -c 'trap "" USR1; exec "$@"' server vllm serve "$model" --host 0.0.0.0 --port "$port" "$@" &
  SERVER_PID=$!
  SERVER_URL="http://$node:$port/v1"
  local deadline=$((SECONDS + ${SERVER_START_TIMEOUT:-1800}))
  until curl -sf "http://$node:$port/health" >/dev/null; do
    kill -0 "$SERVER_PID" 2>/dev/null || { log "$model on $node:$port exited during startup"; return 1; }
    [ $SECONDS -lt $deadline ] || { log "$model on $node:$port not healthy after ${SERVER_START_TIMEOUT:-1800}s"; return 1; }
    sleep 10
  done
  log "ready: $SERVER_URL"
}
