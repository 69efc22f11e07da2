#!/usr/bin/env bash
# One call on a GPU machine: the training pipelines on CUDA. Stage I (FSQ and VQ
# tokenizers), stage II (MaskGIT on the FSQ tokens), the same tokenizer under
# torchrun (DDP over every GPU; NCCL), a Ctrl-C'd run resumed, UViM (oracle +
# stage II) and a tiny study grid. Every step's log, time and exit code go to
# $OUT (summary.txt: one line per step). Sized for ~6 minutes on one H100.
#   bash benchmarks/gpu_pipelines.sh
# CPU smoke run of the same script (what the tests cannot cover: the shell glue):
#   DEVICE=cpu STEPS=20 OUT=/tmp/gp bash benchmarks/gpu_pipelines.sh
set -o pipefail
OUT=${OUT:-/tmp/fsqkit_gpu_pipelines}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-1500}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
NPROC=${NPROC:-$($PY -c 'import torch; print(max(1, torch.cuda.device_count()))')}
: > "$OUT/summary.txt"

step() {  # step NAME COMMAND...: run, log to $OUT/NAME.log, record rc and seconds
    local name=$1
    shift
    local t0 t1 rc
    t0=$(date +%s.%N)
    "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    printf '%-14s rc=%-3s %7.1f s  %s\n' "$name" "$rc" "$(echo "$t1 - $t0" | bc)" \
        "$(grep -v '^\s*$' "$OUT/$name.log" | tail -1 | cut -c1-150)" | tee -a "$OUT/summary.txt"
}

$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-')" | tee "$OUT/env.txt"
TOK="--data embedded --steps $STEPS --batch-size 64 --device $DEVICE --no-progress --overwrite"
step tok-fsq $PY -m fsqkit.cli train-tokenizer --quantizer fsq --levels 8,5,5,5 $TOK --out "$OUT/tok-fsq"
step tok-vq $PY -m fsqkit.cli train-tokenizer --quantizer vq --codebook-size 1024 $TOK \
    --out "$OUT/tok-vq"
step maskgit $PY -m fsqkit.cli train-maskgit --tokenizer "$OUT/tok-fsq" --unconditional \
    --steps "$STEPS" --batch-size 64 --device "$DEVICE" --no-progress --overwrite --out "$OUT/mg-fsq"
# DDP: the same tokenizer over NPROC processes (batch 64 per process).
step tok-ddp $PY -m torch.distributed.run --standalone --nproc_per_node="$NPROC" -m fsqkit.cli \
    train-tokenizer --quantizer fsq --levels 8,5,5,5 $TOK --out "$OUT/tok-ddp"
# Ctrl-C after 20 s (exit 130 with a checkpoint), then --resume to the end.
step interrupt timeout -s INT 20 $PY -m fsqkit.cli train-tokenizer --quantizer fsq \
    --levels 8,5,5,5 $TOK --out "$OUT/tok-int"
step resume $PY -m fsqkit.cli train-tokenizer --quantizer fsq --levels 8,5,5,5 \
    --data embedded --steps "$STEPS" --batch-size 64 --device "$DEVICE" --no-progress --resume \
    --out "$OUT/tok-int"
UV="--steps $STEPS --batch-size 64 --device $DEVICE --no-progress --overwrite"
step uvim-oracle $PY -m fsqkit.cli uvim train-oracle --task depth --data scenes --quantizer fsq \
    $UV --out "$OUT/uv-oracle"
step uvim-stage2 $PY -m fsqkit.cli uvim train --oracle "$OUT/uv-oracle" $UV --out "$OUT/uv-full"
step study-tiny $PY -m fsqkit.cli study codebook-size --scale tiny --device "$DEVICE" \
    --no-progress --out "$OUT/study-tiny"
echo "summary: $OUT/summary.txt"
