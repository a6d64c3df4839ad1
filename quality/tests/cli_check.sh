#!/usr/bin/env bash
# cli_check.sh GEN_SAMPLE EXPERT_CLI EXPERT_QUALITY GEN_BASE CHECK_MERGE WORKDIR
# End to end through expert-cli (which execs expert-quality for compress and
# diff): compress a generated LoRA expert with both methods, validate the
# outputs at full level, diff them against the input, merge the OSD output
# into a generated base and check the merge against the formula; usage and
# error exits; the NOT_FOUND path when expert-quality cannot be found.
set -euo pipefail
GEN=$1 CLI=$2 EQ=$3 GENBASE=$4 CHECK=$5
DIR=$6/cli-check
rm -rf "$DIR"
mkdir -p "$DIR"
fail() { echo "FAIL: $*"; exit 1; }

"$GEN" "$DIR/lora" --type lora --rank 16 --layers 2 --modules q,k,v,o,gate,up,down \
  --tokenizer-bytes 16384 --quiet
"$CLI" pack "$DIR/lora" -o "$DIR/lora.expert" --codec raw -q
"$GEN" "$DIR/dora" --type dora --rank 8 --layers 1 --tokenizer-bytes 16384 --quiet
"$CLI" pack "$DIR/dora" -o "$DIR/dora.expert" -q

"$CLI" help compress | grep -q "osd-magnitude" || fail "help compress"
"$CLI" compress --help | grep -q "Usage: expert-cli compress" || fail "compress --help"
"$CLI" diff --help | grep -q "Usage: expert-cli diff" || fail "diff --help"

for m in svd osd; do
  "$CLI" compress "$DIR/lora.expert" -o "$DIR/$m.expert" --method $m --budget 1/4 --json > "$DIR/$m.json"
  python3 - "$DIR/$m.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["ok"] and r["file_bytes"] <= r["budget_bytes"], r
assert r["file_bytes"] >= 0.97 * r["budget_bytes"], (r["file_bytes"], r["budget_bytes"])
assert r["file_bytes"] == r["predicted_bytes"]
assert r["method"] in ("svd", "osd-magnitude"), r["method"]
print(f'{r["method"]}: {r["file_bytes"]} of {r["budget_bytes"]} bytes, rel_fro {r["rel_fro_all"]:.4f}')
PY
  "$CLI" validate "$DIR/$m.expert" --level full > /dev/null || fail "validate $m"
  "$CLI" diff "$DIR/lora.expert" "$DIR/$m.expert" > "$DIR/$m.diff" || fail "diff $m"
  tail -1 "$DIR/$m.diff"
done
# the same through expert-quality directly; a byte budget
"$EQ" compress "$DIR/lora.expert" -o "$DIR/b.expert" --method osd --budget 600K -q
[ "$(stat -c %s "$DIR/b.expert")" -le 614400 ] || fail "byte budget"
"$EQ" diff "$DIR/lora.expert" "$DIR/b.expert" --json | python3 -c 'import json,sys; r=json.load(sys.stdin); assert r["ok"] and r["modules"]'

# merge the OSD file into a base and check it against U·diag(S)·Vt
"$GENBASE" "$DIR/base.safetensors" --layers 2 --vocab 64 --quiet
"$CLI" merge "$DIR/osd.expert" --base "$DIR/base.safetensors" -o "$DIR/merged.safetensors" -q
"$CHECK" "$DIR/osd.expert" "$DIR/base.safetensors" "$DIR/merged.safetensors"

# errors: usage (64), DoRA with osd and no base (INVALID_ARGUMENT 3), exists (IO 1)
set +e
"$CLI" compress "$DIR/lora.expert" -o "$DIR/x.expert" --budget 1/2 2>/dev/null; rc1=$?
"$CLI" compress "$DIR/dora.expert" -o "$DIR/x.expert" --method osd --budget 1/2 2>/dev/null; rc2=$?
"$CLI" compress "$DIR/lora.expert" -o "$DIR/svd.expert" --method svd --budget 1/2 2>/dev/null; rc3=$?
"$CLI" compress "$DIR/lora.expert" -o "$DIR/x.expert" --method svd --budget 2/0 2>/dev/null; rc4=$?
set -e
[ $rc1 -eq 64 ] || fail "missing --method gave $rc1"
[ $rc2 -eq 3 ] || fail "dora + osd without base gave $rc2"
[ $rc3 -eq 1 ] || fail "existing output gave $rc3"
[ $rc4 -eq 64 ] || fail "bad ratio gave $rc4"
# DoRA with svd keeps dora modules
"$CLI" compress "$DIR/dora.expert" -o "$DIR/d.expert" --method svd --budget 1/2 -q
"$CLI" inspect "$DIR/d.expert" --json | python3 -c 'import json,sys; r=json.load(sys.stdin); t={m["type"] for m in r["metadata"]["modules"]}; assert t=={"dora"}, t'

# expert-cli without expert-quality anywhere: NOT_FOUND (40)
mkdir -p "$DIR/bin"
cp "$CLI" "$DIR/bin/expert-cli"
set +e
env -u EXPERT_QUALITY PATH=/usr/bin:/bin "$DIR/bin/expert-cli" compress "$DIR/lora.expert" -o "$DIR/y.expert" \
  --method svd --budget 1/2 2> "$DIR/nf.err"; rc=$?
set -e
[ $rc -eq 40 ] || fail "missing expert-quality gave $rc"
grep -q "expert-quality" "$DIR/nf.err" || fail "NOT_FOUND message"
echo "cli_check: OK"
