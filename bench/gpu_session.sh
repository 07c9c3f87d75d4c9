#!/usr/bin/env bash
# The one prepared GPU session for the pre-training benchmarks (bench/NOTES.md, "Pre-training step"): every GPU
# measurement of bench/pretrain_step.py and bench/pipeline.py, in priority order, inside a time budget.
#
#   bash bench/gpu_session.sh            # on the GPU machine: JSON lines in $OUT/*.jsonl (default OUT=runs/bench)
#   DRY=1 bash bench/gpu_session.sh      # any machine: the same phases at tiny sizes (compile off unless DRY_COMPILE=1)
#   bash bench/gpu_session.sh prepare    # on a machine with a package index: soundfile + cffi + pycparser wheels
#                                        # for the GPU image's Python 3.12 into .whl/ (carry it: run(carry=[".whl"]))
#
# Nothing is installed from the network. The GPU image has torch but not this package (PYTHONPATH=$PWD) and no
# soundfile: without .whl/ the end-to-end (DataLoader over WAV files) measurements are skipped, and say so.
# BUDGET (seconds, default 470) bounds the whole session: a phase starts only if its estimate fits in what is left,
# and is cut off (timeout) when the budget runs out; every configuration's line is written as soon as it is measured.
# Outputs: $OUT/env.json, $OUT/pretrain_step.jsonl, $OUT/pipeline.jsonl, $OUT/session.jsonl (phases), $OUT/session.log.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}

if [ "${1:-}" = "prepare" ]; then
  mkdir -p .whl && exec "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl soundfile==0.14.0 cffi pycparser
fi

OUT=${OUT:-runs/bench}
BUDGET=${BUDGET:-470}
DRY=${DRY:-0}
mkdir -p "$OUT"
rm -f "$OUT"/pretrain_step.jsonl "$OUT"/pipeline.jsonl "$OUT"/session.jsonl "$OUT"/session.log  # this session's only
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
START=$(date +%s)
LOG=$OUT/session.log

left() { echo $((BUDGET - ($(date +%s) - START))); }

# phase NAME ESTIMATE_S CAP_S COMMAND...: run COMMAND if ESTIMATE_S fits in the budget left; cut it off after
# CAP_S seconds or when the budget runs out, whichever comes first.
phase() {
  local name=$1 est=$2 cap=$3 t0 rc
  shift 3
  if [ "$(left)" -lt "$est" ]; then
    echo "{\"phase\": \"$name\", \"status\": \"skipped\", \"why\": \"estimate ${est}s > $(left)s left\"}" >> "$OUT/session.jsonl"
    return
  fi
  t0=$(date +%s)
  echo "== $name ($(left)s left): $*" | tee -a "$LOG"
  timeout --kill-after=10 "$(( $(left) < cap ? $(left) : cap ))" "$@" 2>> "$LOG"
  rc=$?
  echo "{\"phase\": \"$name\", \"rc\": $rc, \"seconds\": $(($(date +%s) - t0)), \"estimate\": $est}" >> "$OUT/session.jsonl"
}

# ---------------------------------------------------------------------------------------------------- setup
if ! "$PY" -c 'import audiomosaic' 2>> "$LOG"; then
  echo "gpu_session: 'import audiomosaic' failed with PYTHONPATH=$PWD (see $LOG)" | tee -a "$LOG"
  exit 1
fi
if ! "$PY" -c 'import soundfile' 2> /dev/null && ls .whl/soundfile-*.whl > /dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/am_site .whl/soundfile-*.whl \
    .whl/cffi-*.whl .whl/pycparser-*.whl >> "$LOG" 2>&1 && export PYTHONPATH=/tmp/am_site:$PYTHONPATH
fi
E2E=(end_to_end)
if ! "$PY" -c 'import soundfile' 2> /dev/null; then
  E2E=()
  echo '{"phase": "end_to_end", "status": "skipped", "why": "no soundfile (run: bash bench/gpu_session.sh prepare; carry .whl)"}' >> "$OUT/session.jsonl"
fi
"$PY" - > "$OUT/env.json" <<'EOF'
import json, os, subprocess, torch
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip() if gpu else ""
print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "gpu": gpu, "nvidia_smi": smi,
                  "cpus": os.cpu_count()}))
EOF

