#!/usr/bin/env bash
# Print the podman flags these development/CI machines need, one line, for HPCGPU_PODMAN_ARGS:
#   export HPCGPU_PODMAN_ARGS="$(containers/podman-args.sh)"
# They go right after `podman run` (podman accepts its global flags there too).
#   --runtime runc --cgroup-manager=cgroupfs   crun fails here with setrlimit/cgroups errors.
#   --ulimit nofile=N:N --ulimit nproc=M:M      rootful podman asks runc for nofile=1048576 and a
#       large nproc; without CAP_SYS_RESOURCE (sandboxed CI) raising a limit fails with "error
#       setting rlimit type 7: operation not permitted". N is this shell's hard open-files limit;
#       M is the hard process limit capped at kernel.pid_max, which podman lowers its own to.
# On an ordinary workstation none of this is needed: leave HPCGPU_PODMAN_ARGS unset.
set -euo pipefail
nofile="$(ulimit -Hn)"
nproc="$(ulimit -Hu)"
pid_max="$(cat /proc/sys/kernel/pid_max 2>/dev/null || echo 32768)"
[[ "$nofile" == unlimited ]] && nofile=1048576
if [[ "$nproc" == unlimited ]] || ((nproc > pid_max)); then nproc="$pid_max"; fi
echo "--runtime runc --cgroup-manager=cgroupfs --ulimit nofile=$nofile:$nofile --ulimit nproc=$nproc:$nproc"
