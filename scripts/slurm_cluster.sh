#!/usr/bin/env bash
# A private one-node SLURM cluster (slurmctld + slurmd + its own munged) built from
# Debian's packages, so a sweep can be tried exactly as on a cluster and CI can run
# integration tests against real daemons instead of faked SLURM_* variables.
#
# Usage: scripts/slurm_cluster.sh start|stop|status|env
#   start   install packages if missing, write the private config, start the daemons,
#           wait until the node is idle, print `export SLURM_CONF=...` (idempotent)
#   stop    stop the daemons this script started (pid files); packages stay installed
#   status  say whether the cluster is up (exit 0 up, 1 down)
#   env     print the `export` line(s):  eval "$(scripts/slurm_cluster.sh env)"
#
# Everything lives under LSTM_SLURM_DIR (default /tmp/lstm_lightning_slurm) and is
# reached only through that directory's slurm.conf via SLURM_CONF: /etc/slurm and any
# system munged are never read or touched, so a real SLURM on the host is left alone.
# Overrides: LSTM_SLURM_CTLD_PORT (6917), LSTM_SLURM_SLURMD_PORT (6918),
#            LSTM_SLURM_START_TIMEOUT seconds to wait for the idle node (60).
# Progress goes to stderr and the export lines to stdout, so
# `eval "$(scripts/slurm_cluster.sh start)"` works too.
set -euo pipefail

SLURM_DIR=${LSTM_SLURM_DIR:-/tmp/lstm_lightning_slurm}
CTLD_PORT=${LSTM_SLURM_CTLD_PORT:-6917}
SLURMD_PORT=${LSTM_SLURM_SLURMD_PORT:-6918}
START_TIMEOUT=${LSTM_SLURM_START_TIMEOUT:-60}
PACKAGES=(slurmctld slurmd slurm-client munge)

CONF_DIR=$SLURM_DIR/etc
CONF=$CONF_DIR/slurm.conf
RUN_DIR=$SLURM_DIR/run
LOG_DIR=$SLURM_DIR/log
MUNGE_DIR=$SLURM_DIR/munge
MUNGE_SOCKET=$MUNGE_DIR/munge.socket
MUNGE_KEY=$MUNGE_DIR/munge.key
# A pid file per daemon: `stop` kills exactly what `start` started, nothing by name.
MUNGE_PID=$RUN_DIR/munged.pid
CTLD_PID=$RUN_DIR/slurmctld.pid
SLURMD_PID=$RUN_DIR/slurmd.pid

log() { echo "slurm_cluster: $*" >&2; }
die() { echo "slurm_cluster: ERROR: $*" >&2; exit 1; }

# The commands below must see only our config, never an inherited one.
export SLURM_CONF=$CONF

print_env() { echo "export SLURM_CONF=$CONF"; }

# --- packages -------------------------------------------------------------------------

packages_missing() {
  local pkg
  for pkg in "${PACKAGES[@]}"; do
    [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) == "install ok installed" ]] \
      || echo "$pkg"
  done
}

