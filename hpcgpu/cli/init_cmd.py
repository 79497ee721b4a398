"""`hpcgpu init`: write a starter hpcgpu.yaml after a few questions."""

from __future__ import annotations

import os
import re
from pathlib import Path

import click

from hpcgpu.contract.errors import UserError


def starter_spec(name: str, gpus: int, strategy: str, precision: str, task: str) -> str:
    """The text of a starter spec: the answers, with comments pointing at what to change next."""
    gpus_line = f"gpus_per_node: {gpus}" if gpus else "gpus_per_node: 0      # CPU ranks (gloo)\n  procs_per_node: 2"
    return f"""# hpcgpu job spec: `hpcgpu spec show` prints it with every default; docs/spec.md explains each key.
name: {name}
entry:
  task: {task}     # or script: train.py (with args: [...]), or module: mypkg.train
resources:
  nodes: 1
  {gpus_line}
train:
  strategy: {strategy}
  precision: {precision}
  batch_size: 32          # per device
  grad_accum: 1
  lr: 0.001               # scaled by world size x grad_accum (lr_scaling: linear)
  epochs: 1
checkpoint:
  every_steps: 100
  keep_last: 3
  resume: auto
"""


def proposed_precision(gpus: int, strategy: str) -> str:
    """bf16 on GPUs (fp32's range, no gradient scaler, tensor-core speed); fp16 for dp, whose
    replica threads cannot run bf16; fp32 on CPUs, the only precision they run."""
    if not gpus:
        return "fp32"
    return "fp16" if strategy == "dp" else "bf16"


def answer_checker(field: str, answers: dict):
    """A prompt's value_proc: the answer is checked as part of a whole starter spec (the spec's own
    rules, e.g. the name's characters) when it is given, not after every question."""
    from hpcgpu.host.spec import parse_spec

    def check(value: str) -> str:
        text = starter_spec(**{**answers, field: value})
        try:
            parse_spec(text, f"the {field} you gave")
        except UserError as e:
            raise click.BadParameter(e.message.splitlines()[-1].strip()) from None
        return value

    return check


@click.command()
@click.option("-o", "--output", default="hpcgpu.yaml", show_default=True, help="Where to write the spec (folders are created).")
@click.option("--yes", "-y", is_flag=True, help="Take the defaults without asking.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(output, yes, force) -> int:
    """Write a starter spec: detects GPUs, asks for the strategy and precision."""
    from hpcgpu.host.gpus import count_visible_gpus

    path = Path(output)
    if path.exists() and not force:
        raise UserError(f"{output} already exists", hint="pass --force to overwrite, or -o OTHER.yaml")
    detected = count_visible_gpus(os.environ)
    click.echo(f"GPUs detected: {detected}" + ("" if detected else " (the job will run CPU ranks with gloo)"))
    ask = (lambda text, default, **kw: default) if yes else (lambda text, default, **kw: click.prompt(text, default=default, **kw))
    answers = {"name": "job", "gpus": detected, "strategy": "ddp", "precision": "fp32",
               "task": "hpcgpu.examples.mlp:make_task"}
    answers["name"] = ask("Job name", re.sub(r"[^A-Za-z0-9._-]", "-", Path.cwd().name).strip("-._")[:40] or "job",
                          value_proc=answer_checker("name", answers))
    answers["gpus"] = ask("GPUs per node", detected, type=click.IntRange(min=0))
    if answers["gpus"] > detected:
        click.echo(f"note: this machine has {detected} GPU(s): the spec is for GPU nodes elsewhere "
                   "(hpcgpu submit slurm); `run local` here refuses it")
    answers["strategy"] = ask("Strategy", "ddp", type=click.Choice(["ddp", "fsdp", "dp"]))
    offered = ["fp32", "bf16", "fp16"] if answers["gpus"] else ["fp32", "bf16"]  # no fp16 on CPU ranks
    answers["precision"] = ask("Precision", proposed_precision(answers["gpus"], answers["strategy"]),
                               type=click.Choice(offered))
    answers["task"] = ask("Task (module:function)", answers["task"], value_proc=answer_checker("task", answers))
    text = starter_spec(**answers)
    from hpcgpu.host.spec import parse_spec

    parse_spec(text, f"{output} (not written)")  # never write a spec that would not load
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    click.echo(f"wrote {output}; next: hpcgpu run local --dry-run" + (f" -f {output}" if output != "hpcgpu.yaml" else ""))
    return 0
