#!/usr/bin/env bash
# A real three-node Slurm cluster on this machine: one slurmctld, slurmd node1, node2 and node3, a
# private munged. Partition debug (the default) holds node1 and node2; partition wide holds all
# three, so a two-node job there has a spare node (the hang watchdog's requeue without a hung node). Usage: slurm/cluster.sh up|down|status|exec NODE CMD... Needs root (daemons, network namespaces,
# /etc/slurm, /etc/hosts).
#
# More nodes for scaling measurements (benchmark tier 11): HPCGPU_SLURM_NODES=8 runs node1-node8. The
# nodes beyond node3 join only the extra partition scale (node[1-N]), so debug, wide and every test
# that uses them see the same cluster as with three; with the default of three the slurm.conf is
# exactly the three-node one (no scale partition). Changing the count is a reconfiguration: `up`
# finds slurm.conf out of date, cancels every job and restarts all daemons (seconds), and removes
# the namespaces, addresses and /etc/hosts lines of nodes the smaller layout no longer has.
#
# Each node is a host of its own as far as the network goes: slurmd node1 runs in the network
# namespace hpcgpu-node1 (interface eth0, address NET.1, host name node1), node2 in hpcgpu-node2
# (NET.2, node2), node3 likewise. Every eth0 is one end of a veth pair whose other ends sit in the bridge hpcgpu-br0 in the root
# namespace, which holds NET.254: slurmctld, munged and every client outside a job run there and
# reach the nodes through the bridge; job steps inherit their node's namespace and host name, so
# multi-node code (rendezvous, gloo, MASTER_ADDR) crosses a real interface, never 127.0.0.1.
# /etc/hosts maps the nodes to their addresses (lines ending in the marker below). The file
# system, munge's socket and everything else stay shared.
#
# Environment:
#   HPCGPU_SLURM_DIR    scratch directory for state, spool, logs, pids, munge (default /tmp/hpcgpu-slurm)
#   HPCGPU_SLURM_CPUS   CPUs declared per node (default 4; config_overrides makes it exact)
#   HPCGPU_SLURM_MEM_MB RealMemory declared per node in MB (default 8000)
#   HPCGPU_SLURM_WAIT_S how long `up` waits for every node to be idle (default 60)
#   HPCGPU_SLURM_NET    the first three octets of the cluster's private /24 (default 10.231.1)
#   HPCGPU_SLURM_NODES  how many nodes, 3-64 (default 3); node4 and up are in partition scale only
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
NET="${HPCGPU_SLURM_NET:-10.231.1}"
CONF=/etc/slurm/slurm.conf
HOSTS=/etc/hosts
TEMPLATE="$HERE/slurm.conf.template"
MARKER="# hpcgpu-dev-cluster"
NODE_COUNT="${HPCGPU_SLURM_NODES:-3}"
# debug and wide name node1-node3, so fewer than three is not a layout this script can make.
MIN_NODES=3
MAX_NODES=64
NODES=(node1 node2 node3)
if [[ "$NODE_COUNT" =~ ^[0-9]+$ ]] && ((NODE_COUNT >= MIN_NODES && NODE_COUNT <= MAX_NODES)); then
  NODES=()
  for ((i = 1; i <= NODE_COUNT; i++)); do NODES+=("node$i"); done
fi  # else check_inputs refuses the value before anything starts
CTLD_PORT=17000
# The same port on both nodes, as on a real cluster: they listen on different hosts.
NODE_PORT=17001
BRIDGE=hpcgpu-br0
CTLD_ADDR="$NET.254"
# locally administered, fixed: 02:00 then the controller's address in hex (10.231.1.254 -> 0a:e7:01:fe)
BRIDGE_MAC="$(printf '02:00:%02x:%02x:%02x:fe' ${NET//./ })"

node_ns() { printf 'hpcgpu-%s\n' "$1"; }   # node1 -> hpcgpu-node1 (the namespace)
node_veth() { printf 'hpcgpu-v%s\n' "${1#node}"; }   # node1 -> hpcgpu-v1 (its veth end in the bridge)
node_addr() { printf '%s.%s\n' "$NET" "${1#node}"; }   # node1 -> NET.1

