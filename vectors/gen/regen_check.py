#!/usr/bin/python3
"""Regenerates the vectors into a temporary directory and compares them with the committed tree.

usage: regen_check.py GENERATOR VECTORS_DIR SPEC_DIR

Exit 0 when every file is reproduced byte for byte. When files differ, prints exactly which, and:
- if this libzstd differs from the one the committed vectors were made with (manifest.json "zstd_version") and every
  difference is explained by it (compressed bytes of accept vectors whose decoded content, i.e. their expected
  description apart from the two file digests, is unchanged), exits 77 (skipped) after saying so;
- otherwise exits 1: the generator is not deterministic, or it (or the library it calls) changed without the
  vectors being regenerated.
"""
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile


def tree(root):
    out = set()
    for dirpath, _, files in os.walk(root):
        for fn in files:
            out.add(os.path.relpath(os.path.join(dirpath, fn), root))
    return out


def load(p):
    with open(p, "rb") as f:
        return f.read()


def strip_digests(desc):
    h = dict(desc["header"])
    h.pop("file_sha256", None)
    h.pop("structure_sha256", None)
    return {"header": h, "metadata": desc["metadata"], "sections": desc["sections"]}


def main():
    gen, committed, spec = sys.argv[1:4]
    tmp = tempfile.mkdtemp(prefix="expert-vectors-regen-")
    try:
        out = os.path.join(tmp, "vectors")
        r = subprocess.run([gen, out, spec], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        sys.stdout.write(r.stdout.decode("utf-8", "replace"))
        if r.returncode != 0:
            print("regeneration: the generator failed (exit %d)" % r.returncode)
            return 1
        mine = tree(out)
        theirs = {p for p in tree(committed) if p.split(os.sep)[0] in ("accept", "reject", "impl", "write", "keys")
                  or p in ("manifest.json", "README.md", "SHA256SUMS")}
        only_new = sorted(mine - theirs)
        only_old = sorted(theirs - mine)
        differ = sorted(p for p in mine & theirs
                        if not filecmp.cmp(os.path.join(out, p), os.path.join(committed, p), shallow=False))
        if not (only_new or only_old or differ):
            print("regeneration: all %d files reproduced byte for byte" % len(mine))
            return 0

        print("regeneration: the regenerated vectors differ from the committed ones:")
        for p in only_new:
            print("  new file (not committed): %s" % p)
        for p in only_old:
            print("  committed file no longer generated: %s" % p)
        for p in differ:
            print("  differs: %s" % p)

        try:
            z_old = json.loads(load(os.path.join(committed, "manifest.json")))["zstd_version"]
            z_new = json.loads(load(os.path.join(out, "manifest.json")))["zstd_version"]
        except (OSError, ValueError, KeyError):
            z_old = z_new = None
        if only_new or only_old or z_old == z_new:
            print("likely cause: the generator or the reference library changed (same libzstd %s), or the generator "
                  "is not deterministic. If the change is deliberate, regenerate (ninja -C BUILD vectors-regenerate) "
                  "and commit the whole vectors/ tree." % z_new)
            return 1

        unexplained = []
        for p in differ:
            if p in ("manifest.json", "README.md", "SHA256SUMS"):
                continue  # they name the zstd version and list the digests of the files below
            if p.startswith("accept" + os.sep) and (p.endswith(".expert") or p.endswith(".json")):
                stem = p[: -len(".expert")] if p.endswith(".expert") else p[: -len(".json")]
                try:
                    a = strip_digests(json.loads(load(os.path.join(committed, stem + ".json"))))
                    b = strip_digests(json.loads(load(os.path.join(out, stem + ".json"))))
                except (OSError, ValueError, KeyError):
                    a, b = 0, 1
                if a == b:
                    continue
            unexplained.append(p)
        if unexplained:
            print("likely cause: libzstd %s here, the committed vectors were made with libzstd %s; but these "
                  "differences are not explained by compressed bytes alone:" % (z_new, z_old))
            for p in unexplained:
                print("  %s" % p)
            return 1
        print("likely cause: libzstd %s here, the committed vectors were made with libzstd %s. Every difference is "
              "in zstd-compressed bytes of reference-writer accept vectors (and the digests that cover them); their "
              "decoded content is identical. The committed vectors remain the truth (their digests are checked "
              "separately); regenerate with libzstd %s to reproduce them byte for byte." % (z_new, z_old, z_old))
        return 77
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
