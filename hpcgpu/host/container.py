"""The argv prefix that runs the node command inside a container: apptainer, docker, podman, pyxis.

Pure and torch-free: paths, GPU and InfiniBand presence, the user id and the host environment all
come in as arguments, so every command line is a function of its inputs (pinned by golden tests).
`check_runtime` is the one function here with side effects; it runs before anything starts.

How variable VALUES reach the ranks: never through argv or a script. hpcgpu passes NAMES only and
the launcher puts the values in the environment of the process it starts:
- docker/podman: `-e NAME` (no `=`) copies NAME from the environment of `docker run` itself; the
  local backend starts the prefix with its own environment (secrets added); under Slurm the job
  environment (sbatch --export=ALL, srun) carries them, and the scheduler's variables
  the node agent reads (RunContext.scheduler_env_names) are passed as well.
- apptainer: the container inherits the host environment by default, so nothing is added (hence
  `--cleanenv`/`--containall` are refused: they would drop every variable hpcgpu set).
- pyxis: the job environment is passed too, but variables the image sets win over it (NGC images
  set NCCL_*), so the names go in `--container-env` (pyxis >= 0.15), which makes the host win.
Besides hpcgpu's own names, the host's NCCL_*, TORCH_*, GLOO_*, CUDA_VISIBLE_DEVICES ... (see
FORWARD_PREFIXES) are passed when set, so a value the user exported applies inside as it does outside.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Callable, Mapping, Sequence

from hpcgpu.contract.errors import UserError
from hpcgpu.contract.oci import oci_gpu_args

RUNTIMES = ("apptainer", "docker", "podman", "pyxis")

#: Host variables that tune NCCL, torch, gloo, CUDA and the fabric: passed by name (when set) into
#: docker/podman, which start from the image's environment. Without this a value the user exported
#: (NCCL_SOCKET_IFNAME, NCCL_DEBUG, CUDA_VISIBLE_DEVICES, ...) would silently not apply inside, and
#: the node agent would put hpcgpu's default back where the user had overridden it.
FORWARD_PREFIXES = ("NCCL_", "TORCH_", "PYTORCH_", "GLOO_", "UCX_", "FI_")
FORWARD_NAMES = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "CUDA_LAUNCH_BLOCKING",
                 "CUDA_DEVICE_MAX_CONNECTIONS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
#: Host paths of caches, usually under a $HOME that is not mounted: the image's defaults are better.
_NOT_FORWARDED = ("TORCH_HOME", "TORCH_EXTENSIONS_DIR", "PYTORCH_KERNEL_CACHE_PATH")

#: Apptainer flags that start the container with an empty environment.
_CLEANENV_FLAGS = ("--cleanenv", "-e", "--containall", "-C")


@dataclass(frozen=True)
class ContainerSettings:
    """The spec's `container:` section, as plain data."""

    runtime: str
    """apptainer | docker | podman | pyxis"""
    image: str
    """image reference (docker/podman/pyxis), or a .sif path or docker:// URI (apptainer)"""
    binds: tuple[str, ...] = ()
    """extra mounts in the runtime's own syntax, `SRC[:DST[:OPTS]]`"""
    extra_args: tuple[str, ...] = ()
    """flags placed just before the image (on srun for pyxis); the user's word is last"""
    env_passthrough: tuple[str, ...] = ()
    """names of further host variables to pass in (values stay in the environment)"""

    @classmethod
    def from_spec(cls, section) -> "ContainerSettings":
        """Convert the spec's pydantic `container:` model (or anything with those attributes)."""
        return cls(
            runtime=section.runtime,
            image=section.image,
            binds=tuple(section.binds),
            extra_args=tuple(section.extra_args),
            env_passthrough=tuple(getattr(section, "env_passthrough", ())),
        )


@dataclass(frozen=True)
class RunContext:
    """What one node of one run needs from the container: mounts, devices, identity, names."""

    code_dir: str
    """the user's code and spec; also the working directory unless `workdir` is given"""
    run_dir: str
    ckpt_dir: str | None = None
    workdir: str | None = None
    env_names: tuple[str, ...] = ()
    """variables hpcgpu computed for the ranks (names only)"""
    gpus: bool = False
    infiniband: bool = False
    """/dev/infiniband exists on the node (the caller looks; this module does not)"""
    uid: int | None = None
    gid: int | None = None
    scheduler_env_names: tuple[str, ...] = ()
    """variables the scheduler sets that the node agent reads (docker/podman get them by name)"""
    name: str | None = None
    """docker/podman container name (local runs: one per run, so a second copy cannot start)"""


