"""The built-in Trainer for `task` entries: DDP/FSDP/DP, AMP, accumulation, exact resume."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as tdist

from hpcgpu.contract.errors import UserError
from hpcgpu.contract.runfiles import write_json_atomic
from hpcgpu.worker import checkpoint as ckpt
from hpcgpu.worker import heartbeat, stop
from hpcgpu.worker.context import WorkerContext, agree_resume, run_id
from hpcgpu.worker.data import ResumableSampler, batches_per_epoch, make_loader
from hpcgpu.worker.dist import barrier, is_distributed
from hpcgpu.worker.evaluation import BEST_FILE, SAMPLES, evaluate, improves, keep_best_rule, loss_per_sample
from hpcgpu.worker.metrics import Metrics
from hpcgpu.worker.perf import peak_flops, throughput_scalars, use_tf32
from hpcgpu.worker.progress import Progress, choose_mode
from hpcgpu.worker.report import eval_line, print_summary, resume_changes, write_summary
from hpcgpu.worker.saver import Checkpointer
from hpcgpu.worker.state import rng_state, seed_everything, set_rng_state, spec_fingerprint
from hpcgpu.worker.strategy import (autocast, check_setup, data_replicas, dp_device_ids, grad_scaler, grad_sync,
                                    scaled_lr, unwrap, wrap)
from hpcgpu.worker.task import Task
from hpcgpu.worker.tracking import TrackerSetup, setup_from_spec

STATE_FORMAT = 1


@dataclass
class Outcome:
    """How a training attempt ended."""

    status: str  # "done" or "stopped"
    step: int
    checkpoint: Optional[str]
    final_loss: Optional[float]


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    return batch


def _deterministic() -> None:
    """Same seed, same bits: deterministic kernels (free on CPU)."""
    # torch.use_deterministic_algorithms also imports torch._inductor (1-2 s) just to set a
    # torch.compile flag; eager training needs only the switch below.
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is not None:
        setter(True, warn_only=True)
    else:
        torch.use_deterministic_algorithms(True, warn_only=True)


def _constant(step: int) -> float:
    return 1.0


class Trainer:
    """Runs a Task under the spec's train section on this rank."""

    def __init__(self, ctx: WorkerContext, task: Task):
        self.ctx, self.task, self.cfg, self.info = ctx, task, ctx.spec.train, ctx.info
        self.device: torch.device = ctx.device or torch.device("cpu")
        self.step = self.epoch = self.batch_in_epoch = 0
        self.start_step = 0
        self.spec_hash, self.spec_json = spec_fingerprint(ctx.spec.model_dump(mode="json"))
        # a plan written before these keys existed (a resumed older run) has none: the defaults
        self.eval_every = getattr(self.cfg, "eval_every_steps", 0) if task.eval_dataset is not None else None
        self.last_eval: Optional[dict] = None
        self.eval_s = 0.0  # time spent evaluating: not training time (throughput, train_s)
        self.keep_best = keep_best_rule(getattr(ctx.spec.checkpoint, "keep_best", None))
        self.best: Optional[dict] = None  # {"metric", "value", "step"} of the checkpoint keep_best keeps

    # ------------------------------------------------------------------ setup

    def _build(self) -> None:
        cfg, info = self.cfg, self.info
        check_setup(cfg.strategy, cfg.precision, self.device, info)
        if self.device.type == "cpu":
            _deterministic()
        use_tf32(cfg.tf32, self.device)
        seed_everything(cfg.seed)
        model = self.task.model()  # same seed on every rank: identical initial weights
        seed_everything(cfg.seed + info.rank)  # then per-rank streams, so dropout differs across ranks
        dp_ids = self._dp_device_ids() if cfg.strategy == "dp" else []
        self.model = wrap(model, cfg.strategy, self.device, self.task.shard_units, cfg.precision, dp_ids)
        self.replicas = data_replicas(cfg.strategy, dp_ids)
        self.devices = info.world_size * self.replicas
        self.peak = (peak_flops(torch.cuda.get_device_name(self.device), cfg.precision, cfg.tf32)
                     if self.device.type == "cuda" else None)
        self.lr = scaled_lr(cfg.lr, cfg.lr_scaling, info.world_size * self.replicas, cfg.grad_accum)
        make_optimizer = self.task.optimizer or (lambda params, lr: torch.optim.AdamW(params, lr=lr))
        self.optimizer = make_optimizer(self.model.parameters(), self.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.task.lr_schedule or _constant)
        self.scaler = grad_scaler(cfg.precision, self.device)
        self._build_data()
        mode = choose_mode(self.ctx.spec.logging.progress, self.ctx.console_tty) if info.is_main else "off"
        self.progress = Progress(mode, self.total_steps, cfg.log_every)
        self.saver = Checkpointer(self.ctx.ckpt_dir, self.ctx.spec.checkpoint.keep_last,
                                  self.ctx.spec.checkpoint.async_save, info.is_main, self.progress.message)
        # An async FSDP save runs collectives in a background thread: on a gloo group of its own
        # (DCP stages through CPU), never on the group the training loop's collectives use.
        async_fsdp = cfg.strategy == "fsdp" and self.ctx.spec.checkpoint.async_save and is_distributed()
        self.ckpt_group = tdist.new_group(backend="gloo") if async_fsdp else None

    def _dp_device_ids(self) -> list[int]:
        """The GPUs dp drives: as many as the plan gives the node (--gpus N), not all visible ones."""
        plan = self.ctx.plan
        visible = torch.cuda.device_count() if self.device.type == "cuda" else 0
        return dp_device_ids(self.device, plan.gpus_per_node if plan is not None else None, visible)

    def _build_data(self) -> None:
        cfg = self.cfg
        self.loader_batch = cfg.batch_size * self.replicas
        self.sampler = ResumableSampler(self.task.dataset, self.info.world_size, self.info.rank, cfg.seed)
        self.steps_per_epoch = batches_per_epoch(self.sampler, self.loader_batch) // cfg.grad_accum
        if self.steps_per_epoch == 0:
            raise UserError(
                f"the dataset has {len(self.task.dataset)} samples: fewer than one optimizer step needs "
                f"({self.info.world_size} ranks x train.batch_size {cfg.batch_size} "
                f"x train.grad_accum {cfg.grad_accum})")
        self.total_steps = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.global_batch = self.loader_batch * self.info.world_size * cfg.grad_accum

    def _resume(self) -> None:
        path = agree_resume(self.ctx)
        if path is None:
            if not self.ctx.lost_all:  # else agree_resume has just warned that all progress is lost
                self.ctx.print0("hpcgpu: no checkpoint to resume from: starting at step 0")
            return
        state = ckpt.load_state(path)
        if (self.cfg.strategy == "fsdp") != ckpt.is_sharded(path):
            raise ckpt.CheckpointError(f"{path} was saved with another strategy than train.strategy "
                                       f"{self.cfg.strategy}")
        if ckpt.is_sharded(path):
            from hpcgpu.worker.checkpoint_dcp import load_sharded  # torch.distributed.checkpoint: 1 s to import

            load_sharded(path, self.model, self.optimizer)
        else:
            unwrap(self.model).load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self._restore_position(state["progress"])
        self.saver.last, self.saver.last_step = path, self.step
        self.best = state.get("best")
        if self.best is not None:
            self.saver.best = self.ctx.ckpt_dir / ckpt.step_dir_name(self.best["step"])
        rngs = state["rng"]
        set_rng_state(rngs[self.info.rank] if len(rngs) == self.info.world_size else rngs[0])
        for line in resume_changes(state, self.spec_json, self.info.world_size):
            self.ctx.print0(line)
        self.ctx.print0(f"hpcgpu: resuming from {path}: step {self.step}, epoch {self.epoch}, "
                        f"batch {self.batch_in_epoch} of {self.steps_per_epoch * self.cfg.grad_accum} in the epoch")

    def _restore_position(self, p: dict) -> None:
        self.step, self.epoch, batches = p["step"], p["epoch"], p["batch_in_epoch"]
        if p["world_size"] != self.info.world_size:  # keep the position in samples, not in batches
            batches = batches * p["world_size"] // self.info.world_size // self.cfg.grad_accum * self.cfg.grad_accum
            if batches >= self.steps_per_epoch * self.cfg.grad_accum:  # more ranks, shorter epochs: this one is done
                self.epoch, batches = self.epoch + 1, 0
        self.batch_in_epoch = batches
        self.start_step = self.step
        # train.epochs ends the run where the epochs end, whatever the world size now: steps left
        # = the rest of this epoch and the whole later ones, in this world size's steps
        left = (self.cfg.epochs - self.epoch) * self.steps_per_epoch - self.batch_in_epoch // self.cfg.grad_accum
        self.total_steps = self.step + max(left, 0)
        if self.cfg.max_steps:
            self.total_steps = min(self.total_steps, self.cfg.max_steps)

    # ------------------------------------------------------------------ loop

    def fit(self) -> Outcome:
        """Train until the last step or an agreed stop; checkpoint; return how it ended."""
        t0 = time.perf_counter()
        self._build()
        self._resume()
        # a resume on another world size recounts the steps (_restore_position): the bar counts to that
        self.progress.start_step, self.progress.total = self.start_step, self.total_steps
        setup = setup_from_spec(self.ctx.spec.model_dump(mode="json"), run_id(self.ctx), self.ctx.run_dir,
                                self.info.world_size)
        self.metrics = Metrics(self.ctx.run_dir, self.info.is_main and bool(setup.names), self.device,
                               self.start_step, setup=setup)
        self._announce()
        t_loop = time.perf_counter()
        try:
            try:
                status = self._loop()
            finally:
                self.progress.close()
            return self._finish(status, setup, t0, t_loop)
        except BaseException:
            self.metrics.close("failed")  # flushed, and the tracked run marked failed (a no-op once closed)
            raise

    def _finish(self, status: str, setup: TrackerSetup, t0: float, t_loop: float) -> Outcome:
        """After the loop: the checkpoint durable everywhere, the final numbers, trackers closed, the summary."""
        heartbeat.beat("checkpoint", self.step)
        self.saver.wait()
        heartbeat.beat("collective")
        barrier(self.device)  # nobody exits (and gets the others killed) before the checkpoint is durable
        final = self._mean_over_ranks(self._last_loss) if self.step > self.start_step else None
        stats = {"status": status, "final_loss": final, "steps": self.step, "epoch": self.epoch,
                 "epochs": self.epoch + self.batch_in_epoch / (self.steps_per_epoch * self.cfg.grad_accum),
                 "wall_s": time.perf_counter() - t0, "train_s": time.perf_counter() - t_loop - self.eval_s,
                 "samples": (self.step - self.start_step) * self.global_batch,
                 "checkpoint": str(self.saver.last) if self.saver.last else None, "eval": self.last_eval}
        if status == "done":
            finals = {"final_loss": final, **{f"eval/{k}": v for k, v in (self.last_eval or {}).items()
                                              if k not in (SAMPLES, "step")}}
            self.metrics.finish(setup.params, finals, self.step)
        self.metrics.close(status)
        if self.info.is_main:
            print_summary(stats, self.ctx.ckpt_dir, self.task.flops_per_sample,
                          self.peak * self.devices if self.peak else None)
            write_summary(self.ctx.run_dir, stats, self.info.world_size)
        return Outcome(status, self.step, stats["checkpoint"], final)

    def _loop(self) -> str:
        it = None
        self._loss_sum, self._loss_n, self._t_log, self._step_log = 0.0, 0, time.perf_counter(), self.step
        while self.step < self.total_steps:
            if it is None:
                self.sampler.start_at(self.epoch, self.batch_in_epoch * self.loader_batch)
                it = iter(make_loader(self.task.dataset, self.sampler, self.loader_batch, self.cfg.num_workers,
                                      self.cfg.seed, pin_memory=self.device.type == "cuda"))
            self._last_loss = self._train_step(it)
            self.step += 1
            epoch_of_step = self.epoch  # the last step of an epoch is shown in it, not in the next
            self.batch_in_epoch += self.cfg.grad_accum
            if self.batch_in_epoch >= self.steps_per_epoch * self.cfg.grad_accum:
                self.epoch, self.batch_in_epoch, it = self.epoch + 1, 0, None
            self._log_step(epoch_of_step)
            if self._eval_due():
                self._evaluate()
            due = self.step % self.ctx.spec.checkpoint.every_steps == 0 or self.step == self.total_steps
            if due and self.saver.last_step != self.step:  # keep_best may have saved this step already
                self._save()
            # agreeing costs an all-reduce and a host sync: do it every stop_check_every steps, not every step
            check = self.step % self.ctx.spec.distributed.stop_check_every == 0
            if check and self.step < self.total_steps:
                heartbeat.beat("collective", self.step)
            if self.step < self.total_steps and check and stop.should_stop(self._collective_device()):
                if self.saver.last_step != self.step:
                    self._save()
                return "stopped"
        return "done"

    def _train_step(self, it) -> torch.Tensor:
        self.model.train()
        accum, total = self.cfg.grad_accum, torch.zeros((), device=self.device)
        step = self.step + 1  # the hang watchdog's view: which phase of which step this rank is in
        for micro in range(accum):
            heartbeat.beat("data", step)
            inputs, target = _to(next(it), self.device)
            with grad_sync(self.model, self.cfg.strategy, micro == accum - 1):
                heartbeat.beat("forward")
                with autocast(self.cfg.precision, self.device):
                    loss = self.task.loss(self.model(inputs), target) / accum
                heartbeat.beat("backward")
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            total += loss.detach().float()
        heartbeat.beat("optimizer")
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return total

    def _log_step(self, epoch: int) -> None:
        self._loss_sum = self._loss_sum + self._last_loss
        self._loss_n += 1
        if self.step % self.cfg.log_every and self.step != self.total_steps:
            self.progress.update(self.step, epoch)
            return
        loss = self._mean_over_ranks(self._loss_sum) / self._loss_n
        now = time.perf_counter()
        rate = (self.step - self._step_log) * self.global_batch / max(now - self._t_log, 1e-9)
        lr = self.scheduler.get_last_lr()[0]
        self.progress.update(self.step, epoch, loss, lr, rate)
        self.metrics.log(self.step, {"train/loss": loss, "train/lr": lr, "train/samples_per_s": rate,
                                     **throughput_scalars(rate, self.task.flops_per_sample, self.peak, self.devices)})
        self._loss_sum, self._loss_n, self._t_log, self._step_log = 0.0, 0, now, self.step

    # ------------------------------------------------------------------ evaluation

    def _eval_due(self) -> bool:
        if self.eval_every is None:
            return False
        return self.step == self.total_steps or (self.eval_every > 0 and self.step % self.eval_every == 0)

    def _evaluate(self) -> None:
        """Evaluate on every rank (a collective), log `eval/<metric>` on rank 0, keep it for the summary."""
        heartbeat.beat("eval", self.step)
        t0 = time.perf_counter()
        strategy = self.cfg.strategy
        # DDP's wrapper would sync buffers in forward; its module computes the same without collectives.
        # An FSDP forward all-gathers parameters: every rank must make as many (pad_forwards).
        model = unwrap(self.model) if strategy == "ddp" else self.model
        batch = (getattr(self.cfg, "eval_batch_size", None) or self.cfg.batch_size) * self.replicas
        results = evaluate(model, self.task.eval_dataset, self.task.eval_metrics or loss_per_sample(self.task.loss),
                           batch, self.info.world_size, self.info.rank, self.device, self._collective_device(),
                           _to, lambda: autocast(self.cfg.precision, self.device), pad_forwards=strategy == "fsdp",
                           beat=lambda: heartbeat.beat("eval", self.step))
        self.last_eval = {**results, "step": self.step}
        spent = time.perf_counter() - t0
        self.eval_s += spent
        self._t_log += spent  # the next progress line's samples/s counts training time only
        self.metrics.log(self.step, {f"eval/{k}": v for k, v in results.items() if k != SAMPLES})
        if self.info.is_main:
            self.progress.message(f"hpcgpu: {eval_line(self.last_eval)}")
        if self.keep_best is not None:
            self._keep_if_best(results)

    def _keep_if_best(self, results: dict) -> None:
        """checkpoint.keep_best: checkpoint a step whose evaluation improves the metric, and keep it.
        Every rank decides alike (the results are reduced over ranks), and saving is collective."""
        metric, direction = self.keep_best
        if metric not in results:
            raise UserError(f"checkpoint.keep_best names the metric {metric!r}, but the evaluation reports "
                            f"{', '.join(sorted(k for k in results if k != SAMPLES))}")
        if not improves(results[metric], self.best["value"] if self.best else None, direction):
            return
        self.best = {"metric": metric, "value": results[metric], "step": self.step}
        path = self.ctx.ckpt_dir / ckpt.step_dir_name(self.step)
        self.saver.best = path  # before the save, whose pruning may now drop the previous best
        if self.saver.last_step != self.step:
            self._save()  # after self.best is set: the checkpoint records itself as the best
        if self.info.is_main:
            write_json_atomic(self.ctx.ckpt_dir / BEST_FILE, {**self.best, "path": str(path)})  # 0600, like the checkpoints
            self.progress.message(f"hpcgpu: best {metric} so far ({results[metric]:.4f}): keeping {path.name}")

    def _mean_over_ranks(self, value: torch.Tensor) -> float:
        heartbeat.beat("collective", self.step)
        t = value.detach().float().clone().to(self._collective_device())
        if is_distributed():
            tdist.all_reduce(t)
            t /= self.info.world_size
        return t.item()

    def _collective_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    # ------------------------------------------------------------------ saving

    def _save(self) -> None:
        heartbeat.beat("checkpoint", self.step)
        state = self._state()
        meta = {"epoch": self.epoch, "world_size": self.info.world_size, "strategy": self.cfg.strategy,
                "spec_hash": self.spec_hash}
        if self.cfg.strategy == "fsdp":
            from hpcgpu.worker.checkpoint_dcp import save_sharded

            save_sharded(self.saver, self.step, self.model, self.optimizer, state, meta, self.ckpt_group)
        else:
            self.saver.save(self.step, state, meta)

    def _state(self) -> dict:
        """Everything an exact resume needs; the RNG states of all ranks are gathered to rank 0."""
        rngs = [rng_state()]
        if is_distributed():
            gathered = [None] * self.info.world_size if self.info.is_main else None
            tdist.gather_object(rngs[0], gathered, dst=0)
            rngs = gathered or []
        sharded = self.cfg.strategy == "fsdp"
        return {
            "format": STATE_FORMAT,
            "model": None if sharded else unwrap(self.model).state_dict(),
            "optimizer": None if sharded else self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "progress": {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                         "world_size": self.info.world_size, "batch_size": self.cfg.batch_size,
                         "grad_accum": self.cfg.grad_accum},
            "sampler": {"seed": self.cfg.seed, "epoch": self.epoch, "skip": self.batch_in_epoch * self.loader_batch},
            "rng": rngs,
            "best": self.best,
            "spec": {"hash": self.spec_hash, "train": self.cfg.model_dump(mode="json"), "json": self.spec_json},
        }

    def _announce(self) -> None:
        cfg, n = self.cfg, self.info.world_size
        self.ctx.print0(
            f"hpcgpu: {cfg.strategy} on {n} rank(s) x {self.device.type}, {cfg.precision}; effective batch "
            f"{self.loader_batch} x {n} rank(s) x {cfg.grad_accum} accum = {self.global_batch} samples/step; "
            f"lr {cfg.lr:g} -> {self.lr:g} ({cfg.lr_scaling} scaling); {self.total_steps} steps "
            f"({self.steps_per_epoch} per epoch)")
        if cfg.precision == "bf16" and self.device.type == "cpu":
            self.ctx.print0("hpcgpu: note: bf16 autocast on CPUs saves memory but is often slower than fp32, "
                            "unless the CPU computes bf16 natively (AMX, AVX512-BF16)")


def run_task(ctx: WorkerContext) -> Outcome:
    """Load the spec's task and train it."""
    from hpcgpu.worker.task import load_task

    task = load_task(ctx.spec.entry.task, ctx.spec.entry.task_args)
    return Trainer(ctx, task).fit()
