#!/usr/bin/env bash
# One call on a GPU machine: the training pipelines on CUDA. Stage I (FSQ and VQ
# tokenizers), stage II (MaskGIT on the FSQ tokens), the same tokenizer under
# torchrun (DDP over every GPU; NCCL), a Ctrl-C'd run resumed, UViM (oracle +
# stage II) and a tiny study grid. Every step's log, time and exit code go to
# $OUT (summary.txt: one line per step). Sized for ~6 minutes on one H100.
#   bash benchmarks/gpu_pipelines.sh
# CPU smoke run of the same script (what the tests cannot cover: the shell glue):
#   DEVICE=cpu STEPS=20 OUT=/tmp/gp bash benchmarks/gpu_pipelines.sh
# Then the paper's presets (--preset ...) for PRESET_STEPS steps each (default 300;
# PRESETS=0 skips them), on built-in data at the presets' sizes (DEVICE=cpu: tiny
# sizes): images/s, peak memory and the loss curve per run in $OUT/presets.txt and
# $OUT/<run>/loss_curve.tsv. PIPELINES=0 skips the pipelines above.
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
PIPELINES=${PIPELINES:-1}
PRESETS=${PRESETS:-1}
PRESET_STEPS=${PRESET_STEPS:-300}
if [ "$PIPELINES" = 1 ]; then
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
fi

if [ "$PRESETS" = 1 ]; then
# The presets at their own sizes on built-in data (no ImageNet here): 256 px crops of the
# bundled photos; batch per process as in the preset, one micro-batch per step (images/s
# does not depend on the accumulation). DEVICE=cpu shrinks everything to seconds.
P="--steps $PRESET_STEPS --device $DEVICE --no-progress --overwrite --grad-accum 1 --log-every 10"
P="$P --eval-every 0 --ckpt-minutes 0"
if [ "$DEVICE" = cpu ]; then
    TT="--image-size 32 --base-channels 8 --batch-size 2 --train-images 64 --val-images 8"
    TM="--dim 32 --depth 2 --heads 2 --batch-size 4"
    TU="--image-size 32 --base-channels 8 --batch-size 2 --num-train 16 --num-val 8"
    TS="--dim 32 --depth 1 --heads 2 --batch-size 2 --num-train 16 --num-val 8"
else
    TT="--train-images 8192 --val-images 512"
    TM=""
    TU="--num-train 2048 --num-val 256"
    TS="--num-train 2048 --num-val 256"
fi
step preset-tok-fsq $PY -m fsqkit.cli train-tokenizer --preset maskgit-imagenet256 \
    --data embedded --quantizer fsq $TT $P --fid none --out "$OUT/preset-tok-fsq"
step preset-tok-vq $PY -m fsqkit.cli train-tokenizer --preset maskgit-imagenet256 \
    --data embedded --quantizer vq $TT $P --fid none --out "$OUT/preset-tok-vq"
step preset-maskgit $PY -m fsqkit.cli train-maskgit --preset maskgit-imagenet256 \
    --tokenizer "$OUT/preset-tok-fsq" --data embedded $TM $P --fid-samples 0 \
    --out "$OUT/preset-maskgit"
step preset-uvim-oracle $PY -m fsqkit.cli uvim train-oracle --preset nyu-depth --data scenes \
    $TU $P --out "$OUT/preset-uvim-oracle"
step preset-uvim-stage2 $PY -m fsqkit.cli uvim train --preset nyu-depth \
    --oracle "$OUT/preset-uvim-oracle" $TS $P --out "$OUT/preset-uvim-stage2"
for d in "$OUT"/preset-*/; do $PY benchmarks/summarize_run.py "$d"; done | tee "$OUT/presets.txt"
fi
echo "summary: $OUT/summary.txt"