def render_shell(argv: Sequence[str]) -> str:
    """One shell-safe line for a script or a dry run (paths with spaces stay one word)."""
    return shlex.join(argv)


def mount_dirs(ctx: RunContext) -> list[str]:
    """Code, run and checkpoint directories, absolute, without ones already inside another."""
    dirs: list[PurePosixPath] = []
    for raw in (ctx.code_dir, ctx.run_dir, ctx.ckpt_dir):
        if not raw:
            continue
        path = PurePosixPath(os.path.normpath(raw))
        if not path.is_absolute():
            raise UserError(f"container mount {raw!r} is not an absolute path", hint="pass absolute paths")
        if any(path == d or d in path.parents for d in dirs):
            continue
        dirs = [d for d in dirs if path not in d.parents] + [path]
    return [str(d) for d in dirs]


def _require_plain(path: str, runtime: str, bad: str) -> str:
    """Refuse a path the runtime's mount syntax cannot carry (it splits on these characters)."""
    found = sorted({c for c in path if c in bad})
    if found:
        raise UserError(
            f"{runtime} cannot mount {path!r}: its mount syntax splits on {' '.join(found)}",
            hint="move or symlink the directory to a path without those characters",
        )
    return path


def env_names(settings: ContainerSettings, ctx: RunContext, *, scheduler_names: bool) -> list[str]:
    """Sorted, unique names to pass: hpcgpu's, the user's passthrough, and the scheduler's when asked."""
    names = set(ctx.env_names) | set(settings.env_passthrough)
    if scheduler_names:
        names |= set(ctx.scheduler_env_names)
    for name in names:
        if not name or "=" in name:
            raise UserError(f"environment name {name!r} is not a bare name",
                            hint="give names; values come from the environment")
    return sorted(names)


def forwarded_env_names(environ: Mapping[str, str]) -> tuple[str, ...]:
    """Names in environ that FORWARD_PREFIXES / FORWARD_NAMES select (sorted; values stay there)."""
    return tuple(sorted(
        name for name in environ
        if (name in FORWARD_NAMES or name.startswith(FORWARD_PREFIXES)) and name not in _NOT_FORWARDED
    ))


def env_extra_args(runtime: str, environ: Mapping[str, str]) -> list[str]:
    """Machine-level flags from HPCGPU_<RUNTIME>_ARGS (e.g. HPCGPU_PODMAN_ARGS), shell-split."""
    return shlex.split(environ.get(f"HPCGPU_{runtime.upper()}_ARGS", ""))


def apptainer_prefix(settings: ContainerSettings, ctx: RunContext, machine_args: Sequence[str] = ()) -> list[str]:
    """`apptainer exec [--nv] --bind ... --pwd DIR IMAGE`: the host environment is inherited."""
    if any(a in _CLEANENV_FLAGS for a in [*machine_args, *settings.extra_args]):
        raise UserError(
            "container.extra_args asks apptainer for a clean environment, which drops hpcgpu's variables",
            hint="remove --cleanenv/--containall (set variables for the container in the spec's env: instead)",
        )
    argv = ["apptainer", "exec"]
    if ctx.gpus:
        argv.append("--nv")
    # /dev/shm: NCCL and the DataLoader's workers need the host's; sites with `mount dev = minimal`
    # would otherwise give a small private one. /dev/infiniband: the RDMA devices, for the same reason.
    binds = [_require_plain(d, "apptainer", ":,") for d in mount_dirs(ctx)] + ["/dev/shm"]
    if ctx.infiniband:
        binds.append("/dev/infiniband")
    for bind in [*binds, *settings.binds]:
        argv += ["--bind", bind]
    argv += ["--pwd", ctx.workdir or ctx.code_dir, *machine_args, *settings.extra_args, settings.image]
    return argv