# Debian's postinst scripts would try to start the system slurmctld/slurmd/munge
# services; a policy-rc.d answering 101 ("action forbidden") stops that, so installing
# never starts a second, system-wide SLURM. Only added when absent, removed afterwards.
install_packages() {
  local missing=()
  mapfile -t missing < <(packages_missing)
  ((${#missing[@]} == 0)) && return 0
  [[ $(id -u) -eq 0 ]] || die "packages missing (${missing[*]}) and not root: install them with apt-get or rerun as root"
  log "installing ${missing[*]} (log: $LOG_DIR/apt.log)"
  local policy=/usr/sbin/policy-rc.d added_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT  # even when interrupted mid-install
  fi
  local rc=0
  {
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  } >"$LOG_DIR/apt.log" 2>&1 || rc=$?
  if [[ $added_policy -eq 1 ]]; then
    rm -f "$policy"
    trap - EXIT
  fi
  if [[ $rc -ne 0 ]]; then
    tail -n 20 "$LOG_DIR/apt.log" >&2
    die "apt-get install ${missing[*]} failed (exit $rc); see $LOG_DIR/apt.log"
  fi
}

# --- pid bookkeeping ------------------------------------------------------------------

# Alive only when the pid in the file runs the expected program, so a recycled pid
# left in a stale file is never mistaken for (or killed as) one of our daemons.
pid_alive() {
  local file=$1 name=$2
  [[ -s $file ]] || return 1
  proc_alive "$(<"$file")" "$name"
}

proc_alive() {
  local pid=$1 name=$2
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]] || return 1
  # A container's init may be slow to reap: a zombie has exited and counts as dead.
  [[ $(awk '/^State:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) != Z ]]
}

# Waits on the process, not its pid file: slurmd deletes its pid file early in a
# shutdown that can take seconds.
stop_daemon() {
  local file=$1 name=$2 pid i
  if ! pid_alive "$file" "$name"; then
    rm -f "$file"
    return 0
  fi
  pid=$(<"$file")
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    proc_alive "$pid" "$name" || break
    sleep 0.2
  done
  if proc_alive "$pid" "$name"; then
    log "$name (pid $pid) ignored SIGTERM for 10s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$file"
}

# --- munge ----------------------------------------------------------------------------

# Our own munged with its own key and socket (slurm.conf's AuthInfo points at it), so
# the cluster works whether or not the host runs munge, and never uses its key.
start_munge() {
  pid_alive "$MUNGE_PID" munged && return 0
  if [[ ! -s $MUNGE_KEY ]]; then
    log "generating munge key $MUNGE_KEY"
    mungekey --create --keyfile="$MUNGE_KEY" --force >/dev/null 2>&1 \
      || dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none \
      || die "could not create munge key $MUNGE_KEY"
  fi
  chmod 400 "$MUNGE_KEY"
  rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
  # --force: let munged start despite permission warnings it would otherwise treat as
  # fatal (e.g. a group-writable parent of LSTM_SLURM_DIR); the key itself stays 0400.
  munged --force --socket="$MUNGE_SOCKET" --key-file="$MUNGE_KEY" \
    --pid-file="$MUNGE_PID" --log-file="$LOG_DIR/munged.log" \
    --seed-file="$MUNGE_DIR/munged.seed" 2>>"$LOG_DIR/munged.log" \
    || die "munged failed to start; see $LOG_DIR/munged.log"
  munge --socket="$MUNGE_SOCKET" -n </dev/null | unmunge --socket="$MUNGE_SOCKET" >/dev/null 2>&1 \
    || die "munged started but a munge/unmunge round trip failed; see $LOG_DIR/munged.log"
}

# --- configuration --------------------------------------------------------------------

node_name() { hostname -s; }

# nproc honours OMP_NUM_THREADS/OMP_THREAD_LIMIT (test suites set them to 1), which
# would shrink the node; count the CPUs this process may actually run on.
cpu_count() { env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc; }

# Real memory in MB, a little under MemTotal: slurmd drains a node whose configured
# RealMemory exceeds what it detects.
real_memory_mb() {
  awk '/^MemTotal:/ { printf "%d\n", $2 / 1024 * 0.95 }' /proc/meminfo
}

write_conf() {
  local node cpus mem
  node=$(node_name)
  cpus=$(cpu_count)
  mem=$(real_memory_mb)
  cat >"$CONF" <<EOF
# Generated by scripts/slurm_cluster.sh; rewritten on every cold start.
ClusterName=lstmlightning
# 127.0.0.1 so nothing depends on DNS for the short hostname.
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again
# (default 120 s): 10 s keeps scontrol requeue round trips quick in tests.
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10

StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

# Containers have no usable cgroup hierarchy: track processes by parent pid and do
# no CPU binding, so nothing needs cgroup.conf.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# No mail on this node; the default /bin/mail is absent and slurmctld logs an error.
MailProg=/bin/true
MpiDefault=none
SwitchType=switch/none

# One CPU is the unit of allocation, so two single-CPU jobs share this node.
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# Fast turnaround for tests: schedule often, forget finished jobs quickly.
SchedulerParameters=bf_interval=1,sched_interval=2
KillWait=2
MinJobAge=10
# Lightning's auto-requeue runs scontrol requeue; jobs are requeueable by default.
JobRequeue=1
ReturnToService=2
SlurmdTimeout=30
InactiveLimit=0
Waittime=0

# The node as the machine really is; config_overrides keeps a topology mismatch
# (e.g. hyperthreads) from draining it.
SlurmdParameters=config_overrides
NodeName=$node NodeAddr=127.0.0.1 NodeHostname=$node CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
}

# --- slurm daemons --------------------------------------------------------------------

# Output captured first: with pipefail, grep -q closing the pipe early could fail it.
ctld_responds() { [[ $(scontrol ping 2>/dev/null) == *"is UP"* ]]; }

node_state() { sinfo -h -n "$(node_name)" -o %T 2>/dev/null | head -n 1; }

cluster_up() {
  pid_alive "$MUNGE_PID" munged && pid_alive "$CTLD_PID" slurmctld \
    && pid_alive "$SLURMD_PID" slurmd && ctld_responds
}

show_log_tails() {
  local f
  for f in "$LOG_DIR"/munged.log "$LOG_DIR"/slurmctld.log "$LOG_DIR"/slurmd.log; do
    [[ -f $f ]] || continue
    echo "----- tail of $f -----" >&2
    tail -n 15 "$f" >&2
  done
}

start_slurm_daemons() {
  slurmctld -f "$CONF" 2>>"$LOG_DIR/slurmctld.log" \
    || { show_log_tails; die "slurmctld failed to start; see $LOG_DIR/slurmctld.log"; }
  slurmd -f "$CONF" 2>>"$LOG_DIR/slurmd.log" \
    || { show_log_tails; die "slurmd failed to start; see $LOG_DIR/slurmd.log"; }
}

# Bounded wait: slurmd registers within a second or two; anything much longer is a
# misconfiguration that the daemon logs explain. A daemon that exits (e.g. its port is
# taken) fails the start at once. On failure our daemons are stopped again, so a
# half-started cluster never lingers; the logs stay for reading.
wait_for_idle() {
  local deadline=$((SECONDS + START_TIMEOUT)) state="" why=""
  while ((SECONDS < deadline)); do
    state=$(node_state || true)
    case $state in
      idle | mixed | allocated) return 0 ;;
    esac
    pid_alive "$CTLD_PID" slurmctld || { why="slurmctld exited"; break; }
    pid_alive "$SLURMD_PID" slurmd || { why="slurmd exited"; break; }
    sleep 0.5
  done
  show_log_tails
  stop_daemon "$SLURMD_PID" slurmd
  stop_daemon "$CTLD_PID" slurmctld
  [[ -n $why ]] && die "$why during start (e.g. port $CTLD_PORT or $SLURMD_PORT in use); see the log tails above, in $LOG_DIR"
  die "node $(node_name) not idle after ${START_TIMEOUT}s (state: '${state:-no answer}'); see the log tails above, in $LOG_DIR"
}

# --- commands -------------------------------------------------------------------------

cmd_start() {
  mkdir -p "$CONF_DIR" "$RUN_DIR" "$LOG_DIR" "$SLURM_DIR/state" "$SLURM_DIR/spool"
  # munged wants its socket's directory searchable by all; the key itself is 0400.
  mkdir -p "$MUNGE_DIR"
  chmod 755 "$MUNGE_DIR"
  if [[ -z $(packages_missing) ]] && cluster_up; then
    log "already running (SLURM_CONF=$CONF)"
    print_env
    return 0
  fi
  install_packages
  [[ $(id -u) -eq 0 ]] || die "the cluster runs its daemons as root (SlurmdUser=root); rerun as root"
  # Partially up (e.g. slurmd died): restart both daemons on a fresh config.
  stop_daemon "$SLURMD_PID" slurmd
  stop_daemon "$CTLD_PID" slurmctld
  start_munge
  write_conf
  start_slurm_daemons
  wait_for_idle
  log "up: node $(node_name), $(cpu_count) CPUs, partition debug (logs in $LOG_DIR)"
  print_env
}

# Cancel our jobs first: slurmstepd processes outlive slurmd, and a job left running
# would keep its processes after the cluster is gone.
cancel_all_jobs() {
  ctld_responds || return 0
  local jobs i
  jobs=$(squeue -h -o %A 2>/dev/null || true)
  [[ -z $jobs ]] && return 0
  # shellcheck disable=SC2086  # one argument per job id
  scancel $jobs 2>/dev/null || true
  for ((i = 0; i < 30; i++)); do
    [[ -z $(squeue -h -o %A 2>/dev/null || true) ]] && return 0
    sleep 0.5
  done
  log "jobs still listed after 15s: $(squeue -h -o '%A %T' | tr '\n' ' ')"
}

cmd_stop() {
  if [[ -f $CONF ]] && pid_alive "$CTLD_PID" slurmctld; then
    cancel_all_jobs
  fi
  stop_daemon "$SLURMD_PID" slurmd
  stop_daemon "$CTLD_PID" slurmctld
  stop_daemon "$MUNGE_PID" munged
  log "stopped"
}

cmd_status() {
  if [[ -f $CONF ]] && cluster_up; then
    echo "up: SLURM_CONF=$CONF node $(node_name) $(node_state)"
    return 0
  fi
  echo "down (no running cluster under $SLURM_DIR)"
  return 1
}

usage() {
  sed -n '6,11p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit "${1:-2}"
}

main() {
  [[ $# -eq 1 ]] || usage
  case $1 in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) print_env ;;
    -h | --help | help) usage 0 ;;
    *) usage ;;
  esac
}

main "$@"
