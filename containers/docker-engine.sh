#!/usr/bin/env bash
# A real Docker engine on this machine, with the CPU test image in it, for the container test tier.
# Usage: containers/docker-engine.sh up [--background]|down|status. Needs root (apt, dockerd).
#
# up:     installs docker.io with apt when docker or dockerd is missing; starts dockerd unless an
#         engine already answers on the default socket (one that is not ours is used, never
#         restarted or stopped); loads the test image from podman when docker has none or an older
#         one (image ids differ, so a rebuilt image reaches docker); idempotent.
#         --background: takes the lock, then does all that in the background (log
#         $HPCGPU_DOCKER_DIR/up.log) and returns at once; `make test` starts the tests meanwhile, and
#         the docker tests wait for the lock to be released (tests/helpers/container_image.py).
# down:   stops the dockerd this script started (not someone else's engine); images stay on disk.
# status: says whether the engine answers and whether docker's test image is podman's.
#
# These machines reach no registry, so the image comes from podman (`make image-test` builds it):
# `podman save IMAGE | docker load`. dockerd runs with --iptables=false --bridge=none: no NAT rules
# on a shared machine, and the tests use --network host (as hpcgpu's own command lines do).
#
# Environment:
#   HPCGPU_DOCKER_DIR     pidfile, log and lock of our dockerd (default /tmp/hpcgpu-docker)
#   HPCGPU_TEST_IMAGE     image to load (default localhost/hpcgpu:test)
#   HPCGPU_DOCKER_WAIT_S  how long `up` waits for the engine to answer (default 60)
#   HPCGPU_PODMAN_GLOBAL_ARGS  podman global flags (default: --runtime runc --cgroup-manager=cgroupfs)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${HPCGPU_DOCKER_DIR:-/tmp/hpcgpu-docker}"
IMAGE="${HPCGPU_TEST_IMAGE:-localhost/hpcgpu:test}"
WAIT_S="${HPCGPU_DOCKER_WAIT_S:-60}"
read -r -a PODMAN <<<"podman ${HPCGPU_PODMAN_GLOBAL_ARGS:---runtime runc --cgroup-manager=cgroupfs}"
PIDFILE="$DIR/dockerd.pid"
LOG="$DIR/dockerd.log"