def oci_prefix(settings: ContainerSettings, ctx: RunContext, machine_args: Sequence[str] = ()) -> list[str]:
    """`docker|podman run --rm --pid=host ... IMAGE` with the same paths inside as outside."""
    runtime = settings.runtime
    # --entrypoint= : the node command is a full argv (python3 -m hpcgpu train ...), so the image's
    # entrypoint (tini -- hpcgpu) must not be prepended.
    # --pid=host, as Apptainer and enroot/pyxis do: the node agent is not PID 1, so signals need no
    # init (podman refuses --init here; conmon / containerd-shim reap orphans as subreapers). Torch's
    # rendezvous names a node (hostname, pid): in private PID namespaces every agent has the same
    # pid, so two "nodes" on one host (--network host: one hostname) collide and never rendezvous.
    # Host tools (py-spy, nvidia-smi's process list) also see the ranks.
    # --ipc=host: NCCL's shared-memory transport and DataLoader workers outgrow docker's 64 MB /dev/shm.
    # --network host: ranks on other nodes reach the rendezvous at this node's address and port.
    argv = [runtime, "run", "--rm", "--entrypoint=", "--pid=host", "--ipc=host", "--network", "host"]
    if ctx.gpus:
        # Every GPU of the machine; CUDA_VISIBLE_DEVICES (forwarded by name) selects the run's, with
        # the same numbering inside. Under Slurm the planner leaves this out and the node step
        # hpcgpu.backends.slurm.node_gpus adds exactly the job's GPUs on the node.
        argv += oci_gpu_args(runtime, None)
    if ctx.infiniband:
        # RDMA registers (pins) memory: it needs the devices, IPC_LOCK and no memlock limit.
        argv += ["--device", "/dev/infiniband", "--cap-add", "IPC_LOCK", "--ulimit", "memlock=-1:-1"]
    if ctx.name:
        argv += ["--name", ctx.name]
    argv += _oci_user(runtime, ctx)
    for d in mount_dirs(ctx):
        argv += ["-v", f"{_require_plain(d, runtime, ':')}:{d}"]
    for bind in settings.binds:
        argv += ["-v", bind]
    argv += ["-w", ctx.workdir or ctx.code_dir]
    for name in env_names(settings, ctx, scheduler_names=True):
        argv += ["-e", name]
    return [*argv, *machine_args, *settings.extra_args, settings.image]


def _oci_user(runtime: str, ctx: RunContext) -> list[str]:
    """Run as the calling user so files in the mounted run directory belong to them."""
    if ctx.uid is None:
        return []
    if runtime == "podman" and ctx.uid != 0:
        # Rootless podman maps the caller to root in the container; keep-id maps it to itself.
        return ["--userns=keep-id"]
    user = ["--user", f"{ctx.uid}:{ctx.uid if ctx.gid is None else ctx.gid}"]
    # An image has no passwd entry for an arbitrary uid, and docker then sets HOME=/, which is not
    # writable; caches (~/.cache, ~/.triton) need a writable HOME. Root has /root.
    return user if ctx.uid == 0 else [*user, "-e", "HOME=/tmp"]


def pyxis_srun_args(
    settings: ContainerSettings, ctx: RunContext, environ: Mapping[str, str] | None = None
) -> list[str]:
    """The srun options for pyxis (`--container-image` ...): they go on srun, not before the command.

    environ: the submitting environment; its NCCL_*/TORCH_*/... names join --container-env, so
    the user's values win over the ones an NGC image sets."""
    ctx = _with_forwarded(ctx, environ or {})
    mounts = [f"{_require_plain(d, 'pyxis', ',:')}:{d}" for d in mount_dirs(ctx)]
    mounts += [_require_plain(b, "pyxis", ",") for b in settings.binds]
    argv = [
        f"--container-image={settings.image}",
        f"--container-mounts={','.join(mounts)}",
        f"--container-workdir={ctx.workdir or ctx.code_dir}",
    ]
    names = env_names(settings, ctx, scheduler_names=False)
    if names:
        argv.append(f"--container-env={','.join(names)}")
    return [*argv, *settings.extra_args]


def container_prefix(
    settings: ContainerSettings, ctx: RunContext, environ: Mapping[str, str] | None = None
) -> list[str]:
    """The argv to put before the node command; empty for pyxis (see pyxis_srun_args).

    environ: the launching environment (HPCGPU_<RUNTIME>_ARGS, and the names to forward)."""
    environ = environ or {}
    machine_args = env_extra_args(settings.runtime, environ)
    ctx = _with_forwarded(ctx, environ)
    if settings.runtime == "apptainer":
        return apptainer_prefix(settings, ctx, machine_args)
    if settings.runtime in ("docker", "podman"):
        return oci_prefix(settings, ctx, machine_args)
    if settings.runtime == "pyxis":
        return []
    raise UserError(f"container.runtime {settings.runtime!r} is not one of {', '.join(RUNTIMES)}")


