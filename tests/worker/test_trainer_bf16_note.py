"""bf16 on CPU ranks in one process: the Trainer trains under CPU autocast and says once, at the
start, that bf16 autocast on CPUs is often slower than fp32 (docs: tests/worker/test_trainer_bf16_cpu.py
runs the same on two real ranks, slow). Other precisions get no such note."""

from __future__ import annotations

from tests.helpers.trainer_rig import const_task, context, fit, rig


def note_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("hpcgpu: note:")]


def test_bf16_on_a_cpu_trains_under_autocast_and_notes_it_may_be_slower(tmp_path, monkeypatch, capsys):
    rig(monkeypatch)
    t = fit(context(tmp_path, "bf16", train={"batch_size": 4, "precision": "bf16"}), const_task(samples=8))
    assert (t.outcome.status, t.outcome.step, t.outcome.final_loss) == ("done", 2, 0.25)  # 0.5**2, exact in bf16
    out = capsys.readouterr().out
    assert "ddp on 1 rank(s) x cpu, bf16" in out
    (note,) = note_lines(out)
    assert "bf16 autocast on CPUs saves memory but is often slower than fp32" in note
    # the hint: when it is not slower
    assert note.endswith("unless the CPU computes bf16 natively (AMX, AVX512-BF16)")


def test_fp32_on_a_cpu_gets_no_note(tmp_path, monkeypatch, capsys):
    rig(monkeypatch)  # (fp16 is refused on CPUs: tests/worker/test_worker_strategy.py)
    fit(context(tmp_path, "fp32", train={"batch_size": 4, "precision": "fp32"}), const_task(samples=8))
    out = capsys.readouterr().out
    assert "x cpu, fp32" in out
    assert note_lines(out) == [] and "bf16 autocast" not in out
