#!/usr/bin/python3
"""Checks vectors/SHA256SUMS: every listed file has its digest, and every file of the vector tree is listed.

usage: check_digests.py VECTORS_DIR
"""
import hashlib
import os
import sys

TREE = ("accept", "reject", "impl", "write", "keys")
TOP = ("manifest.json", "README.md")


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    sums = os.path.join(root, "SHA256SUMS")
    listed = {}
    with open(sums, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            digest, sep, name = line.partition("  ")
            if not sep or len(digest) != 64:
                print("SHA256SUMS:%d: malformed line" % n)
                return 1
            listed[name] = digest
    bad = []
    for name, digest in sorted(listed.items()):
        p = os.path.join(root, name)
        try:
            with open(p, "rb") as f:
                got = hashlib.sha256(f.read()).hexdigest()
        except OSError as e:
            bad.append("%s: missing (%s)" % (name, e.strerror))
            continue
        if got != digest:
            bad.append("%s: digest %s, SHA256SUMS says %s" % (name, got, digest))
    present = set(n for n in TOP if os.path.exists(os.path.join(root, n)))
    for d in TREE:
        for dirpath, _, files in os.walk(os.path.join(root, d)):
            for fn in files:
                present.add(os.path.relpath(os.path.join(dirpath, fn), root))
    for name in sorted(present - set(listed)):
        bad.append("%s: not listed in SHA256SUMS (stray file)" % name)
    if bad:
        print("vector digests: %d problem(s):" % len(bad))
        for b in bad:
            print("  " + b)
        print("The committed bytes are the truth: restore the files (git checkout vectors/) or, after a deliberate "
              "change to the generator, regenerate the whole tree (ninja vectors-regenerate) and commit it.")
        return 1
    print("vector digests: %d files match SHA256SUMS" % len(listed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
