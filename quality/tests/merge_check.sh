#!/usr/bin/env bash
# merge_check.sh GEN_SAMPLE EXPERT_CLI GEN_BASE CHECK_MERGE WORKDIR
# `expert-cli merge` of generated experts into generated Qwen3-0.6B-shaped
# bases, checked by check_merge against the PEFT formulas in long double:
# DoRA r=8 into F32 (the done-when case, 2 layers here), LoRA into BF16,
# IA3 (with biases) into F16.
set -euo pipefail
GEN=$1 CLI=$2 GENBASE=$3 CHECK=$4
DIR=$5/merge-check
rm -rf "$DIR"
mkdir -p "$DIR"
run() { # type rank base-dtype base-extra-args...
  local type=$1 rank=$2 dt=$3; shift 3
  "$GEN" "$DIR/$type" --type "$type" --rank "$rank" --layers 2 --modules q,k,v,o,gate,up,down \
    --tokenizer-bytes 16384 --quiet
  "$CLI" pack "$DIR/$type" -o "$DIR/$type.expert" -q
  "$GENBASE" "$DIR/base-$type.safetensors" --layers 2 --vocab 512 --dtype "$dt" --quiet "$@"
  "$CLI" merge "$DIR/$type.expert" --base "$DIR/base-$type.safetensors" -o "$DIR/merged-$type.safetensors"
  "$CHECK" "$DIR/$type.expert" "$DIR/base-$type.safetensors" "$DIR/merged-$type.safetensors"
}
run dora 8 f32
run lora 16 bf16
run ia3 1 f16 --bias
# GPT-2 Conv1D layout: weights stored [in, out], merged with --fan-in-fan-out
"$GENBASE" "$DIR/base-t.safetensors" --layers 2 --vocab 512 --transposed --quiet
"$CLI" merge "$DIR/lora.expert" --base "$DIR/base-t.safetensors" -o "$DIR/merged-t.safetensors" --fan-in-fan-out -q
"$CHECK" "$DIR/lora.expert" "$DIR/base-t.safetensors" "$DIR/merged-t.safetensors" --fan-in-fan-out
# without the flag the shapes do not match: INVALID_ARGUMENT (3)
set +e
"$CLI" merge "$DIR/lora.expert" --base "$DIR/base-t.safetensors" -o "$DIR/x.safetensors" 2>/dev/null
rc=$?
set -e
[ "$rc" -eq 3 ] || { echo "FAIL: transposed base without --fan-in-fan-out gave exit $rc"; exit 1; }
# refuses to overwrite without --force, and a missing base tensor is NOT_FOUND (40)
if "$CLI" merge "$DIR/dora.expert" --base "$DIR/base-dora.safetensors" -o "$DIR/merged-dora.safetensors" 2>/dev/null; then
  echo "FAIL: overwrote without --force"; exit 1
fi
"$GENBASE" "$DIR/base-1layer.safetensors" --layers 1 --vocab 16 --quiet
set +e
"$CLI" merge "$DIR/dora.expert" --base "$DIR/base-1layer.safetensors" -o "$DIR/x.safetensors" 2>/dev/null
rc=$?
set -e
[ "$rc" -eq 40 ] || { echo "FAIL: missing base tensor gave exit $rc, expected 40"; exit 1; }
[ ! -e "$DIR/x.safetensors" ] || { echo "FAIL: partial output left behind"; exit 1; }
echo "merge_check: OK"