# ----------------------------------------------------------------------------------------------- sizes
if [ "$DRY" = 1 ]; then
  B_MAIN=8; B_SMALL=4; B_LARGE=16; COMPILE=${DRY_COMPILE:-0}; WORKERS="1"
  COMMON=(--model vit_nano --frames 128 --warmup 1 --steps 2 --peak-seconds 0.1 --files 8 --clip-seconds 1.0)
else
  B_MAIN=512; B_SMALL=256; B_LARGE=1024; COMPILE=1; WORKERS="8 12"
  COMMON=(--warmup 3 --steps 8 --peak-seconds 1.0 --files 256 --clip-seconds 10)
fi
STEP=("$PY" bench/pretrain_step.py "${COMMON[@]}" --out "$OUT/pretrain_step.jsonl")

# ---------------------------------------------------------------------------------- phases, by priority
# 1. Eager: how much each checkpointing setting costs in time and saves in memory (batch 512, paper layout).
phase eager_ckpt 75 150 "${STEP[@]}" --batch $B_MAIN --compile 0 --ckpt 0 0.34 0.7 1 --policy block matmul
# 2. The authors' setting as the engine runs it (compile with default dynamic shapes, 70% blocks), all levels.
phase compile_auto_0.7 170 300 "${STEP[@]}" --batch $B_MAIN --compile $COMPILE --dynamic auto --ckpt 0.7 \
  --level step train_step "${E2E[@]}" --workers $WORKERS
# 3. The input pipeline on its own (another engineer's benchmark: CPU 1 thread / all threads, then CUDA).
if [ -f bench/pipeline.py ]; then
  if [ "$DRY" = 1 ]; then PIPE=(--quick); else PIPE=(--cpu-batches 16 --threads 1 --iters 2); fi
  phase pipeline 60 120 bash -c "'$PY' bench/pipeline.py ${PIPE[*]} | tee -a '$OUT/pipeline.jsonl'"
fi
# 4. Static shapes (one graph per token count) against 2.
phase compile_static_0.7 120 240 "${STEP[@]}" --batch $B_MAIN --compile $COMPILE --dynamic static --ckpt 0.7
# 5. Eager extras: batch size, the reference layout, one- vs two-call views (tt), branch-only checkpointing.
phase eager_batch_layout 45 90 "${STEP[@]}" --batch $B_SMALL $B_LARGE --compile 0 --ckpt 0.7 --layout paper reference
phase eager_views 25 60 "${STEP[@]}" --batch $B_MAIN --compile 0 --ckpt 0.7 --mode tt --views separate concat
phase eager_branch 30 60 "${STEP[@]}" --batch $B_MAIN --compile 0 --ckpt 1 --policy attn mlp
# 6. Compiled with less checkpointing: the candidates for >= 1600 clips/s within 40 GiB.
phase compile_static_0.34 120 240 "${STEP[@]}" --batch $B_MAIN --compile $COMPILE --dynamic static --ckpt 0.34
phase compile_static_0 120 240 "${STEP[@]}" --batch $B_MAIN $B_SMALL --compile $COMPILE --dynamic static --ckpt 0

echo "gpu_session: done in $(($(date +%s) - START))s; results in $OUT" | tee -a "$LOG"
# The tool's reply keeps the end of the output: a compact table of every configuration last.
[ -f "$OUT/pretrain_step.jsonl" ] && "$PY" - "$OUT/pretrain_step.jsonl" <<'EOF'
import json, sys
print("level      cmp dyn    ckpt policy views    layout    mode batch  clips/s  step_ms peakGiB   MFU  1st_s status syncs")
for line in open(sys.argv[1]):
    r = json.loads(line)
    f = lambda k, fmt: format(r[k], fmt) if isinstance(r.get(k), (int, float)) else "-"
    print(f"{r['level'][:10]:10s} {r['compile']:3d} {r['dynamic'][:6]:6s} {r['ckpt']:4.2f} {r['policy'][:6]:6s} "
          f"{r['views'][:8]:8s} {r['layout'][:9]:9s} {r['mode']:4s} {r['batch']:5d} {f('clips_per_s', '8.1f')} "
          f"{f('step_ms', '8.1f')} {f('peak_gib', '7.1f')} {f('mfu', '5.3f')} {f('first_step_s', '6.1f')} "
          f"{r['status']} {r.get('host_syncs', '')}")
EOF