elapsed_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
log() { printf 'cluster.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

check_inputs() {
  # DIR is spliced into slurm.conf by sed and must not need quoting there.
  [[ "$DIR" =~ ^/[A-Za-z0-9._/-]+$ ]] || die "HPCGPU_SLURM_DIR must be an absolute path of [A-Za-z0-9._/-], got: $DIR"
  [[ "$CPUS" =~ ^[0-9]+$ && "$MEM_MB" =~ ^[0-9]+$ && "$WAIT_S" =~ ^[0-9]+$ ]] \
    || die "HPCGPU_SLURM_CPUS, HPCGPU_SLURM_MEM_MB and HPCGPU_SLURM_WAIT_S must be integers"
  local octet='(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])'
  [[ "$NET" =~ ^$octet\.$octet\.$octet$ ]] \
    || die "HPCGPU_SLURM_NET must be the first three octets of a private /24 (like 10.231.1), got: $NET"
  [[ "$NODE_COUNT" =~ ^[0-9]+$ ]] && ((NODE_COUNT >= MIN_NODES && NODE_COUNT <= MAX_NODES)) \
    || die "HPCGPU_SLURM_NODES must be an integer from $MIN_NODES to $MAX_NODES, got: $NODE_COUNT"
  [[ "$(id -u)" == 0 ]] || die "must run as root (starts daemons, writes $CONF and /etc/hosts)"
}

install_packages() {
  # CI starts from a bare machine; developers usually have the packages already. iproute2 (ip) is
  # not in every minimal image; nsenter, unshare and mountpoint come with util-linux (essential).
  local missing=()
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null || missing+=(slurm-wlm)
  command -v munged >/dev/null || missing+=(munge)
  command -v ip >/dev/null || missing+=(iproute2)
  ((${#missing[@]})) || return 0
  log "installing ${missing[*]} with apt-get"
  "$HERE/../scripts/apt-install.sh" "${missing[@]}"
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
    -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@CTLD_ADDR@|$CTLD_ADDR|g" -e "s|@NODE_PORT@|$NODE_PORT|g" \
    -e "s|@NODE1_ADDR@|$(node_addr node1)|g" -e "s|@NODE2_ADDR@|$(node_addr node2)|g" \
    -e "s|@NODE3_ADDR@|$(node_addr node3)|g" "$TEMPLATE")"
  if grep -q '@[A-Z0-9_]*@' <<<"$out"; then
    die "unfilled placeholder in $TEMPLATE: $(grep -o '@[A-Z0-9_]*@' <<<"$out" | sort -u | tr '\n' ' ')"
  fi
  printf '%s\n' "$out"
  scale_conf
}

scale_conf() {
  # The lines for node4 and up, after the template's: nothing with three nodes, so that layout's
  # slurm.conf stays byte for byte what every checkout renders (no restart when one of them runs `up`).
  ((${#NODES[@]} > MIN_NODES)) || return 0
  local node
  printf '# HPCGPU_SLURM_NODES=%s: the nodes beyond node3 are only in partition scale, so debug and wide\n' "${#NODES[@]}"
  printf '# stay as they are (cluster.sh scale_conf).\n'
  for node in "${NODES[@]:MIN_NODES}"; do
    printf 'NodeName=%s NodeHostname=%s NodeAddr=%s Port=%s CPUs=%s RealMemory=%s State=UNKNOWN\n' \
      "$node" "$node" "$(node_addr "$node")" "$NODE_PORT" "$CPUS" "$MEM_MB"
  done
  printf 'PartitionName=scale Nodes=node[1-%s] MaxTime=INFINITE State=UP\n' "${#NODES[@]}"
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

# --- /etc/hosts ----------------------------------------------------------------------------------

hosts_lines() {
  # Our lines: "NET.1 node1 # hpcgpu-dev-cluster", one per node.
  local node
  for node in "${NODES[@]}"; do printf '%s %s %s\n' "$(node_addr "$node")" "$node" "$MARKER"; done
}

hosts_without_ours() {
  # /etc/hosts minus our lines: those with the marker, and the "127.0.0.1 nodeN" lines that
  # cluster.sh wrote before the nodes had namespaces of their own (exactly that form, nothing else).
  awk -v m="$MARKER" 'index($0, m) { next }
    $1 == "127.0.0.1" && NF == 2 && $2 ~ /^node[12]$/ { next }
    { print }' "$HOSTS"
}

foreign_hosts_lines() {
  # Lines (not ours) that map a node's name to some address: they would shadow ours or be shadowed.
  hosts_without_ours | awk -v names="${NODES[*]}" 'BEGIN { split(names, n, " "); for (k in n) ours[n[k]] = 1 }
    $1 !~ /^#/ { for (i = 2; i <= NF && $i !~ /^#/; i++) if ($i in ours) { print; next } }'
}

hosts_are_current() {
  [[ -z "$(foreign_hosts_lines)" ]] && [[ "$(grep -F "$MARKER" "$HOSTS")" == "$(hosts_lines)" ]] \
    && ! grep -Eq '^127\.0\.0\.1[[:space:]]+node[123][[:space:]]*$' "$HOSTS"
}

write_hosts() {
  # Rewrite /etc/hosts in place (cat >, not mv): in a container it may be a bind mount.
  local text="$1"
  printf '%s\n' "$text" >"$HOSTS"
}

install_hosts() {
  # Rendezvous resolves node names: map the nodes to their namespace addresses, replacing only
  # our own earlier lines.
  hosts_are_current && return 0
  local foreign
  foreign="$(foreign_hosts_lines)"
  [[ -z "$foreign" ]] || die "$HOSTS maps ${NODES[*]} on a line cluster.sh did not write; remove it: $foreign"
  write_hosts "$(hosts_without_ours; hosts_lines)"
  log "mapped $(hosts_lines | awk '{ printf "%s%s=%s", sep, $2, $1; sep = ", " }') in $HOSTS"
}

remove_hosts() {
  grep -qF "$MARKER" "$HOSTS" || grep -Eq '^127\.0\.0\.1[[:space:]]+node[123][[:space:]]*$' "$HOSTS" || return 0
  write_hosts "$(hosts_without_ours)"
  log "removed ${NODES[*]} from $HOSTS"
}

# --- network: a bridge in the root namespace, one namespace per node ------------------------------

ns_exists() { [[ -e "/run/netns/$1" ]]; }

stale_nodes() {
  # Nodes of an earlier, larger layout (HPCGPU_SLURM_NODES was higher then) that left a namespace
  # or a slurmd pid file behind: `up` and `down` remove them too.
  local f node
  for f in /run/netns/hpcgpu-node* "$DIR"/run/slurmd-node*.pid; do
    [[ -e "$f" ]] || continue
    node="${f##*/}"
    node="${node#hpcgpu-}"
    node="${node#slurmd-}"
    node="${node%.pid}"
    # an if, not &&: a false test as the loop's last command would fail the pipeline (pipefail)
    if [[ "$node" =~ ^node[0-9]+$ && " ${NODES[*]} " != *" $node "* ]]; then printf '%s\n' "$node"; fi
  done | sort -u
}

stale_slurmd() {
  # A stale node's slurmd is alive (its namespace alone is removed by net_up, no restart needed).
  local node
  for node in $(stale_nodes); do slurmd_alive "$node" && return 0; done
  return 1
}

net_prune() {
  # Delete the namespaces and bridge ports of stale nodes (their slurmd is stopped by then).
  local node ns pids=()
  for node in $(stale_nodes); do
    ns="$(node_ns "$node")"
    mapfile -t -O "${#pids[@]}" pids < <(ns_pids "$ns")
  done
  ((${#pids[@]} == 0)) || stop_pids "${pids[@]}"
  for node in $(stale_nodes); do
    ns="$(node_ns "$node")"
    if ns_exists "$ns"; then ip netns del "$ns" && log "deleted namespace $ns (not in a $NODE_COUNT-node layout)"; fi
    ip link del dev "$(node_veth "$node")" 2>/dev/null || true
    rm -f "$DIR/run/slurmd-$node.pid"
  done
}

net_problem() {
  # What is missing from the network layout (empty when complete); cheap, for `up` and `status`.
  ip -br addr show dev "$BRIDGE" 2>/dev/null | grep -q " UP .*$CTLD_ADDR/24" \
    || { printf 'bridge %s with %s is not up\n' "$BRIDGE" "$CTLD_ADDR"; return; }
  local node ns
  for node in "${NODES[@]}"; do
    ns="$(node_ns "$node")"
    ns_exists "$ns" || { printf 'namespace %s is missing\n' "$ns"; return; }
    ip -n "$ns" -br addr show dev eth0 2>/dev/null | grep -q " UP .*$(node_addr "$node")/24" \
      || { printf 'eth0 in %s has no %s or is down\n' "$ns" "$(node_addr "$node")"; return; }
    ip -br link show dev "$(node_veth "$node")" 2>/dev/null | grep -q "@" \
      && ip -d link show dev "$(node_veth "$node")" 2>/dev/null | grep -q "master $BRIDGE" \
      || { printf '%s is not in %s\n' "$(node_veth "$node")" "$BRIDGE"; return; }
  done
}

net_up() {
  # Idempotent: creates what is missing, fixes addresses and link states of what exists.
  net_prune || return 1
  if ! ip link show dev "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge || return 1
  fi
  # A bridge takes the lowest MAC of its ports unless given one: a node added later would change it
  # under the others' ARP caches, and they would lose the controller until the entries expire.
  ip link set dev "$BRIDGE" address "$BRIDGE_MAC" || return 1
  ip addr replace "$CTLD_ADDR/24" dev "$BRIDGE" && ip link set dev "$BRIDGE" up || return 1
  local node ns veth
  for node in "${NODES[@]}"; do
    ns="$(node_ns "$node")"
    veth="$(node_veth "$node")"
    ns_exists "$ns" || ip netns add "$ns" || return 1
    ip -n "$ns" link set dev lo up || return 1
    if ! ip -n "$ns" link show dev eth0 >/dev/null 2>&1; then
      # A bridge end whose peer is gone (namespace deleted and made again) cannot be reused.
      ip link del dev "$veth" 2>/dev/null || true
      ip link add "$veth" type veth peer name eth0 netns "$ns" || return 1
    fi
    ip link set dev "$veth" master "$BRIDGE" && ip link set dev "$veth" up || return 1
    ip -n "$ns" addr replace "$(node_addr "$node")/24" dev eth0 && ip -n "$ns" link set dev eth0 up || return 1
    ip -n "$ns" neigh flush dev eth0 2>/dev/null || true  # nothing cached from an earlier layout
  done
  if ! wait_for "the node addresses to answer" 10 net_reachable; then
    # Bridged traffic passes iptables' FORWARD chain when br_netfilter is loaded (a Docker engine
    # with its iptables rules does that, with policy DROP).
    log "${NODES[*]} and $CTLD_ADDR do not all reach each other across $BRIDGE; is bridged traffic" \
      "filtered (sysctl net.bridge.bridge-nf-call-iptables, iptables FORWARD policy)?"
    return 1
  fi
  log "network: $BRIDGE $CTLD_ADDR; $(for n in "${NODES[@]}"; do printf '%s %s (%s) ' "$n" "$(node_addr "$n")" "$(node_ns "$n")"; done)"
}

net_reachable() {
  # From each node: the controller's address and the other node answer. Nothing listens on port 9,
  # so "connection refused" is the answer; a timeout means the bridge does not carry the traffic.
  local node other out
  for node in "${NODES[@]}"; do
    for other in "$CTLD_ADDR" "${NODES[@]}"; do
      [[ "$other" == "$node" ]] && continue
      [[ "$other" == node* ]] && other="$(node_addr "$other")"
      out="$(ip netns exec "$(node_ns "$node")" timeout 2 bash -c "exec 3<>/dev/tcp/$other/9" 2>&1)"
      [[ $? -eq 0 || "$out" == *refused* ]] || return 1
    done
  done
}

node_exec() {
  # node_exec NODE CMD...: run CMD as on that node: in its network namespace, with a sysfs that
  # lists its interfaces (/sys/class/net; the cgroup trees under /sys/fs/cgroup stay the machine's,
  # which slurmd and podman need) and its host name. Files and processes stay shared.
  # (`ip netns exec` mounts a fresh /sys without /sys/fs/cgroup, and slurmd then fails to start.)
  local node="$1"
  shift
  nsenter --net="/run/netns/$(node_ns "$node")" -- unshare --mount --uts --propagation slave -- \
    bash "$HERE/cluster.sh" in-node "$node" "$@"
}

enter_node() {
  # The inside half of node_exec, in the fresh mount and UTS namespaces.
  local node="$1"
  shift
  local mnt="$DIR/sysfs/$node"
  install -d -m 0755 "$mnt"
  mount -t sysfs "$(node_ns "$node")" "$mnt" || die "mounting sysfs for $node failed"
  if mountpoint -q /sys/fs/cgroup; then
    mount --rbind /sys/fs/cgroup "$mnt/fs/cgroup" || die "binding /sys/fs/cgroup for $node failed"
  fi
  mount --move "$mnt" /sys || die "mounting $node's sysfs on /sys failed"
  printf '%s\n' "$node" >/proc/sys/kernel/hostname
  exec "$@"
}

ns_pids() { ns_exists "$1" && ip netns pids "$1" 2>/dev/null; }

net_down() {
  # Processes still in a namespace (a job's leftovers) keep it alive after `ip netns del`: end them.
  local node ns pids=()
  net_prune
  for node in "${NODES[@]}"; do
    ns="$(node_ns "$node")"
    mapfile -t -O "${#pids[@]}" pids < <(ns_pids "$ns")
  done
  if ((${#pids[@]})); then
    log "stopping processes left in the node namespaces: ${pids[*]}"
    stop_pids "${pids[@]}"
  fi
  for node in "${NODES[@]}"; do
    ns="$(node_ns "$node")"
    if ns_exists "$ns"; then ip netns del "$ns" && log "deleted namespace $ns"; fi
    ip link del dev "$(node_veth "$node")" 2>/dev/null || true
  done
  if ip link show dev "$BRIDGE" >/dev/null 2>&1; then ip link del dev "$BRIDGE" && log "deleted bridge $BRIDGE"; fi
}

# --- slurm daemons -------------------------------------------------------------------------------

ctld_running() { pid_from "$DIR/run/slurmctld.pid" slurmctld >/dev/null; }
slurmd_alive() { pid_from "$DIR/run/slurmd-$1.pid" slurmd >/dev/null; }

in_ns() {
  # in_ns PID NAMESPACE: the process lives in that network namespace (same inode).
  local mine theirs
  mine="$(stat -L -c %i "/proc/$1/ns/net" 2>/dev/null)" && theirs="$(stat -L -c %i "/run/netns/$2" 2>/dev/null)" \
    && [[ "$mine" == "$theirs" ]]
}

slurmd_running() {
  # slurmd for node $1 is alive and in its node's namespace (one left in the root namespace by an
  # older cluster.sh, or in a namespace deleted since, does not count).
  local pid
  pid="$(pid_from "$DIR/run/slurmd-$1.pid" slurmd)" && in_ns "$pid" "$(node_ns "$1")"
}

misplaced_slurmd() {
  local node
  for node in "${NODES[@]}"; do
    slurmd_alive "$node" && ! slurmd_running "$node" && return 0
  done
  return 1
}

start_slurm() {
  install -d -m 0755 "$DIR/state" "$DIR/run" "$DIR/log" "${NODES[@]/#/$DIR/spool/}"
  # Called as `start_slurm || show_failure`, where set -e is off: every step checks itself.
  if ! ctld_running; then
    log "starting slurmctld"
    slurmctld -f "$CONF" 9>&- || return 1
    wait_for "slurmctld" 20 ctld_responds || return 1
  fi
  local node
  for node in "${NODES[@]}"; do
    if ! slurmd_running "$node"; then
      log "starting slurmd -N $node in namespace $(node_ns "$node") ($(node_addr "$node"))"
      # Every job step on the node inherits its namespaces: address, interfaces, host name.
      node_exec "$node" slurmd -f "$CONF" -N "$node" 9>&- || return 1
    fi
  done
}

ctld_responds() { ctld_running && scontrol ping 2>/dev/null | grep -q 'is UP'; }

node_states() {
  # "node1 idle" lines; sinfo -N prints one line per node and partition.
  sinfo -h -N -o '%N %t' 2>/dev/null | sort -u
}

nodes_ready() {
  # Every node usable: idle, or busy with jobs (mix/alloc), and not drained or down.
  local states
  states="$(node_states)" || return 1
  local node
  for node in "${NODES[@]}"; do
    grep -Eq "^$node (idle|mix|alloc|comp)\$" <<<"$states" || return 1
  done
}

any_running() {
  munge_running || ctld_running && return 0
  local node
  for node in "${NODES[@]}"; do slurmd_alive "$node" && return 0; done
  return 1
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
  munge_running && ctld_running || return 1
  local node
  for node in "${NODES[@]}"; do slurmd_running "$node" || return 1; done
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
  log "network: $(net_problem)"
  ip -br addr show dev "$BRIDGE" 2>&1 | sed 's/^/  /' >&2 || true
  local node f
  for node in "${NODES[@]}"; do
    ip -n "$(node_ns "$node")" -br addr 2>&1 | sed "s/^/  $(node_ns "$node"): /" >&2 || true
  done
  for f in "$DIR/log/slurmctld.log" "${NODES[@]/%/.log}" "$DIR/munge/log/munged.log"; do
    [[ "$f" == /* ]] || f="$DIR/log/slurmd-$f"
    log "last lines of $f:"
    tail -n 15 "$f" 2>&1 | sed 's/^/  /' >&2 || true
  done
  exit 1
}

# --- subcommands ---------------------------------------------------------------------------------

cmd_up() {
  local t0=$EPOCHREALTIME
  install_packages
  if daemons_running && conf_is_current && [[ -z "$(net_problem)" ]] && [[ -z "$(stale_nodes)" ]] \
    && hosts_are_current && nodes_ready; then
    log "already up ($DIR)"
    node_states >&2
    return 0
  fi
  if any_running && ! conf_is_current; then
    # Daemons read slurm.conf at start: a changed config (an older layout) means a clean restart.
    log "slurm.conf changed; restarting the cluster"
    stop_all
  elif misplaced_slurmd; then
    log "a slurmd runs outside its node's namespace; restarting the cluster"
    stop_all
  elif stale_slurmd; then
    log "slurmd of a larger layout still runs ($(stale_nodes | tr '\n' ' ')); restarting the cluster"
    stop_all
  fi

  net_up || show_failure "could not set up the node namespaces and bridge"
  install_hosts
  start_munge || show_failure "munged did not start"
  install_conf
  start_slurm || show_failure "slurmctld or slurmd did not start"
  resume_nodes
  if ! wait_for "${NODES[*]} to be idle" "$WAIT_S" nodes_ready; then
    show_failure "${NODES[*]} not all idle after ${WAIT_S}s"
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
  scancel -p wide 2>/dev/null || true
  scancel -p scale 2>/dev/null || true
  # KillWait (10 s) plus slack for the epilog and the step daemons to exit.
  wait_for "jobs to end" 20 no_jobs || log "jobs still listed after 20 s; stopping anyway"
}

no_jobs() { [[ -z "$(squeue -h -t PD,R,CG,S,CF -o '%i' 2>/dev/null)" ]]; }

stop_all() {
  local pid name pids=()
  cancel_jobs
  for name in "${NODES[@]/#/slurmd-}" $(stale_nodes | sed 's/^/slurmd-/') slurmctld; do
    [[ "$name" == slurmctld ]] && name=slurmctld:slurmctld || name="$name:slurmd"
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
  net_down
  remove_hosts
  log "down"
}

missing_daemons() {
  # Names of our daemons that are not running (sinfo alone lags a dead slurmd by SlurmdTimeout).
  munge_running || printf 'munged '
  ctld_running || printf 'slurmctld '
  local node
  for node in "${NODES[@]}"; do
    if ! slurmd_alive "$node"; then
      printf 'slurmd-%s ' "$node"
    elif ! slurmd_running "$node"; then
      printf 'slurmd-%s-in-%s ' "$node" "$(node_ns "$node")"
    fi
  done
}

cmd_status() {
  if ! command -v sinfo >/dev/null; then
    log "sinfo not installed; run: slurm/cluster.sh up"
    return 1
  fi
  sinfo -N -o '%N %P %t %c %m' || true
  local missing net node
  missing="$(missing_daemons)"
  net="$(net_problem)"
  if [[ -z "$missing" && -z "$net" ]] && nodes_ready; then
    for node in "${NODES[@]}"; do
      printf '%s: namespace %s, eth0 %s\n' "$node" "$(node_ns "$node")" "$(node_addr "$node")"
    done
    log "up: ${NODES[*]} are usable ($DIR)"
    return 0
  fi
  log "down or unhealthy${missing:+ (not running: ${missing% })}${net:+ (network: $net)}; run: slurm/cluster.sh up"
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
    exec)
      # exec NODE CMD...: run a command as on nodeN (debugging: ip addr, hostname, a server).
      check_inputs
      [[ " ${NODES[*]} " == *" ${2:-} "* ]] || die "usage: $0 exec node1|...|node${#NODES[@]} COMMAND [ARG...]"
      ns_exists "$(node_ns "$2")" || die "namespace $(node_ns "$2") does not exist; run: $0 up"
      (($# > 2)) || die "usage: $0 exec node1|...|node${#NODES[@]} COMMAND [ARG...]"
      node_exec "${@:2}"
      ;;
    in-node)
      [[ " ${NODES[*]} " == *" ${2:-} "* ]] || die "in-node is cluster.sh's own (see exec)"
      enter_node "${@:2}"
      ;;
    *)
      echo "usage: $0 up|down|status|exec NODE COMMAND..." >&2
      exit 2
      ;;
  esac
}

# Sourced (tests/backends/slurm/test_cluster_sh_hosts.py), it only defines the functions above.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
