#!/usr/bin/env bash
# cli_check.sh — expert-ab and quality/ab/run on bad input: each case must
# fail with its exit status and a message naming the problem, and leave no
# output behind; plus --help everywhere.
#   usage: cli_check.sh EXPERT_AB RUN_SCRIPT BUILD_DIR WORK_DIR
set -u
AB=$1 RUN=$2 BUILD=$3 W=$4/ab-cli-check
rm -rf "$W" && mkdir -p "$W"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# expect STATUS PATTERN CMD...: exit status and a stderr/stdout pattern
expect() {
  local want=$1 pat=$2; shift 2
  local out rc
  out=$("$@" 2>&1); rc=$?
  if [ "$rc" != "$want" ]; then fail "$* -> exit $rc, want $want: $out"; return; fi
  if ! grep -q -- "$pat" <<<"$out"; then fail "$* -> message lacks '$pat': $out"; return; fi
  echo "ok: exit $rc: $(head -c 160 <<<"$out" | tr '\n' ' ')"
}

for c in pretrain full lora base-expert grads items eval floor; do
  "$AB" "$c" --help >/dev/null || fail "$c --help"
done
"$AB" --help >/dev/null || fail "--help"
"$RUN" --help >/dev/null || fail "run --help"
expect 64 "unknown command" "$AB" frobnicate

# a tiny model, trained for a few steps, for the cases that need one
cat >"$W/cfg.json" <<'EOF'
{"task": "fmnist", "model": {"in": 784, "hidden": 32, "classes": 10},
 "data": {"fmnist": {"path": "/usr/share/datasets/fashion-mnist", "package": "dataset-fashion-mnist"},
          "split_seed": 1, "calib": 500, "base_classes": [0, 1, 2, 3, 4]},
 "pretrain": {"steps": 5, "batch": 32, "lr": 1e-3, "warmup": 1, "wd": 0.0, "seed": 1},
 "full": {"steps": 5, "batch": 32, "lr": 1e-3, "warmup": 1, "wd": 0.0, "seed": 1},
 "lora": {"steps": 5, "batch": 32, "lr": 1e-3, "warmup": 1, "wd": 0.0, "alpha_per_rank": 2.0},
 "calibration": {"seed": 3}, "items": {}}
EOF
if [ ! -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]; then
  echo "SKIPPED: dataset-fashion-mnist is not installed (ci/bootstrap installs it)"; exit 77
fi
"$AB" pretrain --config "$W/cfg.json" -o "$W/base.safetensors" -q || fail "pretrain"
"$AB" lora --config "$W/cfg.json" --base "$W/base.safetensors" --rank 2 --seed 1 -o "$W/lora.expert" -q || fail "lora"
/usr/bin/python3 -c "
import json; c=json.load(open('$W/cfg.json')); c['pretrain']['seed']=2; json.dump(c,open('$W/cfg2.json','w'))"
"$AB" pretrain --config "$W/cfg2.json" -o "$W/other.safetensors" -q || fail "pretrain other"
"$AB" items --config "$W/cfg.json" -o "$W/items.jsonl" -q || fail "items"

# a missing data package: NOT_FOUND (40) naming the package, no checkpoint
sed 's|/usr/share/datasets/fashion-mnist|/nonexistent/fashion-mnist|' "$W/cfg.json" >"$W/nodata.json"
expect 40 "install the Debian package 'dataset-fashion-mnist'" "$AB" pretrain --config "$W/nodata.json" -o "$W/x.safetensors"
[ -e "$W/x.safetensors" ] && fail "a checkpoint was left behind"
# an expert made for another base: INVALID_ARGUMENT (3), no outcomes file
expect 3 "wrong base model" "$AB" eval --base "$W/other.safetensors" --expert "$W/lora.expert" --items "$W/items.jsonl" --out "$W/o.jsonl"
[ -e "$W/o.jsonl" ] && fail "outcomes were left behind"
# malformed items: the line is named
head -3 "$W/items.jsonl" >"$W/bad.jsonl"; echo '{"id": "x", "index": 99999, "label": 1}' >>"$W/bad.jsonl"
expect 3 "items line 4" "$AB" eval --base "$W/base.safetensors" --expert "$W/lora.expert" --items "$W/bad.jsonl" --out "$W/o.jsonl"
printf '{"id": "x", "index": 0, "label": 9}\nnot json\n' >"$W/bad2.jsonl"
expect 3 "line 2: not a JSON object" "$AB" eval --base "$W/base.safetensors" --expert "$W/lora.expert" --items "$W/bad2.jsonl" --out "$W/o.jsonl"
head -1 "$W/items.jsonl" | sed 's/"label":[0-9]*/"label":77/' >"$W/bad3.jsonl"
expect 3 "but test image" "$AB" eval --base "$W/base.safetensors" --expert "$W/lora.expert" --items "$W/bad3.jsonl" --out "$W/o.jsonl"
[ -e "$W/o.jsonl" ] && fail "outcomes were left behind"
# a config with a bad field
/usr/bin/python3 -c "
import json; c=json.load(open('$W/cfg.json')); c['pretrain']['steps']=-5; json.dump(c,open('$W/badcfg.json','w'))"
expect 3 "'pretrain.steps' must be an integer" "$AB" pretrain --config "$W/badcfg.json" -o "$W/x.safetensors"
# the good case works and is deterministic
"$AB" eval --base "$W/base.safetensors" --expert "$W/lora.expert" --items "$W/items.jsonl" --out "$W/o1.jsonl" -q || fail "eval"
"$AB" eval --base "$W/base.safetensors" --expert "$W/lora.expert" --items "$W/items.jsonl" --out "$W/o2.jsonl" -q || fail "eval 2"
cmp -s "$W/o1.jsonl" "$W/o2.jsonl" || fail "two evaluations differ"
"$AB" lora --config "$W/cfg.json" --base "$W/base.safetensors" --rank 2 --seed 1 -o "$W/lora2.expert" -q || fail "lora again"
cmp -s "$W/lora.expert" "$W/lora2.expert" || fail "the same training command gave a different expert"

# run: a plan with an unknown arm, and one missing a field, leave no report
PLAN_DIR=$(dirname "$RUN")
/usr/bin/python3 -c "
import json,sys
p=json.load(open('$PLAN_DIR/plan-ci.json')); p['arms'].append('osd-magic')
json.dump(p,open('$W/plan-bad-arm.json','w'))
p=json.load(open('$PLAN_DIR/plan-ci.json')); del p['statistics']['alpha']
json.dump(p,open('$W/plan-no-alpha.json','w'))
p=json.load(open('$PLAN_DIR/plan-ci.json')); p['primary']['treatment']='svd'
json.dump(p,open('$W/plan-bad-pair.json','w'))
"
expect 3 "unknown arm 'osd-magic'" "$RUN" --plan "$W/plan-bad-arm.json" --build-dir "$BUILD" --work "$W/work" --report-dir "$W/report"
expect 3 "statistics.alpha is missing" "$RUN" --plan "$W/plan-no-alpha.json" --build-dir "$BUILD" --work "$W/work" --report-dir "$W/report"
expect 3 "uses arm 'svd'" "$RUN" --plan "$W/plan-bad-pair.json" --build-dir "$BUILD" --work "$W/work" --report-dir "$W/report"
[ -e "$W/report" ] && fail "a report directory was left behind"

if [ "$fails" -ne 0 ]; then echo "$fails failure(s)"; exit 1; fi
echo "all expert-ab / run bad-input checks passed"
