#!/bin/sh
# expert-cli validate --write-mark / --mark / --level load, end to end:
# a fresh file cannot be marked, a settled one can, the mark is accepted
# while the file is unchanged and not after a same-size modification, which
# is then caught by the section hashes.
set -eu
CLI=$1
GEN=$2
dir=$(mktemp -d "${TMPDIR:-/tmp}/cli-mark.XXXXXX")
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$GEN" "$dir/src" > /dev/null
"$CLI" pack "$dir/src" -o "$dir/f.expert" --codec raw > /dev/null
rc=0; "$CLI" validate "$dir/f.expert" --write-mark "$dir/m" > /dev/null 2>&1 || rc=$?
[ "$rc" = 3 ] || fail "marking a file written just now: exit $rc, want 3 (INVALID_ARGUMENT)"
[ ! -e "$dir/m" ] || fail "a refused mark left a file"
rc=0; "$CLI" validate "$dir/f.expert" --level access --write-mark "$dir/m" > /dev/null 2>&1 || rc=$?
[ "$rc" = 64 ] || fail "--write-mark without --level full: exit $rc, want 64"
sleep 3
"$CLI" validate "$dir/f.expert" --write-mark "$dir/m" > /dev/null
[ "$(wc -c < "$dir/m")" -eq 128 ] || fail "the mark is not 128 bytes"
out=$("$CLI" validate "$dir/f.expert" --level load --threads 2 --mark "$dir/m" --json)
echo "$out" | grep -q '"mark":"accepted"' || fail "mark not accepted on the unchanged file: $out"
out=$("$CLI" validate "$dir/f.expert" --level load --repeat 3 --mark "$dir/m" --json)
echo "$out" | grep -q '"mark":"accepted"' || fail "timing run: $out"
# one byte in the middle of the file (a tensor section), same size
size=$(wc -c < "$dir/f.expert")
printf 'Z' | dd of="$dir/f.expert" bs=1 seek=$((size / 2)) conv=notrunc 2> /dev/null
rc=0; out=$("$CLI" validate "$dir/f.expert" --level load --mark "$dir/m" --json) || rc=$?
echo "$out" | grep -q 'SECTION_HASH_MISMATCH' || fail "modified file: $out"
[ "$rc" = 32 ] || fail "modified file: exit $rc, want 32"
head -c 100 "$dir/m" > "$dir/short"
rc=0; "$CLI" validate "$dir/f.expert" --mark "$dir/short" > /dev/null 2>&1 || rc=$?
[ "$rc" = 3 ] || fail "a 100-byte mark: exit $rc, want 3"
echo "cli mark: OK"
