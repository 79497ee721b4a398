#!/usr/bin/env bash
# The GPU check: hpcgpu's GPU paths end to end on ONE NVIDIA GPU, in about 8 minutes.
#   make gpu-check-prepare            (here, with a package index: builds build/wheelhouse)
#   make gpu-check OUT=DIR            (on the GPU machine: installs from the wheelhouse, --no-index)
# Runs from the repository root. The Python is $GPU_PYTHON, else /opt/torch/.venv/bin/python3 where it
# exists, else .venv/bin/python; it must already have a CUDA torch. Writes DIR/summary.txt (one
# PASS/FAIL/NOTE line per step), DIR/doctor.json, DIR/bench/ (tier 9) and DIR/logs/; exit 1 on a FAIL.
# NCCL refuses two ranks on one GPU, so GPU runs are 1-rank NCCL jobs; multi-rank logic runs as 2
# gloo CPU ranks (--nproc 2).
set -uo pipefail
ROOT=$(pwd)
OUT=$(mkdir -p "${1:-build/gpucheck}" && cd "${1:-build/gpucheck}" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hpcgpu-gpucheck.XXXXXX")
mkdir -p "$OUT/logs"
export HPCGPU_HOME="$WORK/home" OMP_NUM_THREADS=4
PY=${GPU_PYTHON:-}
[ -z "$PY" ] && [ -x /opt/torch/.venv/bin/python3 ] && PY=/opt/torch/.venv/bin/python3
[ -z "$PY" ] && PY=$ROOT/.venv/bin/python
BAD=0
: >"$OUT/summary.txt"
say() { echo "$1: $2" | tee -a "$OUT/summary.txt"; [ "$1" = FAIL ] && BAD=1; return 0; }
step() { echo; echo "== $*"; }
# run local in $WORK with a 5-minute cap; its output goes to $OUT/logs/<name>.log
hp() { local name=$1; shift; (cd "$WORK" && timeout 300 "$PY" -m hpcgpu run local "$@") >"$OUT/logs/$name.log" 2>&1; }
newest_run() { ls -td "$WORK"/runs/"$1"-* 2>/dev/null | head -1; }
started=$(date +%s)

step "0. driver, Python, torch"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/logs/nvidia-smi.txt" \
  || { say FAIL "nvidia-smi: no NVIDIA driver here"; exit 1; }
"$PY" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "CUDA", torch.version.cuda); assert torch.cuda.is_available()' \
  | tee "$OUT/logs/torch.txt" || { say FAIL "$PY: torch cannot use the GPU (see docs/install.md)"; exit 1; }

step "1. install hpcgpu and what this Python lacks, from the wheelhouse only"
if [ -d build/wheelhouse ]; then
  "$PY" -m pip install --quiet --no-index --find-links build/wheelhouse --force-reinstall --no-deps build/wheelhouse/hpcgpu-*.whl \
    && "$PY" -m pip install --quiet --no-index --find-links build/wheelhouse "pydantic>=2.5" "submitit>=1.5" "pytest>=7" \
    && say PASS "installed from build/wheelhouse" || { say FAIL "install from build/wheelhouse"; exit 1; }
else
  "$PY" -c 'import hpcgpu, pydantic, submitit, pytest' 2>/dev/null && say NOTE "no build/wheelhouse: using what $PY has" \
    || { say FAIL "no build/wheelhouse (run make gpu-check-prepare first, and carry build/wheelhouse)"; exit 1; }
fi

step "2. the GPU test tier; a skip here is a failure (HPCGPU_REQUIRE_GPU=1)"
HPCGPU_REQUIRE_GPU=1 timeout 420 "$PY" -m pytest -q -rs -p no:cacheprovider -m gpu tests/system/test_gpu.py \
  >"$OUT/logs/pytest-gpu.txt" 2>&1
rc=$?; tail -3 "$OUT/logs/pytest-gpu.txt"
if [ $rc = 0 ] && ! grep -q skipped "$OUT/logs/pytest-gpu.txt"; then say PASS "GPU test tier"; else say FAIL "GPU test tier (logs/pytest-gpu.txt)"; fi

step "3. doctor: NVML, CUDA, NCCL, a 1-rank NCCL all-reduce"
(cd "$WORK" && timeout 300 "$PY" -m hpcgpu doctor --json) >"$OUT/doctor.json" 2>"$OUT/logs/doctor.err"
"$PY" - "$OUT/doctor.json" <<'PYEOF' && say PASS "doctor" || say FAIL "doctor (doctor.json)"
import json, sys
checks = {c["name"]: c for c in json.load(open(sys.argv[1]))["checks"]}
for name, c in checks.items():
    print(f"  {name:16} {c['status']:5} {str(c.get('detail', ''))[:140]}")
