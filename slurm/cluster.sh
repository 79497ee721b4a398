#!/usr/bin/env bash
# A real two-node Slurm cluster on this machine: one slurmctld, slurmd node1 and node2, a private
# munged. Usage: slurm/cluster.sh up|down|status. Needs root (daemons, /etc/slurm, /etc/hosts).
#
# Environment:
#   HPCGPU_SLURM_DIR    scratch directory for state, spool, logs, pids, munge (default /tmp/hpcgpu-slurm)
#   HPCGPU_SLURM_CPUS   CPUs declared per node (default 4; config_overrides makes it exact)
#   HPCGPU_SLURM_MEM_MB RealMemory declared per node in MB (default 8000)
#   HPCGPU_SLURM_WAIT_S how long `up` waits for both nodes to be idle (default 60)
#   HPCGPU_SLURM_FORCE  1: overwrite an /etc/slurm/slurm.conf that this script did not write
#
# Clients find the cluster through /etc/slurm/slurm.conf (the compiled-in default), so plain
# sbatch/sinfo/srun work in every shell, in pytest and inside submitit without SLURM_CONF.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="${HPCGPU_SLURM_DIR:-/tmp/hpcgpu-slurm}"
CPUS="${HPCGPU_SLURM_CPUS:-4}"
MEM_MB="${HPCGPU_SLURM_MEM_MB:-8000}"
WAIT_S="${HPCGPU_SLURM_WAIT_S:-60}"
CONF=/etc/slurm/slurm.conf
TEMPLATE="$HERE/slurm.conf.template"
MARKER="# hpcgpu-dev-cluster"
NODES=(node1 node2)
CTLD_PORT=17000
NODE1_PORT=17001
NODE2_PORT=17002