elapsed_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
log() { printf 'docker-engine.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

check_inputs() {
  [[ "$DIR" =~ ^/[A-Za-z0-9._/-]+$ ]] || die "HPCGPU_DOCKER_DIR must be an absolute path of [A-Za-z0-9._/-], got: $DIR"
  [[ "$WAIT_S" =~ ^[0-9]+$ ]] || die "HPCGPU_DOCKER_WAIT_S must be an integer, got: $WAIT_S"
  [[ "$(id -u)" == 0 ]] || die "must run as root (installs packages, starts dockerd)"
}

install_packages() {
  # CI starts from a bare machine. A docker CLI alone (no dockerd) is not enough: install the engine.
  if command -v docker >/dev/null && command -v dockerd >/dev/null; then
    return
  fi
  local t0=$EPOCHREALTIME
  log "installing docker.io with apt-get"
  # These machines forbid service starts (/usr/sbin/policy-rc.d exits 101), so the package starts no
  # engine and start_engine does; on a machine where it does start one, start_engine uses that.
  "$REPO/scripts/apt-install.sh" --no-install-recommends docker.io
  log "docker.io installed in $(elapsed_since "$t0")s"
}

# --- the engine ----------------------------------------------------------------------------------

our_pid() {
  # The pid of the dockerd we started, if it is alive (comm, not kill -0: pids are recycled).
  local pid
  [[ -r "$PIDFILE" ]] || return 1
  pid="$(tr -dc '0-9' <"$PIDFILE")"
  [[ -n "$pid" && -r "/proc/$pid/comm" && "$(cat "/proc/$pid/comm")" == dockerd ]] || return 1
  printf '%s\n' "$pid"
}

answers() { timeout 10 docker info --format '{{.ServerVersion}}' >/dev/null 2>&1; }

wait_for() {
  # wait_for LABEL TIMEOUT_S COMMAND...: poll every 0.5 s, print progress every 5 s.
  local label="$1" timeout="$2"
  shift 2
  local start=$SECONDS next=5
  until "$@"; do
    ((SECONDS - start >= timeout)) && return 1
    if ((SECONDS - start >= next)); then
      log "waiting for $label ($((SECONDS - start))s/${timeout}s)"
      next=$((next + 5))
    fi
    sleep 0.5
  done
}

start_engine() {
  if answers; then
    if our_pid >/dev/null; then log "dockerd already running (pid $(our_pid))"; else log "using the docker engine that already runs (not started here)"; fi
    return 0
  fi
  if our_pid >/dev/null; then
    log "our dockerd (pid $(our_pid)) does not answer; restarting it"
    stop_engine
  fi
  local t0=$EPOCHREALTIME
  log "starting dockerd (log $LOG)"
  # setsid + nohup: the engine outlives this script and make; 9>&- so it does not hold our lock.
  setsid nohup dockerd --iptables=false --bridge=none --pidfile "$PIDFILE" \
    >>"$LOG" 2>&1 </dev/null 9>&- &
  if ! wait_for "docker info to answer" "$WAIT_S" answers; then
    log "last lines of $LOG:"
    tail -n 25 "$LOG" | sed 's/^/  /' >&2 || true
    die "dockerd did not answer within ${WAIT_S}s"
  fi
  log "engine up in $(elapsed_since "$t0")s ($(docker info --format '{{.ServerVersion}}, {{.Driver}}, {{.CgroupDriver}}' 2>/dev/null))"
}

stop_engine() {
  local pid _
  pid="$(our_pid)" || { log "no dockerd started by this script is running"; return 0; }
  log "stopping dockerd (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  # dockerd stops its containers first (10 s each by default), then containerd.
  for _ in $(seq 1 120); do
    our_pid >/dev/null || { rm -f "$PIDFILE"; return 0; }
    sleep 0.5
  done
  log "dockerd still running after 60 s; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}

# --- the test image ------------------------------------------------------------------------------

podman_id() { "${PODMAN[@]}" image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null; }
docker_id() { docker image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null | sed 's/^sha256://'; }

load_image() {
  local want have old t0=$EPOCHREALTIME
  want="$(podman_id)" || die "podman has no $IMAGE to load into docker (build it: make image-test)"
  have="$(docker_id || true)"
  old="$have"
  if [[ "$have" == "$want" ]]; then
    log "docker has $IMAGE (${want:0:12}), the same as podman's"
    return 0
  fi
  log "loading $IMAGE (${want:0:12}) from podman into docker${have:+ (docker had ${have:0:12})}"
  # pipefail: a failed save must not pass for an empty, successful load.
  "${PODMAN[@]}" save --format docker-archive "$IMAGE" | docker load >/dev/null ||
    die "podman save $IMAGE | docker load failed"
  have="$(docker_id)" || die "docker load did not create $IMAGE"
  [[ "$have" == "$want" ]] || die "docker's $IMAGE is ${have:0:12} after the load, podman's is ${want:0:12}"
  # The replaced copy is now untagged; without this every code change leaves ~1 GB behind. Only
  # that image (not a prune: the engine may be someone else's); in use by a container, it stays.
  if [[ -n "$old" ]]; then docker image rm "$old" >/dev/null 2>&1 || true; fi
  log "$IMAGE loaded in $(elapsed_since "$t0")s"
}

# --- subcommands ---------------------------------------------------------------------------------

cmd_up() {
  local t0=$EPOCHREALTIME
  install_packages
  start_engine
  load_image
  log "up in $(elapsed_since "$t0")s"
}

cmd_status() {
  if ! command -v docker >/dev/null; then
    log "docker is not installed; run: containers/docker-engine.sh up"
    return 1
  fi
  if ! answers; then
    log "the docker engine does not answer; run: containers/docker-engine.sh up"
    return 1
  fi
  local who="not started by this script" want have
  our_pid >/dev/null && who="dockerd pid $(our_pid), started by this script"
  log "engine answers: $(docker info --format 'Docker {{.ServerVersion}}, {{.Driver}}, {{.CgroupDriver}}') ($who)"
  want="$(podman_id || echo none)"
  have="$(docker_id || true)"
  if [[ -z "$have" ]]; then
    log "docker has no $IMAGE; run: containers/docker-engine.sh up"
    return 1
  fi
  if [[ "$have" != "$want" ]]; then
    log "docker's $IMAGE (${have:0:12}) is not podman's (${want:0:12}); run: containers/docker-engine.sh up"
    return 1
  fi
  log "docker has $IMAGE (${have:0:12}), the same as podman's"
}

lock() {
  # Two `make docker-up` at once must not start two engines or load the image twice.
  install -d -m 0755 "$DIR"
  exec 9>"$DIR/.lock"
  flock -w 300 9 || die "another process holds $DIR/.lock after 300 s"
}

main() {
  case "${1:-}" in
    up)
      check_inputs
      lock
      if [[ "${2:-}" == --background ]]; then
        log "continuing in the background (log $DIR/up.log; the lock $DIR/.lock is held until it is done)"
        # The subshell inherits fd 9, and with it the lock; this process exits at once.
        (cmd_up) >"$DIR/up.log" 2>&1 </dev/null &
        disown
        exit 0
      fi
      cmd_up
      ;;
    down) check_inputs; lock; stop_engine ;;
    status) cmd_status ;;
    *) echo "usage: $0 up [--background]|down|status" >&2; exit 2 ;;
  esac
}

main "$@"
