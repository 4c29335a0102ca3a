# Shared by the sbatch templates in this folder (sourced; submit from the repository
# root, or set QED_HOME to it). Provides `qed_fit` (the trainer as one job step, one
# task per device) and `start_server` (a `vllm serve`, e.g. the grader, as its own job step).
#
# Settings (environment; `sbatch --export=ALL,NAME=value ...`):
#   QED             the qed command, word-split (default: qed; e.g. ".venv/bin/python -m qed_lightning").
#                   Make it the environment's own command, not `uv run ...` or `conda run
#                   ...`: SLURM sends SIGUSR1 to every process of the step, and a wrapper
#                   that does not handle it dies of it, which ends the step mid-save.
#   QED_ACCELERATOR gpu (default) or cpu
#   SERVER_CPUS     CPUs of each server step (default 16)
#   SERVER_NODE_MEM_MB  the job's memory on a server node in MB, split among its server
#                   steps (default: from the allocation, see server_mem_mb)
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
  # FSDP2 shards over every rank of the job: the config cannot know their count
  local strategy=()
  grep -q "ModelParallelStrategy" "$config" &&
    strategy=(--trainer.strategy.init_args.data_parallel_size="$((nodes * per_node))")
  log "qed fit --config $config on $nodes node(s) x $per_node task(s) [$nodelist], master $MASTER_ADDR"
  # shellcheck disable=SC2086  # QED may be several words
  srun "${flags[@]}" \
    $QED fit --config "$config" --trainer.num_nodes="$nodes" --trainer.devices="$per_node" \
    --trainer.accelerator="$QED_ACCELERATOR" "${strategy[@]}" --ckpt_path=last "$@"
}

# job_cpus_on NODE: the job's CPUs on NODE, from SLURM_JOB_CPUS_PER_NODE ("96(x4),48"
# lists the counts in the order of the job's hosts).
job_cpus_on() {
  local node=$1 part count reps i=0 host
  local -a parts cpus=()
  IFS=, read -ra parts <<< "${SLURM_JOB_CPUS_PER_NODE:-}"
  for part in "${parts[@]}"; do
    count=${part%%(*} reps=1
    [[ $part == *"(x"* ]] && { reps=${part#*(x}; reps=${reps%)}; }
    for ((; reps > 0; reps--)); do cpus+=("$count"); done
  done
  for host in $(job_hosts); do
    [ "$host" = "$node" ] && { echo "${cpus[$i]:-0}"; return; }
    i=$((i + 1))
  done
  echo 0
}

# server_mem_mb NODE SHARE: SHARE (a fraction such as 7/8) of the job's memory on NODE,
# in MB. The job's memory there: SERVER_NODE_MEM_MB if set, else the allocation's
# (SLURM_MEM_PER_NODE, or SLURM_MEM_PER_CPU x the job's CPUs on NODE), else the node's
# RealMemory (a job with the whole node, or a cluster that does not track memory).
server_mem_mb() {
  local node=$1 share=$2 total
  [[ $share =~ ^[0-9]+/[1-9][0-9]*$ ]] || { log "memory share must look like 7/8, got '$share'" >&2; return 1; }
  total=${SERVER_NODE_MEM_MB:-${SLURM_MEM_PER_NODE:-0}}
  if [ "$total" -eq 0 ] && [ -n "${SLURM_MEM_PER_CPU:-}" ]; then
    total=$((SLURM_MEM_PER_CPU * $(job_cpus_on "$node")))
  fi
  if [ "$total" -eq 0 ]; then
    total=$(scontrol show node "$node" -o | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
  fi
  local mb=$((${total:-0} * ${share%/*} / ${share#*/}))
  [ "$mb" -gt 0 ] || { log "no memory for a $share share on $node (set SERVER_NODE_MEM_MB)" >&2; return 1; }
  echo "$mb"
}

# start_server NODE PORT GPUS MEM_SHARE MODEL [vllm serve args...]: a `vllm serve` on
# NODE as its own job step with GPUS GPUs and MEM_SHARE (e.g. 7/8) of the job's memory
# there, in the background; sets SERVER_URL (.../v1) and SERVER_PID and returns once the
# server answers /health. The step ignores SIGUSR1: the preemption signal is for the
# trainer, and a grader must keep answering until the trainer's save is done (an
# ignored signal stays ignored across exec).
start_server() {
  local node=$1 port=$2 gpus=$3 share=$4 model=$5
  shift 5
  local mem
  mem=$(server_mem_mb "$node" "$share") || return 1
  # --exact with its own CPU count and memory share: without them a step takes every
  # CPU of the node and, where the job has a per-node memory amount (--mem, --mem=0,
  # --exclusive), all of its memory there, and a second server on that node
  # (rc.sbatch) waits for the first to end
  local flags=(--nodes=1 --ntasks=1 --nodelist="$node" --exact --cpus-per-task="${SERVER_CPUS:-16}"
               --mem="${mem}M")
  [ "$QED_ACCELERATOR" = gpu ] && flags+=(--gpus-per-node="$gpus")
  log "vllm serve $model on $node:$port ($gpus GPU(s), ${mem} MB)"
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
