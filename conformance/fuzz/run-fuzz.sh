#!/usr/bin/env bash
# run-fuzz.sh — builds the libFuzzer targets (clang, ASan+UBSan, coverage
# instrumentation for the whole library) and runs each target for a bounded
# time, seeded from the regression corpus, the golden vectors, files written
# by the library writer and sample experts (expert-gen-sample + expert-cli).
#
#   conformance/fuzz/run-fuzz.sh [--seconds N] [--build DIR] [--targets "open verify ..."] [--shard I/N]
#
# --shard I/N runs every N-th target from the I-th (1-based), for a nightly
# matrix; ci/merge-shards joins the shards' fuzz.json.
#
# CI runs it with --seconds 20 (6 targets: about 2 minutes plus the build);
# ci/nightly-fuzz with --seconds 1800. Exit status: 0 when no target found a
# crash, leak, timeout or out-of-memory input; 1 otherwise (the inputs are in
# BUILD/fuzz-artifacts/: fix the library, then add them to corpus/<target>/).
# Without a working `clang -fsanitize=fuzzer` it prints "SKIPPED: <reason>"
# and exits 0. Statistics go to BUILD/reliability/fuzz.json for the report.
set -uo pipefail
cd "$(dirname "$0")/../.."
SECONDS_PER_TARGET=20
BUILD=build-fuzz
# Resources are findings: an input that takes more than TIMEOUT_S seconds,
# or more memory than the library's bounds allow (3 threads x 2 frames of at
# most 64 MiB, the 16 MiB metadata, the 16 MiB v1 limit of fuzz_v1, plus the
# sanitizers' shadow and quarantine), fails the run like a crash.
TIMEOUT_S=5
RSS_LIMIT_MB=1536
MALLOC_LIMIT_MB=256
TARGETS="open verify metadata safetensors v1 decode"
while (($#)); do
  case $1 in
    --seconds) SECONDS_PER_TARGET=$2; shift 2 ;;
    --build) BUILD=$2; shift 2 ;;
    --targets) TARGETS=$2; shift 2 ;;
    --shard) SHARD=$2; shift 2 ;;
    *) echo "usage: $0 [--seconds N] [--build DIR] [--targets LIST] [--shard I/N]" >&2; exit 64 ;;
  esac
done
if [ -n "${SHARD:-}" ]; then
  si=${SHARD%/*} sn=${SHARD#*/}
  if ! [[ $si =~ ^[0-9]+$ && $sn =~ ^[0-9]+$ ]] || ((si < 1 || si > sn)); then
    echo "$0: --shard wants I/N with 1 <= I <= N, got '$SHARD'" >&2; exit 64
  fi
  picked="" k=0
  for t in $TARGETS; do
    (( k % sn == si - 1 )) && picked+="$t "
    k=$((k + 1))
  done
  TARGETS=${picked% }
  [ -n "$TARGETS" ] || { echo "$0: shard $SHARD holds no target" >&2; exit 64; }
fi

skip() { echo "SKIPPED: $*"; mkdir -p "$BUILD/reliability"; printf '{"skipped": "%s"}\n' "$*" > "$BUILD/reliability/fuzz.json"; exit 0; }
command -v clang >/dev/null 2>&1 || skip "clang not installed"
probe=$(mktemp -d)
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' > "$probe/p.c"
if ! clang -fsanitize=fuzzer,address,undefined "$probe/p.c" -o "$probe/p" >"$probe/log" 2>&1 || ! "$probe/p" -runs=1 >>"$probe/log" 2>&1; then
  reason=$(head -c 300 "$probe/log" | tr '\n' ' ')
  rm -rf "$probe"
  skip "clang -fsanitize=fuzzer does not work here (install libclang-rt-dev): $reason"
fi
rm -rf "$probe"