def _with_forwarded(ctx: RunContext, environ: Mapping[str, str]) -> RunContext:
    """ctx with the forwarded host names added to env_names."""
    extra = forwarded_env_names(environ)
    return dataclasses.replace(ctx, env_names=(*ctx.env_names, *extra)) if extra else ctx


def local_container_name(run_dir: str) -> str:
    """`hpcgpu-<run id>`: a stopped run resumed while its old container still runs is refused,
    and a container left behind by a killed `hpcgpu run local` can be found (podman ps)."""
    return f"hpcgpu-{os.path.basename(os.path.normpath(run_dir))}"


def check_runtime(
    runtime: str,
    image: str,
    *,
    which: Callable[[str], str | None] = shutil.which,
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
    container_name: str | None = None,
) -> None:
    """Raise UserError when the runtime binary or the image is missing (before anything starts),
    or when a docker/podman container named container_name already exists (the run still runs)."""
    if runtime not in RUNTIMES:
        raise UserError(f"container.runtime {runtime!r} is not one of {', '.join(RUNTIMES)}")
    binary = "srun" if runtime == "pyxis" else runtime
    if which(binary) is None:
        raise UserError(f"container runtime {runtime!r} needs `{binary}`, which is not on PATH",
                        hint=_INSTALL_HINT[runtime])
    if runtime == "apptainer":
        _check_sif(image)
    elif runtime == "pyxis":
        _check_pyxis(run)
    else:
        _check_oci_image(runtime, image, run)
        if container_name:
            _check_name_free(runtime, container_name, run)


def _check_name_free(runtime: str, name: str, run: Callable[..., subprocess.CompletedProcess]) -> None:
    """A container of this run still exists: starting another would train twice in one run dir."""
    if _capture(run, [runtime, "container", "inspect", "--format", "{{.State.Status}}", name]).returncode == 0:
        raise UserError(
            f"container {name} of this run still exists: the run is still going (or its container was left behind)",
            hint=f"wait for it, or stop it: {runtime} stop -t 120 {name} (it checkpoints first), then resume again",
        )


def _check_sif(image: str) -> None:
    """A local .sif must exist; docker://, oras:// ... images are fetched by apptainer itself."""
    if "://" not in image and not os.path.isfile(image):
        raise UserError(f"apptainer image {image!r} does not exist", hint="build it: make sif (see containers/hpcgpu.def)")


def _check_pyxis(run: Callable[..., subprocess.CompletedProcess]) -> None:
    """srun must know --container-image; the image itself lives on the compute nodes' side."""
    if "--container-image" not in _capture(run, ["srun", "--help"]).stdout:
        raise UserError("srun has no --container-image: the pyxis plugin is not installed here",
                        hint=_INSTALL_HINT["pyxis"])


def _check_oci_image(runtime: str, image: str, run: Callable[..., subprocess.CompletedProcess]) -> None:
    """`podman image exists` / `docker image inspect`, telling a missing image from a broken daemon."""
    if runtime == "podman":
        out = _capture(run, ["podman", "image", "exists", image])
        missing = out.returncode == 1
    else:
        out = _capture(run, ["docker", "image", "inspect", "--format", "{{.Id}}", image])
        missing = "no such image" in out.stderr.lower()
    if out.returncode == 0:
        return
    if not missing:
        raise UserError(f"{runtime} cannot inspect images: {out.stderr.strip() or f'exit {out.returncode}'}",
                        hint="is the docker daemon running, and may you use it?" if runtime == "docker" else "see `podman info`")
    raise UserError(f"{runtime} image {image!r} does not exist here",
                    hint=f"{runtime} pull {image}, or build it: make image / make image-test")


def _capture(run: Callable[..., subprocess.CompletedProcess], argv: list[str]) -> subprocess.CompletedProcess:
    """Run a short probe, text output captured; a hung daemon becomes a UserError, not a hang."""
    try:
        return run(argv, capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        raise UserError(f"`{render_shell(argv)}` did not answer within 60 s") from None


_INSTALL_HINT = {
    "apptainer": "module load apptainer, or install it: https://apptainer.org/docs/admin/main/installation.html",
    "docker": "install Docker Engine and the NVIDIA Container Toolkit, or use runtime: podman",
    "podman": "apt-get install podman (add --runtime/--cgroup-manager via HPCGPU_PODMAN_ARGS if crun fails)",
    "pyxis": "pyxis is a Slurm plugin (https://github.com/NVIDIA/pyxis); or use runtime: apptainer",
}
