#!/bin/sh
# Every symbol libexpert exports is public API: an expert_* function declared
# with EXPERT_API in the installed headers, and each of those is exported.
# Usage: check_exports.sh LIBEXPERT.so INCLUDE_DIR
set -eu
lib=$1 inc=$2
if ! command -v nm >/dev/null 2>&1; then
    echo "SKIPPED: nm not installed"; exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/exports.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# defined, global, in text/data: the ELF's dynamic symbol table
nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' | sed 's/@.*//' |
    grep -v -x -e _init -e _fini -e _edata -e _end -e __bss_start | sort -u >"$tmp/exported"
grep -ho '^EXPERT_API[^(]*(' "$inc"/*.h | grep -o 'expert_[a-z0-9_]*($' | tr -d '(' | sort -u >"$tmp/declared"
status=0
extra=$(comm -23 "$tmp/exported" "$tmp/declared")
missing=$(comm -13 "$tmp/exported" "$tmp/declared")
if [ -n "$extra" ]; then
    echo "exported but not public API:"; echo "$extra" | sed 's/^/  /'; status=1
fi
if [ -n "$missing" ]; then
    echo "declared EXPERT_API but not exported:"; echo "$missing" | sed 's/^/  /'; status=1
fi
[ $status -eq 0 ] && echo "ok: $(wc -l <"$tmp/exported") symbols exported, all public API"
exit $status