sys.exit(any(c["status"] == "fail" for c in checks.values()))
PYEOF

step "4. the demo on one GPU (fp32 with TF32) and on 2 CPU ranks, as planned"
printf 'name: mlp\ntrain: {max_steps: 40, epochs: 100, log_every: 10}\ncheckpoint: {every_steps: 20}\n' >"$WORK/mlp.yaml"
hp mlp-gpu --gpus 1 -f mlp.yaml && grep -q "x cuda" "$(newest_run mlp)/logs/rank0.log" \
  && say PASS "--gpus 1 trains on cuda" || say FAIL "--gpus 1 (logs/mlp-gpu.log)"
hp mlp-cpu --nproc 2 -f mlp.yaml && grep -q "2 rank(s) x cpu" "$(newest_run mlp)/logs/rank0.log" \
  && say PASS "--nproc 2 stays on the CPU (gloo)" || say FAIL "--nproc 2 (logs/mlp-cpu.log)"

step "5. the bundled GPT: bf16 DDP, then FSDP + fp16 with a save at 10 and 20 and a resume to 30"
G='entry: {task: "hpcgpu.examples.gpt:make_task", task_args: {n_layer: 4, n_embd: 256, block_size: 256}}'
printf 'name: gptbf16\n%s\ntrain: {precision: bf16, batch_size: 16, epochs: 100, log_every: 10, max_steps: 40}\n' "$G" >"$WORK/gptbf16.yaml"
hp gpt-bf16 --gpus 1 -f gptbf16.yaml && grep -q '"final_loss"' "$(newest_run gptbf16)/summary.json" \
  && say PASS "GPT bf16: $(grep -o 'MFU [0-9.]*%\|[0-9.,]* TFLOP/s' "$(newest_run gptbf16)/logs/rank0.log" | tail -1)" \
  || say FAIL "GPT bf16 (logs/gpt-bf16.log)"
T='train: {strategy: fsdp, precision: fp16, batch_size: 16, epochs: 100, log_every: 5, max_steps:'
printf 'name: gptfsdp\n%s\n%s 20}\ncheckpoint: {every_steps: 10, dir: %s/fsdp-ckpt}\n' "$G" "$T" "$WORK" >"$WORK/fsdp20.yaml"
printf 'name: gptfsdp\n%s\n%s 30}\ncheckpoint: {every_steps: 10, dir: %s/fsdp-ckpt}\n' "$G" "$T" "$WORK" >"$WORK/fsdp30.yaml"
hp fsdp-20 --gpus 1 -f fsdp20.yaml && hp fsdp-30 --gpus 1 -f fsdp30.yaml \
  && grep -q "resuming from .*step_00000020" "$(newest_run gptfsdp)/logs/rank0.log" \
  && grep -q '"steps": 30' "$(newest_run gptfsdp)/summary.json" \
  && say PASS "FSDP fp16: saved at 20, resumed to 30" || say FAIL "FSDP fp16 save/resume (logs/fsdp-*.log)"

step "6. TensorBoard GPU scalars on rank 0"
"$PY" - "$(newest_run gptbf16)/tb" <<'PYEOF' && say PASS "gpu/* scalars in TensorBoard" || say FAIL "no gpu/* scalars in TensorBoard"
import sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1]); acc.Reload(); tags = set(acc.Tags()["scalars"])
print("  ", sorted(tags))
sys.exit(not {"gpu/util_pct", "gpu/mem_used_gb"} <= tags)
PYEOF

step "7. benchmark tier 9 once: Trainer vs hand loop, GPT MFU, async checkpoint stall"
timeout 360 "$PY" -m benchmarks --tiers 9 --reps 1 --out "$OUT/bench" >"$OUT/logs/bench.log" 2>&1 \
  && say PASS "tier 9 (bench/)" || say FAIL "tier 9 (logs/bench.log)"
tail -15 "$OUT/logs/bench.log"

echo
say NOTE "took $(( $(date +%s) - started )) s"
rm -rf "$WORK"
[ "$BAD" = 0 ] && echo "GPU CHECK PASSED" || echo "GPU CHECK FAILED"
exit "$BAD"
