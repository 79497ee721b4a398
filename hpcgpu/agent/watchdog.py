"""The hang watchdog of the node agent: notice that ranks stopped making progress, say who and where.

Each poll (from torch elastic's monitor loop, every POLL_S) the agent reads its ranks' heartbeats
(contract/heartbeat.py) and, from /proc, each rank's state and CPU and I/O counters. A rank makes
progress when its heartbeat counter moves; before it is armed (its first ARM_BEATS beats: the first
forward and backward, where compilation and autotuning happen) and in the busy phases (start-up,
checkpoints) its CPU time and I/O count too. A process stopped by a signal (SIGSTOP, a debugger)
never progresses. When no rank of the run made progress for watchdog.stall_s, the agent asks every
rank for its stacks and flight-recorder record, gathers every node's view on the head, writes
`<run dir>/hang-<time>.md` and `.json`, names the rank(s) behind (culprits below) and ends the
attempt: torch elastic stops the ranks and restarts them under distributed.max_restarts, else the
run ends with exit status 76 (exitcodes.HUNG).

Ranks that never beat (a script that does not use hpcgpu.dist) are judged by liveness only: a rank
stopped for stall_s is hung; an idle one may be waiting on a GPU or a file system.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from hpcgpu.contract.heartbeat import BUSY_PHASES, HeartbeatFile, Slot, default_dir, dump_paths, remove_stale

#: how often the agent reads the heartbeats
POLL_S = 1.0
#: a rank is judged by its beats alone after this many (the Trainer: its first backward is done)
ARM_BEATS = 4
#: how long the agent waits for its ranks' dumps, and the head for every node's part of the report
REPORT_WAIT_S = 10.0
#: innermost frames of a rank's main thread shown in the report (all are in the .json)
TOP_FRAMES = 8
#: /proc states of a process that cannot run until someone continues it
STOPPED_STATES = frozenset({"T", "t"})


# ---------------------------------------------------------------------------------- /proc


def read_proc(pid: int) -> tuple[str, int]:
    """(state letter, work) of a process: work grows with its CPU ticks and bytes read or written
    (its threads' included); ("", 0) when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "", 0
    fields = stat[stat.rindex(")") + 2:].split()
    state, ticks = fields[0], int(fields[11]) + int(fields[12])  # utime, stime
    io = 0
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith(("rchar:", "wchar:")):
                io += int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return state, ticks + io


def child_processes(pid: int) -> list[dict]:
    """A rank's child processes (data-loader workers): pid, state, command name."""
    out = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            state, _ = read_proc(int(child))
            try:
                name = Path(f"/proc/{child}/comm").read_text().strip()
            except OSError:
                name = "?"
            out.append({"pid": int(child), "state": state, "name": name})
    return out


# ---------------------------------------------------------------------------------- progress


@dataclass
class RankWatch:
    """What the agent remembers of one rank between polls."""

    rank: int
    local_rank: int
    pid: int
    beats: int = 0
    work: int = -1
    last_progress: float = 0.0
    step: int = 0
    phase: str = "start"
    state: str = ""


def progressed(watch: RankWatch, slot: Slot, state: str, work: int, node_beats: bool) -> bool:
    """Did the rank make progress since the last poll? (see the module's docstring)"""
    if state in STOPPED_STATES or state == "":
        return False
    if slot.beats != watch.beats:
        return True
    if not node_beats:
        return True  # no rank here beats: liveness only
    counts_work = slot.beats < ARM_BEATS or slot.phase in BUSY_PHASES
    return counts_work and work != watch.work


def observe(watches: list[RankWatch], slots: list[Slot], procs: list[tuple[str, int]], now: float) -> None:
    """Fold one poll (slots and /proc samples by local rank) into the watches."""
    # a slot counts once its rank has opened it (the rank writes its pid there first)
    current = {w.local_rank: slots[w.local_rank] if slots[w.local_rank].pid == w.pid else Slot(0, 0, "start", 0, w.pid)
               for w in watches}
    node_beats = any(s.beats for s in current.values())
    for w in watches:
        slot, (state, work) = current[w.local_rank], procs[w.local_rank]
        if w.work < 0 or progressed(w, slot, state, work, node_beats):
            w.last_progress = now
        w.beats, w.work, w.step, w.phase, w.state = slot.beats, work, slot.step, slot.phase, state


def idle_s(watches: list[RankWatch], now: float) -> Optional[float]:
    """How long no live rank of this node made progress (None: no rank to judge)."""
    live = [w for w in watches if w.state != ""]
    if not live:
        return None
    return now - max(w.last_progress for w in live)


# ---------------------------------------------------------------------------------- verdict


def summarize_flight(text: str) -> Optional[dict]:
    """From a flight-recorder dump: the default process group's last entered (enqueued) and last
    completed collective sequence numbers, and the collectives entered but not completed."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    status = data.get("pg_status") or {}
    pg = "0" if "0" in status else (sorted(status)[0] if status else None)
    if pg is None:
        return None
    entered = int(status[pg].get("last_enqueued_collective", -1))
    completed = int(status[pg].get("last_completed_collective", -1))
    open_ops = [e.get("profiling_name", "?") for e in data.get("entries", [])
                if str(e.get("pg_id", "0")) == pg and completed < int(e.get("collective_seq_id", 0)) <= entered
                and not e.get("is_p2p")]
    return {"process_group": pg, "entered": entered, "completed": completed, "waiting_in": open_ops}


def culprits(ranks: list[dict]) -> tuple[list[int], str]:
    """The rank(s) the others wait for, and how they were told apart; ([], why) when every rank
    stands at the same place (a collective, network or device hang: no rank is behind)."""
    stopped = [r["rank"] for r in ranks if r.get("state") in STOPPED_STATES]
    if stopped:
        waiting = sorted({r["flight"]["entered"] for r in ranks if r.get("flight") and r["flight"]["waiting_in"]})
        return stopped, ("stopped by a signal (SIGSTOP, a debugger or a job suspend): it cannot run" + (
            f"; the others wait in collective #{', #'.join(map(str, waiting))}, which it has not entered"
            if waiting else ""))
    entered = {r["rank"]: r["flight"]["entered"] for r in ranks if r.get("flight")}
    if len(entered) == len(ranks) and len(set(entered.values())) > 1:
        low = min(entered.values())
        return (sorted(r for r, seq in entered.items() if seq == low),
                f"behind: it entered collective #{low} of the default process group, the others "
                f"#{max(entered.values())}")
    beating = [r for r in ranks if r.get("beats")]
    beats = {r["rank"]: r["beats"] for r in beating}
    if len(beating) == len(ranks) and len(set(beats.values())) > 1:
        low = min(beats.values())
        return (sorted(r for r, b in beats.items() if b == low),
                "behind: its heartbeat stopped earlier in the step than the others'")
    return [], "every rank stopped at the same place: no rank is behind the others"


# ---------------------------------------------------------------------------------- report


@dataclass
class HangReport:
    """Everything the agent(s) saw, as written to hang-<time>.json."""

    time: str
    stall_s: int
    idle_s: float
    culprits: list[int]
    why: str
    ranks: list[dict] = field(default_factory=list)
    nodes: list[dict] = field(default_factory=list)
    files: dict = field(default_factory=dict)

    def culprit_nodes(self) -> list[str]:
        """Where the culprits run: the host, with the node rank when the run has several nodes."""
        several = len({r["node_rank"] for r in self.ranks}) > 1
        return sorted({f"node {r['node_rank']} ({r['host']})" if several else r["host"]
                       for r in self.ranks if r["rank"] in self.culprits})


def _frames(rank: dict, n: int) -> list[str]:
    main = next((t for t in rank.get("stacks") or [] if t.get("main")), None)
    if main is None:
        return []
    return [f"{f['file']}:{f['line']} in {f['function']}" + (f": {f['code']}" if f.get("code") else "")
            for f in main["frames"][-n:]][::-1]


def rank_line(r: dict) -> str:
    where = f"rank {r['rank']} on {r['host']} (node {r['node_rank']}, pid {r['pid']})"
    state = {"T": "stopped", "t": "stopped (traced)", "R": "running", "S": "sleeping", "D": "in uninterruptible I/O",
             "Z": "exited"}.get(r.get("state", ""), r.get("state") or "gone")
    fr = r.get("flight")
    seq = (f", collective #{fr['entered']} entered, #{fr['completed']} completed"
           + (f" (waiting in {', '.join(fr['waiting_in'])})" if fr["waiting_in"] else "")) if fr else ""
    beat = f"last heartbeat: {r['phase']} of step {r['step']}" if r.get("beats") else "no heartbeat"
    return f"{where}: {state}, {beat}{seq}, no progress for {r['idle_s']:.0f} s"


def render_markdown(report: HangReport) -> str:
    """The report a person reads (docs/troubleshooting.md explains one)."""
    lines = [f"# Hang report {report.time}", ""]
    if report.culprits:
        lines.append(f"**Stalled: rank(s) {', '.join(map(str, report.culprits))} on "
                     f"{', '.join(report.culprit_nodes())}**: {report.why}.")
    else:
        lines.append(f"**No rank is behind**: {report.why} (a collective that never completes: the network, a "
                     "device, or code that runs a collective on some ranks only).")
    lines += ["", f"No rank made progress for {report.idle_s:.0f} s (watchdog.stall_s = {report.stall_s}).", "",
              "## Ranks", ""]
    lines += [f"- {'**' if r['rank'] in report.culprits else ''}{rank_line(r)}"
              f"{'**' if r['rank'] in report.culprits else ''}" for r in report.ranks]
    for r in report.ranks:
        top = _frames(r, TOP_FRAMES if r["rank"] in report.culprits or not report.culprits else 3)
        lines += ["", f"## Rank {r['rank']}: main thread, innermost first", ""]
        if top:
            lines += ["```", *top, "```"]
        else:
            lines.append(r.get("no_stack") or "(no stack: the rank did not answer)")
        workers = r.get("children") or []
        if workers:
            lines.append("")
            lines.append("Child processes (data-loader workers): " + ", ".join(
                f"{c['name']} pid {c['pid']} {c['state']}" for c in workers))
    if report.nodes:
        lines += ["", "## Nodes", ""] + [f"- node {n['node_rank']} ({n['host']}): {n.get('note', 'answered')}"
                                         for n in report.nodes]
    lines += ["", "Every thread's stack and each rank's flight record: " + ", ".join(
        f"{k}: `{v}`" for k, v in sorted(report.files.items())), ""]
    return "\n".join(lines)


def console_summary(report: HangReport, md_path: Path) -> str:
    """The few lines the agent prints."""
    if report.culprits:
        head = (f"hpcgpu: hang: rank(s) {', '.join(map(str, report.culprits))} on {', '.join(report.culprit_nodes())} "
                f"made no progress for {report.idle_s:.0f} s ({report.why})")
    else:
        head = f"hpcgpu: hang: no rank made progress for {report.idle_s:.0f} s; {report.why}"
    out = [head]
    for r in report.ranks:
        if r["rank"] in report.culprits:
            top = _frames(r, 3)
            out += [f"hpcgpu:   {rank_line(r)}"] + [f"hpcgpu:     at {f}" for f in top]
    out.append(f"hpcgpu: hang report: {md_path}")
    return "\n".join(out)


# ---------------------------------------------------------------------------------- agent side


class Peers:
    """How the nodes of a run agree that the run hangs and pool their views. One node: itself."""

    def next_attempt(self) -> None:
        pass

    def publish_idle(self, idle: Optional[float]) -> None:
        self._idle = idle

    def all_idle(self, stall_s: float) -> Optional[float]:
        """The run's idle time when every node is idle for stall_s, else None (the head decides)."""
        idle = getattr(self, "_idle", None)
        return idle if idle is not None and idle >= stall_s else None

    def hang_declared(self) -> bool:
        return False

    def declare_hang(self) -> None:
        pass

    def gather(self, mine: dict) -> list[dict]:
        return [mine]

    def share_verdict(self, verdict: dict) -> None:
        pass

    def verdict(self) -> Optional[dict]:
        return None


class StorePeers(Peers):
    """Several nodes: the agents meet on the rendezvous store (hosted by node 0's agent). Each
    publishes how long its ranks have been idle at every poll; node 0 declares the hang when every
    node has been idle for stall_s, each node adds its ranks' view, node 0 writes the report and
    shares its verdict."""

    def __init__(self, store: Callable[[], Any], run_id: str, node_rank: int, nnodes: int):
        self._store, self.run_id, self.node_rank, self.nnodes = store, run_id, node_rank, nnodes
        self.attempt = 0

    def next_attempt(self) -> None:
        self.attempt += 1

    def _key(self, *parts: Any) -> str:
        return "/".join(["hpcgpu", self.run_id, "watchdog", str(self.attempt), *map(str, parts)])

    def publish_idle(self, idle: Optional[float]) -> None:
        self._store().set(self._key("idle", self.node_rank), "" if idle is None else f"{idle:.1f}")

    def all_idle(self, stall_s: float) -> Optional[float]:
        keys = [self._key("idle", n) for n in range(self.nnodes)]
        store = self._store()
        if not store.check(keys):
            return None
        values = [v.decode() for v in store.multi_get(keys)]
        if any(not v or float(v) < stall_s for v in values):
            return None
        return min(float(v) for v in values)

    def hang_declared(self) -> bool:
        return self._store().check([self._key("hang")])

    def declare_hang(self) -> None:
        self._store().set(self._key("hang"), "1")

    def gather(self, mine: dict) -> list[dict]:
        store = self._store()
        store.set(self._key("view", self.node_rank), json.dumps(mine))
        if self.node_rank != 0:
            return [mine]
        views, deadline = {}, time.monotonic() + REPORT_WAIT_S + 5
        while True:
            for n in range(self.nnodes):
                if n not in views and store.check([self._key("view", n)]):
                    views[n] = json.loads(store.get(self._key("view", n)))
            if len(views) == self.nnodes or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for n in range(self.nnodes):  # a node that never answered: its agent is stuck or gone
            views.setdefault(n, {"node_rank": n, "host": "?", "ranks": [],
                                 "extra": {"note": f"did not answer within {REPORT_WAIT_S + 5:.0f} s"}})
        return [views[n] for n in sorted(views)]

    def share_verdict(self, verdict: dict) -> None:
        self._store().set(self._key("verdict"), json.dumps(verdict))

    def verdict(self) -> Optional[dict]:
        deadline = time.monotonic() + 2 * REPORT_WAIT_S + 10
        store = self._store()
        while time.monotonic() < deadline:
            if store.check([self._key("verdict")]):
                return json.loads(store.get(self._key("verdict")))
            time.sleep(0.2)
        return None


def store_peers(node: Any) -> StorePeers:
    """The peers of a multi-node run, on the rendezvous store this agent joined."""
    from hpcgpu.agent.rendezvous import joined_store

    return StorePeers(joined_store, node.rdzv_id, node.node_rank, node.nnodes)


class Watchdog:
    """One node agent's watchdog over its ranks (one attempt at a time)."""

    def __init__(self, run_dir: Path, stall_s: int, nproc: int, node_rank: int, host: str,
                 peers: Optional[Peers] = None, is_head: bool = True,
                 clock: Callable[[], float] = time.monotonic):
        self.run_dir, self.stall_s, self.node_rank, self.host = Path(run_dir), stall_s, node_rank, host
        self.peers, self.is_head, self.clock = peers or Peers(), is_head, clock
        remove_stale(default_dir())
        self.file = HeartbeatFile(default_dir() / f"hpcgpu-{os.getpid()}-{time.time_ns()}.hb", nproc)
        self.watches: list[RankWatch] = []
        self.report: Optional[HangReport] = None
        self.md_path: Optional[Path] = None
        self._next_poll = 0.0

    @property
    def environment(self) -> dict[str, str]:
        from hpcgpu.contract.envnames import HEARTBEAT_FILE

        return {HEARTBEAT_FILE: str(self.file.path)}

    def close(self) -> None:
        self.file.close()

    def check(self, workers: list[tuple[int, int, int]]) -> Optional[list[int]]:
        """Called often by the agent's monitor with (local rank, global rank, pid) of the live
        ranks; polls every POLL_S; once the run is found hung, keeps the report (self.report) and
        returns the global ranks behind (empty: none is)."""
        now = self.clock()
        if now < self._next_poll:
            return None
        self._next_poll = now + POLL_S
        pids = [(local, rank, pid) for local, rank, pid in workers]
        if [w.pid for w in self.watches] != [pid for _, _, pid in pids]:  # a new attempt
            self.peers.next_attempt()
            self.watches = [RankWatch(rank, local, pid) for local, rank, pid in pids]
        slots = self.file.read()
        observe(self.watches, slots, [read_proc(w.pid) for w in self.watches], now)
        self.peers.publish_idle(idle_s(self.watches, now))
        if self.is_head:
            idle = self.peers.all_idle(self.stall_s)
            if idle is None:
                return None
            self.peers.declare_hang()
        elif not self.peers.hang_declared():
            return None
        self.report = self._collect(now)
        return self.report.culprits

    # -- the report -----------------------------------------------------------------------------
    def _collect(self, now: float) -> HangReport:
        mine = self._node_view(now)
        views = self.peers.gather(mine)
        if not self.is_head:
            verdict = self.peers.verdict() or {}
            return HangReport(**{k: verdict[k] for k in HangReport.__dataclass_fields__ if k in verdict}) \
                if verdict else self._report(views)
        report = self._report(views)
        self._write(report)
        self.peers.share_verdict(asdict(report))
        return report

    def _node_view(self, now: float) -> dict:
        request = self.file.request_report()
        deadline = time.monotonic() + REPORT_WAIT_S  # real seconds: the ranks' threads answer in them
        waiting = {w.local_rank for w in self.watches if w.state not in STOPPED_STATES and w.state}
        while waiting and time.monotonic() < deadline:
            answered = self.file.read()
            waiting = {lr for lr in waiting if answered[lr].answered != request and read_proc(
                self.watches[lr].pid)[0] not in ("", *STOPPED_STATES)}
            if waiting:
                time.sleep(0.1)
        ranks = []
        for w in self.watches:
            stacks_path, flight_path = dump_paths(self.run_dir / "logs" / "hang", w.rank, request)
            r: dict[str, Any] = {"rank": w.rank, "local_rank": w.local_rank, "node_rank": self.node_rank,
                                 "host": self.host, "pid": w.pid, "state": read_proc(w.pid)[0] or w.state,
                                 "beats": w.beats, "step": w.step, "phase": w.phase,
                                 "idle_s": round(now - w.last_progress, 1), "children": child_processes(w.pid)}
            r["stacks"] = _read_json(stacks_path)
            if r["stacks"] is None:
                r["no_stack"] = ("(no stack: the process is stopped and cannot answer)"
                                 if r["state"] in STOPPED_STATES else
                                 f"(no stack: the rank did not answer within {REPORT_WAIT_S:.0f} s)")
            flight = _read_text(flight_path)
            r["flight"] = summarize_flight(flight) if flight else None
            r["files"] = [str(p) for p in (stacks_path, flight_path) if p.exists()]
            ranks.append(r)
        return {"node_rank": self.node_rank, "host": self.host, "ranks": ranks}

    def _report(self, views: list[dict]) -> HangReport:
        ranks = sorted((r for v in views for r in v["ranks"]), key=lambda r: r["rank"])
        names, why = culprits(ranks)
        files = {f"rank{r['rank']}": ", ".join(Path(p).name for p in r["files"]) for r in ranks if r["files"]}
        return HangReport(time=time.strftime("%Y%m%d-%H%M%S"), stall_s=self.stall_s,
                          idle_s=min((r["idle_s"] for r in ranks), default=0.0), culprits=names, why=why,
                          ranks=ranks, nodes=[{k: v[k] for k in ("node_rank", "host")} | v.get("extra", {})
                                              for v in views] if len(views) > 1 else [],
                          files={"directory": str(self.run_dir / "logs" / "hang"), **files})

    def _write(self, report: HangReport) -> Path:
        from hpcgpu.contract.runfiles import write_private_text

        stem = self.run_dir / f"hang-{report.time}"
        write_private_text(stem.with_suffix(".json"), json.dumps(asdict(report), indent=1) + "\n")
        md = stem.with_suffix(".md")
        write_private_text(md, render_markdown(report))
        self.md_path = md
        return md


def _read_json(path: Path) -> Any:
    text = _read_text(path)
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _read_text(path: Path) -> Optional[str]:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


def say(report: HangReport, md_path: Optional[Path]) -> None:
    print(console_summary(report, md_path or Path("(written by node 0)")), file=sys.stderr, flush=True)
