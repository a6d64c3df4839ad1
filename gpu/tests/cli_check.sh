#!/bin/sh
# expert-gpu and `expert-cli vram|gpu-load` from the outside: help and usage
# errors, the VRAM prediction against an independent sum of the file's own
# section table (expert-cli inspect --json), bad files, and the device
# commands' exit 77 without a GPU (0 with one).
# Usage: cli_check.sh EXPERT_GPU EXPERT_CLI EXPERT_GEN_SAMPLE
set -u
GPU=$1 CLI=$2 GEN=$3
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
W=$(mktemp -d "${TMPDIR:-/tmp}/gpu-cli.XXXXXX")
trap 'rm -rf "$W"' EXIT
fails=0
check() { # description, expected exit, command...
  what=$1 want=$2; shift 2
  "$@" >"$W/out" 2>"$W/err"; got=$?
  if [ "$got" != "$want" ]; then
    echo "FAIL: $what: exit $got, expected $want"; sed 's/^/  | /' "$W/out" "$W/err" | head -20
    fails=$((fails + 1))
  else
    echo "ok: $what"
  fi
}

"$GEN" "$W/d" -q --layers 3 --tokenizer-bytes 20000 || exit 1
"$CLI" pack "$W/d" -o "$W/d.expert" >/dev/null || exit 1
"$GEN" "$W/i" -q --type ia3 --layers 2 --tokenizer-bytes 20000 || exit 1
"$CLI" pack "$W/i" -o "$W/i.expert" >/dev/null || exit 1

check "help" 0 "$GPU" --help
check "no command" 64 "$GPU"
check "unknown command" 64 "$GPU" frobnicate
check "vram --help" 0 "$GPU" vram --help
check "vram without a file" 64 "$GPU" vram
check "vram bad dtype" 64 "$GPU" vram --dtype f8 "$W/d.expert"
check "vram bad --experts" 64 "$GPU" vram --experts 0 "$W/d.expert"
check "vram missing file" 1 "$GPU" vram "$W/none.expert"
head -c 300 "$W/d.expert" >"$W/short.expert"
check "vram truncated file" 12 "$GPU" vram --json "$W/short.expert"
grep -q '"TRUNCATED"' "$W/out" || { echo "FAIL: truncated file: no TRUNCATED class in JSON"; fails=$((fails + 1)); }

for dt in as-stored bf16; do
  check "vram --json ($dt)" 0 "$GPU" vram --json --predict-only --dtype $dt "$W/d.expert" "$W/i.expert"
  cp "$W/out" "$W/vram-$dt.json"
done
"$CLI" inspect --json "$W/d.expert" >"$W/d.inspect" || exit 1
"$CLI" inspect --json "$W/i.expert" >"$W/i.inspect" || exit 1
# Independent accounting: every tensor section (not FILE, not the safetensors
# header) at its device width, each padded to 256 bytes, summed.
if ! "$PY" - "$W" <<'PYEOF'
import json, sys
w = sys.argv[1]
width = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I32": 4, "I64": 8}
ok = True
for dt in ("as-stored", "bf16"):
    rep = json.load(open(f"{w}/vram-{dt}.json"))
    assert rep["label"] == "predicted, not measured", rep["label"]
    for f, name in zip(rep["files"], ("d", "i")):
        ins = json.load(open(f"{w}/{name}.inspect"))
        arena = payload = 0
        for s in ins["sections"]:
            if s["type"] in ("FILE", "SAFETENSORS_HEADER"):
                continue
            n = s["decoded_length"] // width[s["dtype"]]
            dev = n * (2 if dt == "bf16" and s["dtype"].startswith(("F", "BF")) else width[s["dtype"]])
            payload += dev
            arena += (dev + 255) // 256 * 256
        page = rep["page_bytes"]
        reserved = (arena + page - 1) // page * page
        got = (f["payload_bytes"], f["resident_bytes"], f["reserved_bytes"])
        want = (payload, arena, reserved)
        if got != want:
            print(f"FAIL: {name} {dt}: plan {got}, independent sum {want}")
            ok = False
        ten = f["resident"][1]
        if ten["experts"] != 10 or ten["predicted_reserved_bytes"] != 10 * reserved:
            print(f"FAIL: {name} {dt}: 10-expert row {ten}")
            ok = False
        if f["under_target"] != (arena < 50e6):
            print(f"FAIL: {name} {dt}: verdict")
            ok = False
        if "measured_bytes" in f["resident"][0]:
            print("FAIL: --predict-only reported a measurement")
            ok = False
    print(f"ok: {dt}: plan totals equal the independent sums")
sys.exit(0 if ok else 1)
PYEOF
then fails=$((fails + 1)); fi

if "$GPU" device >/dev/null 2>&1; then dev_rc=0; else dev_rc=77; fi
check "device" $dev_rc "$GPU" device
check "load (device or exit 77)" $dev_rc "$GPU" load --repeat 1 "$W/d.expert"
[ $dev_rc = 77 ] && { grep -q "SKIPPED: no CUDA device" "$W/err" || { echo "FAIL: load: no SKIPPED line"; fails=$((fails + 1)); }; }
check "apply (device or exit 77)" $dev_rc "$GPU" apply --tokens 64 --repeat 1
check "load bad --threads" 64 "$GPU" load --threads 0 "$W/d.expert"
EXPERT_GPU=$GPU check "expert-cli vram runs expert-gpu" 0 "$CLI" vram --predict-only "$W/d.expert"
grep -q "predicted, not measured" "$W/out" || { echo "FAIL: expert-cli vram: no label"; fails=$((fails + 1)); }
EXPERT_GPU=$GPU check "expert-cli gpu-load runs expert-gpu" $dev_rc "$CLI" gpu-load --repeat 1 "$W/d.expert"
check "expert-cli vram --help" 0 "$CLI" vram --help

[ $fails = 0 ] && echo "all expert-gpu CLI checks passed" && exit 0
echo "$fails check(s) failed"; exit 1