if [ ! -f "$BUILD/build.ninja" ]; then
  CC=clang meson setup "$BUILD" -Dbuildtype=debugoptimized -Db_sanitize=address,undefined \
    -Db_lundef=false -Dc_args=-fsanitize=fuzzer-no-link -Dtests=disabled >"${TMPDIR:-/tmp}/fuzz-setup.$$.log" 2>&1 \
    || { cat "${TMPDIR:-/tmp}/fuzz-setup.$$.log"; exit 2; }
fi
ninja_targets="ref/expert-gen-sample ref/expert-cli conformance/corruption/expert-corrupt conformance/fuzz/fuzz-seedgen"
for t in $TARGETS; do ninja_targets+=" conformance/fuzz/fuzz_$t"; done
ninja -C "$BUILD" $ninja_targets >"$BUILD/fuzz-build.log" 2>&1 || { tail -50 "$BUILD/fuzz-build.log"; exit 2; }

export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export TMPDIR=${TMPDIR:-/tmp}

# ---- seeds (rebuilt every run; not committed)
SEEDS=$(cd "$BUILD" && pwd)/fuzz-seeds
rm -rf "$SEEDS" "$BUILD/fuzz-bases"
mkdir -p "$SEEDS"
"$BUILD/conformance/corruption/expert-corrupt" --gen "$BUILD/ref/expert-gen-sample" --cli "$BUILD/ref/expert-cli" \
  --save-bases "$BUILD/fuzz-bases" >/dev/null 2>&1 || true
files=$(ls "$BUILD"/fuzz-bases/*.expert vectors/accept/*.expert vectors/reject/*.expert vectors/impl/*.expert 2>/dev/null)
"$BUILD/conformance/fuzz/fuzz-seedgen" "$SEEDS" $files >/dev/null 2>&1 || true
pkg=$(mktemp -d)
if "$BUILD/ref/expert-gen-sample" "$pkg/p" --layers 1 --rank 1 --modules q,down --tokenizer-bytes 10168 --quiet; then
  mkdir -p "$SEEDS/v1"
  (cd "$pkg/p" && tar --format=ustar -cf "$SEEDS/v1/sample.tar" * && gzip -c "$SEEDS/v1/sample.tar" > "$SEEDS/v1/sample.tar.gz") || true
  cp "$pkg/p/adapter_model.safetensors" "$SEEDS/safetensors/sample.safetensors" 2>/dev/null || true
fi
rm -rf "$pkg"

# ---- run
mkdir -p "$BUILD/reliability" "$BUILD/fuzz-artifacts"
stats="{"
fail=0
for t in $TARGETS; do
  work=$BUILD/fuzz-work/$t
  mkdir -p "$work" "$SEEDS/$t"
  log=$BUILD/fuzz-$t.log
  echo "== fuzz $t: ${SECONDS_PER_TARGET}s"
  "$BUILD/conformance/fuzz/fuzz_$t" -max_total_time="$SECONDS_PER_TARGET" -timeout="$TIMEOUT_S" \
    -rss_limit_mb="$RSS_LIMIT_MB" -malloc_limit_mb="$MALLOC_LIMIT_MB" -dict=conformance/fuzz/expert.dict -print_final_stats=1 \
    -artifact_prefix="$BUILD/fuzz-artifacts/$t-" "$work" "conformance/fuzz/corpus/$t" "$SEEDS/$t" >"$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  if [ $rc -ne 0 ]; then
    fail=1
    echo "   FAILED (exit $rc): see $log; inputs in $BUILD/fuzz-artifacts/"
    grep -E "ERROR|SUMMARY|invariant" "$log" | head -5
  fi
  echo "   ${execs:-0} executions, coverage ${cov:-?}"
  stats+="\"$t\": {\"seconds\": $SECONDS_PER_TARGET, \"timeout_s\": $TIMEOUT_S, \"rss_limit_mb\": $RSS_LIMIT_MB, \"malloc_limit_mb\": $MALLOC_LIMIT_MB, \"executions\": ${execs:-0}, \"coverage\": ${cov:-0}, \"exit\": $rc},"
done
stats="${stats%,}}"
echo "$stats" > "$BUILD/reliability/fuzz.json"
exit $fail