elapsed_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
log() { printf 'cluster.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

check_inputs() {
  # DIR is spliced into slurm.conf by sed and must not need quoting there.
  [[ "$DIR" =~ ^/[A-Za-z0-9._/-]+$ ]] || die "HPCGPU_SLURM_DIR must be an absolute path of [A-Za-z0-9._/-], got: $DIR"
  [[ "$CPUS" =~ ^[0-9]+$ && "$MEM_MB" =~ ^[0-9]+$ && "$WAIT_S" =~ ^[0-9]+$ ]] \
    || die "HPCGPU_SLURM_CPUS, HPCGPU_SLURM_MEM_MB and HPCGPU_SLURM_WAIT_S must be integers"
  [[ "$(id -u)" == 0 ]] || die "must run as root (starts daemons, writes $CONF and /etc/hosts)"
}

install_packages() {
  # CI starts from a bare machine; developers usually have the packages already.
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    return
  fi
  log "installing slurm-wlm and munge with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q slurm-wlm munge
}

# --- processes -----------------------------------------------------------------------------------

pid_from() {
  # Print the pid in pidfile $1 if that process is alive and its name is $2.
  local pidfile="$1" name="$2" pid
  [[ -r "$pidfile" ]] || return 1
  pid="$(tr -dc '0-9' <"$pidfile")"
  [[ -n "$pid" && -r "/proc/$pid/comm" ]] || return 1
  # comm, not a kill -0 alone: a recycled pid must not be mistaken for our daemon.
  [[ "$(cat "/proc/$pid/comm")" == "$name" ]] || return 1
  printf '%s\n' "$pid"
}

pids_in_dir() {
  # Pids of slurm/munge processes holding a file under $DIR (daemons whose pidfile is gone,
  # slurmstepd left over from a job): precise, never a match on a process name alone.
  local p comm fd
  for p in /proc/[0-9]*; do
    comm="$(cat "$p/comm" 2>/dev/null)" || continue
    case "$comm" in slurmctld | slurmd | slurmstepd | munged) ;; *) continue ;; esac
    for fd in "$p"/fd/*; do
      if [[ "$(readlink "$fd" 2>/dev/null)" == "$DIR"/* ]]; then
        printf '%s\n' "${p#/proc/}"
        break
      fi
    done
  done
}

alive() {
  # A zombie has exited already; its parent (maybe a container's pid 1) just has not reaped it.
  [[ -r "/proc/$1/stat" ]] && [[ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]]
}

stop_pids() {
  # SIGTERM all at once (each daemon takes ~2 s to exit), SIGKILL what is left after 10 s.
  local pid _ left
  (($#)) || return 0
  kill -TERM "$@" 2>/dev/null || true
  for _ in $(seq 1 50); do
    left=()
    for pid in "$@"; do alive "$pid" && left+=("$pid"); done
    ((${#left[@]})) || return 0
    sleep 0.2
  done
  log "still running after SIGTERM + 10 s, sending SIGKILL: ${left[*]}"
  kill -KILL "${left[@]}" 2>/dev/null || true
}

# --- munge ---------------------------------------------------------------------------------------

munge_running() { pid_from "$DIR/munge/run/munged.pid" munged >/dev/null; }

start_munge() {
  # Called as `start_munge || show_failure`, where set -e is off: failures must return.
  munge_running && return
  # munged refuses keys and directories that others can write; root-owned parents are fine.
  install -d -m 0755 "$DIR"
  # The socket's directories must be searchable by every user that runs a Slurm client.
  install -d -m 0755 -o munge -g munge "$DIR/munge" "$DIR/munge/run"
  install -d -m 0700 -o munge -g munge "$DIR/munge/etc" "$DIR/munge/log" "$DIR/munge/lib"
  if [[ ! -s "$DIR/munge/etc/munge.key" ]]; then
    dd if=/dev/urandom of="$DIR/munge/etc/munge.key" bs=1024 count=1 status=none || return 1
  fi
  chown munge:munge "$DIR/munge/etc/munge.key" && chmod 0400 "$DIR/munge/etc/munge.key" || return 1
  runuser -u munge -- munged \
    --key-file="$DIR/munge/etc/munge.key" \
    --socket="$DIR/munge/run/munge.socket.2" \
    --pid-file="$DIR/munge/run/munged.pid" \
    --log-file="$DIR/munge/log/munged.log" \
    --seed-file="$DIR/munge/lib/munged.seed" 9>&- || return 1
  wait_for "munged" 10 munge_running
}

# --- configuration -------------------------------------------------------------------------------

render_conf() {
  # Print slurm.conf for this machine; every placeholder in the template must be filled.
  local out
  out="$(sed -e "s|@DIR@|$DIR|g" -e "s|@CPUS@|$CPUS|g" -e "s|@MEM_MB@|$MEM_MB|g" \
    -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@NODE1_PORT@|$NODE1_PORT|g" \
    -e "s|@NODE2_PORT@|$NODE2_PORT|g" "$TEMPLATE")"
  if grep -q '@[A-Z0-9_]*@' <<<"$out"; then
    die "unfilled placeholder in $TEMPLATE: $(grep -o '@[A-Z0-9_]*@' <<<"$out" | sort -u | tr '\n' ' ')"
  fi
  printf '%s\n' "$out"
}

conf_is_current() { [[ -f "$CONF" ]] && cmp -s "$CONF" <(render_conf); }

install_conf() {
  # Refuse to overwrite a real site's slurm.conf: only replace our own (marker) or a missing file.
  if [[ -f "$CONF" ]] && ! grep -qF "$MARKER" "$CONF" && [[ "${HPCGPU_SLURM_FORCE:-0}" != 1 ]]; then
    die "$CONF exists and was not written by this script; set HPCGPU_SLURM_FORCE=1 to replace it"
  fi
  local text
  text="$(render_conf)"
  install -d -m 0755 /etc/slurm
  printf '%s\n' "$text" >"$CONF.tmp.$$"
  chmod 0644 "$CONF.tmp.$$"
  mv -f "$CONF.tmp.$$" "$CONF"
  cp "$CONF" "$DIR/slurm.conf"
}

add_hosts() {
  # Rendezvous resolves node names; a container's /etc/hosts may be a bind mount, so append.
  local node
  for node in "${NODES[@]}"; do
    if ! awk -v n="$node" '$1 !~ /^#/ { for (i = 2; i <= NF; i++) if ($i == n) found = 1 } END { exit !found }' /etc/hosts; then
      printf '127.0.0.1 %s\n' "$node" >>/etc/hosts
      log "added '127.0.0.1 $node' to /etc/hosts"
    fi
  done
}

# --- slurm daemons -------------------------------------------------------------------------------

ctld_running() { pid_from "$DIR/run/slurmctld.pid" slurmctld >/dev/null; }
slurmd_running() { pid_from "$DIR/run/slurmd-$1.pid" slurmd >/dev/null; }

start_slurm() {
  install -d -m 0755 "$DIR/state" "$DIR/run" "$DIR/log" "$DIR/spool/node1" "$DIR/spool/node2"
  # Called as `start_slurm || show_failure`, where set -e is off: every step checks itself.
  if ! ctld_running; then
    log "starting slurmctld"
    slurmctld -f "$CONF" 9>&- || return 1
    wait_for "slurmctld" 20 ctld_responds || return 1
  fi
  local node
  for node in "${NODES[@]}"; do
    if ! slurmd_running "$node"; then
      log "starting slurmd -N $node"
      slurmd -f "$CONF" -N "$node" 9>&- || return 1
    fi
  done
}

ctld_responds() { ctld_running && scontrol ping 2>/dev/null | grep -q 'is UP'; }

node_states() {
  # "node1 idle" lines; sinfo -N prints one line per node and partition.
  sinfo -h -N -o '%N %t' 2>/dev/null | sort -u
}

nodes_ready() {
  # Both nodes usable: idle, or busy with jobs (mix/alloc), and not drained or down.
  local states
  states="$(node_states)" || return 1
  local node
  for node in "${NODES[@]}"; do
    grep -Eq "^$node (idle|mix|alloc|comp)\$" <<<"$states" || return 1
  done
}

any_running() {
  munge_running || ctld_running || slurmd_running node1 || slurmd_running node2
}

resume_nodes() {
  # A node drained by an earlier run (e.g. "Kill task failed") stays drained across restarts.
  local node
  for node in "${NODES[@]}"; do
    if node_states | grep -Eq "^$node (drain|drng|drained|down)\$"; then
      log "resuming $node ($(node_states | grep "^$node " | cut -d' ' -f2))"
      scontrol update NodeName="$node" State=RESUME 2>/dev/null || true
    fi
  done
}

daemons_running() {
  munge_running && ctld_running && slurmd_running node1 && slurmd_running node2
}

wait_for() {
  # wait_for LABEL TIMEOUT_S COMMAND...: poll every 0.5 s, print progress every 5 s.
  local label="$1" timeout="$2"
  shift 2
  local start=$SECONDS next=5
  until "$@"; do
    if ((SECONDS - start >= timeout)); then
      return 1
    fi
    if ((SECONDS - start >= next)); then
      log "waiting for $label ($((SECONDS - start))s/${timeout}s)"
      next=$((next + 5))
    fi
    sleep 0.5
  done
}

show_failure() {
  # Everything needed to debug a cluster that did not come up, then exit 1.
  log "error: $1"
  if [[ -f "$CONF" ]]; then
    log "sinfo:"
    sinfo -N -l 2>&1 | sed 's/^/  /' >&2 || true
  fi
  local f
  for f in "$DIR/log/slurmctld.log" "$DIR/log/slurmd-node1.log" "$DIR/log/slurmd-node2.log" "$DIR/munge/log/munged.log"; do
    log "last lines of $f:"
    tail -n 15 "$f" 2>&1 | sed 's/^/  /' >&2 || true
  done
  exit 1
}

# --- subcommands ---------------------------------------------------------------------------------

cmd_up() {
  local t0=$EPOCHREALTIME
  install_packages
  if daemons_running && conf_is_current && nodes_ready; then
    log "already up ($DIR)"
    node_states >&2
    return 0
  fi
  if any_running && ! conf_is_current; then
    # Daemons read slurm.conf at start: a changed config means a clean restart.
    log "slurm.conf changed; restarting the cluster"
    stop_all
  fi

  add_hosts
  start_munge || show_failure "munged did not start"
  install_conf
  start_slurm || show_failure "slurmctld did not start"
  resume_nodes
  if ! wait_for "node1 and node2 to be idle" "$WAIT_S" nodes_ready; then
    show_failure "node1/node2 not idle after ${WAIT_S}s"
  fi
  log "up in $(elapsed_since "$t0")s ($DIR)"
  node_states >&2
}

cancel_jobs() {
  # Jobs end before their slurmd goes away, so no slurmstepd is left behind.
  ctld_responds || return 0
  local jobs
  jobs="$(squeue -h -o '%i' 2>/dev/null | tr '\n' ' ')"
  [[ -n "${jobs// /}" ]] || return 0
  log "cancelling jobs: $jobs"
  scancel -p debug 2>/dev/null || true
  # KillWait (10 s) plus slack for the epilog and the step daemons to exit.
  wait_for "jobs to end" 20 no_jobs || log "jobs still listed after 20 s; stopping anyway"
}

no_jobs() { [[ -z "$(squeue -h -t PD,R,CG,S,CF -o '%i' 2>/dev/null)" ]]; }

stop_all() {
  local pid name pids=()
  cancel_jobs
  for name in slurmd-node1:slurmd slurmd-node2:slurmd slurmctld:slurmctld; do
    if pid="$(pid_from "$DIR/run/${name%%:*}.pid" "${name##*:}")"; then pids+=("$pid"); fi
  done
  if pid="$(pid_from "$DIR/munge/run/munged.pid" munged)"; then pids+=("$pid"); fi
  # Plus anything still holding our scratch directory (lost pidfile, orphaned slurmstepd).
  for pid in $(pids_in_dir); do
    [[ " ${pids[*]} " == *" $pid "* ]] || pids+=("$pid")
  done
  if ((${#pids[@]})); then
    log "stopping pids ${pids[*]}"
    stop_pids "${pids[@]}"
  fi
}

cmd_down() {
  stop_all
  log "down"
}

missing_daemons() {
  # Names of our daemons that are not running (sinfo alone lags a dead slurmd by SlurmdTimeout).
  munge_running || printf 'munged '
  ctld_running || printf 'slurmctld '
  slurmd_running node1 || printf 'slurmd-node1 '
  slurmd_running node2 || printf 'slurmd-node2 '
}

cmd_status() {
  if ! command -v sinfo >/dev/null; then
    log "sinfo not installed; run: slurm/cluster.sh up"
    return 1
  fi
  sinfo -N -o '%N %P %t %c %m' || true
  local missing
  missing="$(missing_daemons)"
  if [[ -z "$missing" ]] && nodes_ready; then
    log "up: node1 and node2 are usable ($DIR)"
    return 0
  fi
  log "down or unhealthy${missing:+ (not running: ${missing% })}; run: slurm/cluster.sh up"
  return 1
}

lock() {
  # Two `make slurm-up` at once (parallel CI steps) must not start daemons twice. Daemons are
  # started with 9>&-: one that inherited fd 9 would hold the lock for its whole life.
  install -d -m 0755 "$DIR"
  exec 9>"$DIR/.lock"
  flock -w 120 9 || die "another process holds $DIR/.lock after 120 s: $(lock_holders)"
}

lock_holders() {
  # "pid (name)" of every other process with the lock file open, to say whom to wait for or stop.
  local p fd out=()
  for p in /proc/[0-9]*; do
    [[ "${p#/proc/}" == "$$" ]] && continue
    for fd in "$p"/fd/*; do
      if [[ "$(readlink "$fd" 2>/dev/null)" == "$DIR/.lock" ]]; then
        out+=("${p#/proc/} ($(cat "$p/comm" 2>/dev/null))")
        break
      fi
    done
  done
  printf '%s\n' "${out[*]:-none found}"
}

main() {
  case "${1:-}" in
    up)
      check_inputs
      lock
      cmd_up
      ;;
    down)
      check_inputs
      lock
      cmd_down
      ;;
    status) cmd_status ;;
    *)
      echo "usage: $0 up|down|status" >&2
      exit 2
      ;;
  esac
}

main "$@"
