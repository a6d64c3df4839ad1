#!/usr/bin/env bash
# measure.sh BUILD_DIR WORK_DIR — the issue-7 measurements on generated data:
#  1. svd vs osd-magnitude at 1/2, 1/4, 1/8 on a generated LoRA r=16 expert
#     (Qwen3-0.6B shapes, 28 layers, q,k,v,o,up,down): file bytes vs budget,
#     pooled relative Frobenius error (compress) and the per-module mean
#     relative Frobenius/spectral error (diff);
#  2. compress time of a generated DoRA r=16 expert (same shapes): svd without
#     a base; svd and osd on the effective W' - W with a generated F32 base,
#     randomized and exact SVD;
#  3. randomized vs exact SVD on the first modules (rsvd-check);
#  4. merge of the DoRA expert into the full generated F32 base, checked.
# Generated data: random factors in PEFT's initialisation ranges. The numbers
# show the mechanics and the byte accounting, not task quality.
set -euo pipefail
B=$(cd "$1" && pwd); W=$2
mkdir -p "$W"; cd "$W"
GEN=$B/ref/expert-gen-sample CLI=$B/ref/expert-cli EQ=$B/quality/expert-quality
GB=$B/quality/expert-gen-base CHECK=$B/quality/check_merge
t() { /usr/bin/time -f "  wall %e s, user %U s, sys %S s, max RSS %M KB" "$@"; }
[ -f lora16.expert ] || { "$GEN" lora16 --type lora --rank 16 --tokenizer-bytes 16384 --quiet
  "$CLI" pack lora16 -o lora16.expert --codec raw -q; }
[ -f dora16.expert ] || { "$GEN" dora16 --type dora --rank 16 --tokenizer-bytes 16384 --quiet
  "$CLI" pack dora16 -o dora16.expert --codec raw -q; }
[ -f base.safetensors ] || "$GB" base.safetensors --quiet
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), load $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== 1. error table, generated LoRA r=16 ($(stat -c %s lora16.expert) bytes)"
printf "%-14s %6s %10s %10s %8s %10s %10s %10s\n" method budget bytes budget_B use% fro_pool fro_mean spec_mean
for b in 1/2 1/4 1/8; do
  for m in svd osd; do
    o=l-$m-${b/\//_}.expert
    "$EQ" compress lora16.expert -o "$o" --method $m --budget $b --force --json > c.json
    "$EQ" diff lora16.expert "$o" --json > d.json
    python3 - "$b" <<'PY'
import json, sys
c, d = json.load(open("c.json")), json.load(open("d.json"))
rows = [r for r in d["modules"] if r["rel_fro"] is not None]
mf = sum(r["rel_fro"] for r in rows) / len(rows); ms = sum(r["rel_spec"] for r in rows) / len(rows)
print(f'{c["method"]:<14} {sys.argv[1]:>6} {c["file_bytes"]:>10} {c["budget_bytes"]:>10} '
      f'{100*c["file_bytes"]/c["budget_bytes"]:>8.3f} {d["rel_fro_pooled"]:>10.5f} {mf:>10.5f} {ms:>10.5f}')
PY
  done
done

echo "== 2. compress time, generated DoRA r=16 ($(stat -c %s dora16.expert) bytes, 168 modules)"
for b in 1/2 1/4 1/8; do
  echo "svd, no base, $b:"; t "$EQ" compress dora16.expert -o d.expert --method svd --budget $b --force | grep -E "file|time"
done
for sv in randomized exact; do
  for m in svd osd; do
    echo "$m, --base, --svd $sv, 1/4:"
    t "$EQ" compress dora16.expert -o d.expert --method $m --budget 1/4 --base base.safetensors --svd $sv --force \
      | grep -E "file|time|Frob"
  done
done

echo "== 3. randomized vs exact SVD (effective W' - W of the first 12 DoRA modules, k=32)"
t "$EQ" rsvd-check dora16.expert --base base.safetensors --k 32 --max-modules 12

echo "== 4. merge DoRA r=16 into the full F32 base (Qwen3-0.6B names/shapes, 28 layers)"
t "$CLI" merge dora16.expert --base base.safetensors -o merged.safetensors --force
t "$CHECK" dora16.expert base.safetensors merged.safetensors
