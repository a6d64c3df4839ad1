#!/bin/sh
# Installs the library into a scratch prefix, builds the examples there with
# pkg-config alone (as a user of the installed library would), and runs them
# on a golden vector; the tensor's float sum is checked against one computed
# by Python from `expert-cli get`.
# Usage: check.sh BUILD_DIR SOURCE_ROOT
set -eu
build=$1 src=$2
for tool in pkg-config cc; do
    command -v $tool >/dev/null 2>&1 || { echo "SKIPPED: $tool not installed"; exit 77; }
done
stage=$(mktemp -d "${TMPDIR:-/tmp}/examples.XXXXXX")
trap 'rm -rf "$stage"' EXIT
meson install -C "$build" --no-rebuild --quiet --destdir "$stage" >/dev/null
pc=$(find "$stage" -name expert.pc | head -n 1)
[ -n "$pc" ] || { echo "meson install wrote no expert.pc"; exit 1; }
export PKG_CONFIG_PATH="$(dirname "$pc")"
prefix=$(pkg-config --variable=prefix expert)
flags="--define-variable=prefix=$stage$prefix"
cflags=$(pkg-config $flags --cflags expert)
libs=$(pkg-config $flags --libs expert)
libdir=$(pkg-config $flags --variable=libdir expert)
for ex in read_tensor stream_layers; do
    cc -std=c11 -Wall -Wextra -Werror $cflags "$src/examples/$ex.c" $libs -o "$stage/$ex"
done
file="$src/vectors/accept/peft-package.expert"
name=base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight
out=$(LD_LIBRARY_PATH="$libdir" "$stage/read_tensor" "$file" "$name")
echo "$out"
LD_LIBRARY_PATH="$libdir" "$build/ref/expert-cli" get "$file" "$name" -o "$stage/t.bin"
want=$(/usr/bin/python3 -c "import struct,sys; b=open(sys.argv[1],'rb').read(); print('%.9g' % sum(struct.unpack('<%df' % (len(b)//4), b)))" "$stage/t.bin")
case "$out" in
    *"[2, 8], 16 floats, sum $want") ;;
    *) echo "read_tensor printed '$out', expected shape [2, 8], 16 floats, sum $want"; exit 1 ;;
esac
layers=$(LD_LIBRARY_PATH="$libdir" "$stage/stream_layers" "$file")
echo "$layers"
[ "$(echo "$layers" | head -n 1)" = "layer 0: 2 sections, 112 bytes" ] || { echo "unexpected first layer"; exit 1; }
echo "ok: examples built from the installed library with pkg-config and ran"
