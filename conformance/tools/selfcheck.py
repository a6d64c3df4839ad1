#!/usr/bin/python3
"""Self-check of the conformance runner: a deliberately faulty testee must be reported as failing exactly the
vectors its fault concerns.

usage: selfcheck.py FAULT RUNNER TESTEE_BIN VECTORS_DIR [XFAIL]

XFAIL is the reference testee's expected-failure list (library bugs the faulty testee shares).

FAULT is one of the C testee's --fault modes. The expected failures are derived from the manifest:
  ignore-section-hash  the reject vectors whose class is SECTION_HASH_MISMATCH (the testee accepts them);
  accept-truncated     the reject vectors whose class is TRUNCATED (the testee accepts them);
  misdecode-shuffle    the accept vectors tagged "shuffle-sensitive" (a shuffle+zstd section whose bytes change when
                       shuffled again), and tagged reject vectors whose defect is only found at full level.
Passes when the runner exits 1 (failures found), its self-check reports an exact match, and every failure is of
the kind the fault causes (an accepted reject vector, or a valid shuffle file rejected with SECTION_HASH_MISMATCH).
"""
import json
import os
import subprocess
import sys
import tempfile


def expected(fault, vectors):
    out = []
    for v in vectors:
        tags = v.get("tags", [])
        if fault == "ignore-section-hash":
            ok = v["group"] == "reject" and v.get("error") == "SECTION_HASH_MISMATCH"
        elif fault == "accept-truncated":
            ok = v["group"] == "reject" and v.get("error") == "TRUNCATED"
        elif fault == "misdecode-shuffle":
            ok = "shuffle-sensitive" in tags and (v["group"] == "accept" or
                                                  (v["group"] == "reject" and v.get("level") == "full"))
        else:
            raise SystemExit("unknown fault %s" % fault)
        if ok:
            out.append(v["name"])
    return out


REASON = {
    "ignore-section-hash": "accepted; expected SECTION_HASH_MISMATCH",
    "accept-truncated": "accepted; expected TRUNCATED",
    "misdecode-shuffle": "rejected a valid file: SECTION_HASH_MISMATCH at level access",
}


def main():
    fault, runner, testee, vectors_dir = sys.argv[1:5]
    xfail = sys.argv[5] if len(sys.argv) > 5 else None
    with open(os.path.join(vectors_dir, "manifest.json"), "rb") as f:
        manifest = json.loads(f.read())
    exp = expected(fault, manifest["vectors"])
    if not exp:
        print("selfcheck: no vector concerns fault %s: the vectors cannot catch it" % fault)
        return 1
    with tempfile.TemporaryDirectory(prefix="expert-selfcheck-") as tmp:
        lst = os.path.join(tmp, "expected.txt")
        with open(lst, "w") as f:
            f.write("\n".join(exp) + "\n")
        res = os.path.join(tmp, "results.json")
        cmd = [sys.executable, runner, "--testee", "%s --fault %s" % (testee, fault), "--vectors", vectors_dir,
               "--reference", testee, "--expect-failures", "@" + lst, "--json", res, "--quiet"]
        if xfail:
            cmd += ["--xfail", xfail]
        r = subprocess.run(cmd)
        if r.returncode == 1:
            with open(res) as f:
                doc = json.load(f)
            sc = doc["self_check"]
            wrong = [r for r in doc["results"] if r["status"] == "FAIL" and not r["reason"].startswith(REASON[fault])]
            for r in wrong:
                print("selfcheck: %s failed for another reason than the fault: %s" % (r["name"], r["reason"]))
            if sc and sc["ok"] and not wrong:
                print("selfcheck: the runner caught fault %s on exactly the %d expected vectors" % (fault, len(exp)))
                return 0
        print("selfcheck: FAILED for fault %s (runner exit %d)" % (fault, r.returncode))
        return 1


if __name__ == "__main__":
    sys.exit(main())
