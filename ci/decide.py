#!/usr/bin/python3
"""ci/decide.py — the decision job (run it through `bash ci/decide`).

Runs, in order, every stage the go/no-go report needs, each writing JSON
into the work directory, then `ci/decision-report` turns that JSON into
reports/decision.md and reports/decision.html:

  build            gcc build (tests, testees, tools) + release build (bench)
  conformance-c    conformance/run, the C testee, every vector
  conformance-py   conformance/run, the Python testee (written from the spec)
  corruption       the corruption suite (meson test corruption)
  bench            bench/run --quick (full: bench/run), load times and sizes
  compat           v1 -> v2 -> files byte-exact, v2 -> v1 -> files, v1 auto-detected
  ab               quality/ab/run on the CI plan (full: on the pre-registered plan)
  vram             gpu/vram-report (measured with a GPU, else predicted, labelled)
  sizes            bench/sizes (full only)

A stage that fails is recorded as failed and the job goes on; the report
shows what is missing. Exit status: 0 every stage ran and the report was
written; 1 the report was written but a stage failed or an input is
missing (the report says which); 2 usage, or the report could not be
written.
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = "/usr/bin/python3"
PACKAGES = ("libzstd1", "libssl3", "libjansson4", "libarchive13", "zlib1g", "libbenchmark1debian",
            "libhwloc15", "libopenblas0-pthread", "liblapacke", "python3-numpy", "python3-scipy",
            "python3-matplotlib", "dataset-fashion-mnist", "mariadb-test-data", "chromium", "gcc", "clang")


def log(msg):
    print(msg, flush=True)


COMMANDS = []  # the running stage's commands, as a person would type them in the checkout


def shown(cmd):
    return " ".join(c.replace(ROOT + "/", "") if c.startswith(ROOT + "/") else c for c in cmd)


def sh(cmd, logf, cwd=ROOT, env=None):
    COMMANDS.append(shown(cmd))
    with open(logf, "a") as f:
        f.write("$ %s\n" % " ".join(cmd))
        f.flush()
        return subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode


class Job:
    def __init__(self, work, full):
        self.work = work
        self.full = full
        self.stages = {}
        self.order = []

    def stage(self, name, what, fn):
        k = len(self.order) + 1
        self.order.append(name)
        logf = os.path.join(self.work, "logs", name + ".log")
        if os.path.exists(logf):
            os.unlink(logf)
        log("== [%d] %s: %s" % (k, name, what))
        t0 = time.time()
        del COMMANDS[:]
        try:
            rec = fn(logf) or {}
        except StageError as e:
            rec = {"status": "failed", "reason": str(e)}
        rec.setdefault("status", "ok")
        rec["seconds"] = round(time.time() - t0, 1)
        rec["log"] = os.path.relpath(logf, self.work)
        rec["what"] = what
        rec["commands"] = list(COMMANDS)
        self.stages[name] = rec
        log("   %s in %.0f s%s" % (rec["status"], rec["seconds"],
                                   ": " + rec["reason"] if rec.get("reason") else ""))
        return rec["status"] == "ok"


class StageError(Exception):
    pass


def need(rc, what):
    if rc != 0:
        raise StageError("%s exited with status %d" % (what, rc))


def git(*args):
    r = subprocess.run(["git", "-C", ROOT] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True)
    return r.stdout.strip() if r.returncode == 0 else ""


def provenance(full):
    pk = {}
    for p in PACKAGES:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", p], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
        pk[p] = r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else None
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    return {"commit": git("rev-parse", "HEAD") or "unknown", "checkout": ROOT,
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": {"cpu": cpu, "cores": os.cpu_count(), "system": platform.platform()},
            "packages": pk, "command": "bash ci/decide" + (" --full" if full else "")}


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def compat_check(cli, v1, adapter_dir, work, logf):
    """What a user converting v1 experts keeps: v1 opened by auto-detection,
    v1 -> v2 -> every package file byte-exact, v2 -> v1 -> the same files."""
    d = os.path.join(work, "compat")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    v2 = os.path.join(d, "converted.expert")
    back = os.path.join(d, "rollback.v1.expert")
    out = {"package": os.path.basename(v1), "checks": []}

    def check(name, ok, detail):
        out["checks"].append({"check": name, "ok": bool(ok), "detail": detail})

    COMMANDS.append(shown([cli, "inspect", v1, "--json", "--no-sections"]))
    r = subprocess.run([cli, "inspect", v1, "--json", "--no-sections"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    check("v1 package opened by format auto-detection (`expert-cli inspect`)", r.returncode == 0,
          "exit %d" % r.returncode)
    rc = sh([cli, "convert", v1, v2, "--force", "--quiet"], logf)
    check("`expert-cli convert` v1 -> v2", rc == 0, "exit %d" % rc)
    originals = {n: sha256_file(os.path.join(adapter_dir, n)) for n in sorted(os.listdir(adapter_dir))}
    if rc == 0:
        xd = os.path.join(d, "extracted")
        rc2 = sh([cli, "extract", v2, "-o", xd, "--quiet"], logf)
        got = {}
        if rc2 == 0:
            for base, _, names in os.walk(xd):
                for n in names:
                    p = os.path.join(base, n)
                    got[os.path.relpath(p, xd)] = sha256_file(p)
        same = [n for n in originals if got.get(n) == originals[n]]
        check("every package file extracted from the v2 file byte-exact (SHA-256)",
              rc2 == 0 and len(same) == len(originals),
              "%d of %d files identical" % (len(same), len(originals)))
        rc3 = sh([cli, "convert", v2, back, "--to", "v1", "--force", "--quiet"], logf)
        entries = {}
        if rc3 == 0:
            with tarfile.open(back, "r:gz") as t:
                for m in t.getmembers():
                    if m.isfile():
                        entries[m.name.removeprefix("./")] = hashlib.sha256(t.extractfile(m).read()).hexdigest()
        same_back = [n for n in originals if entries.get(n) == originals[n]]
        check("rollback v2 -> v1: every file back byte-exact", rc3 == 0 and len(same_back) == len(originals),
              "%d of %d files identical" % (len(same_back), len(originals)))
    out["files"] = len(originals)
    out["ok"] = all(c["ok"] for c in out["checks"])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true",
                    help="the full benchmark, the pre-registered A/B plan (about 20 min) and the size study")
    ap.add_argument("--work", default=os.path.join(ROOT, "build", "decision"),
                    help="stage outputs (default build/decision)")
    ap.add_argument("--out", default=os.path.join(ROOT, "reports"),
                    help="where decision.md, decision.html and decision/ go (default reports)")
    ap.add_argument("--skip", default="", help="comma-separated stages not to run (shown as not run)")
    a = ap.parse_args()
    work = os.path.abspath(a.work)
    os.makedirs(os.path.join(work, "logs"), exist_ok=True)
    skip = {s for s in a.skip.split(",") if s}
    job = Job(work, a.full)
    t_start = time.time()
    build, bench_build = os.path.join(ROOT, "build"), os.path.join(ROOT, "build-bench")
    cli = os.path.join(build, "ref", "expert-cli")
    testee = os.path.join(build, "conformance", "expert-testee")

    def skipped(name):
        return {"status": "not run", "reason": "--skip %s" % name}

    def st_build(logf):
        for d, args in ((build, []), (bench_build, ["-Dbuildtype=release", "-Dtests=disabled",
                                                     "-Dquality=disabled", "-Dcuda=disabled"])):
            if not os.path.exists(os.path.join(d, "build.ninja")):
                need(sh(["meson", "setup", d] + args, logf), "meson setup " + os.path.basename(d))
            need(sh(["ninja", "-C", d], logf), "ninja -C " + os.path.basename(d))
        return {}

    def st_conformance(testee_cmd, out_name, xfail):
        def run(logf):
            out = os.path.join(work, out_name)
            cmd = [PY, "conformance/run", "--testee", testee_cmd, "--reference", testee,
                   "--vectors", "vectors", "--json", out]
            if xfail:
                cmd += ["--xfail", "conformance/xfail-c.txt"]
            rc = sh(cmd, logf)
            if not os.path.exists(out):
                raise StageError("the runner wrote no JSON (exit %d)" % rc)
            return {"json": out_name, "exit": rc,
                    **({"status": "failed", "reason": "vectors failed (exit %d)" % rc} if rc else {})}
        return run

    def st_corruption(logf):
        rc = sh(["meson", "test", "-C", build, "--no-rebuild", "corruption"], logf)
        src = os.path.join(build, "reliability", "corruption.json")
        if not os.path.exists(src):
            raise StageError("no corruption.json (meson test exit %d)" % rc)
        shutil.copy(src, os.path.join(work, "corruption.json"))
        return {"json": "corruption.json", "exit": rc,
                **({"status": "failed", "reason": "meson test corruption exit %d" % rc} if rc else {})}

    def st_bench(logf):
        out = os.path.join(work, "bench.json")
        cmd = [PY, "bench/run", "--build-dir", bench_build, "--out", out, "--quiet",
               "--machine-label", "decision job"]
        if not a.full:
            cmd += ["--quick", "--repetitions", "5"]
        need(sh(cmd, logf), "bench/run")
        return {"json": "bench.json"}

    def st_compat(logf):
        data = os.path.join(bench_build, "bench-work", "data", "dora-r12-f32")
        v1 = os.path.join(data, "dora-r12-f32.v1.expert")
        if not os.path.exists(v1):
            raise StageError("the bench dataset (its v1 package) is missing: the bench stage failed?")
        doc = compat_check(cli, v1, os.path.join(data, "adapter"), work, logf)
        with open(os.path.join(work, "compat.json"), "w") as f:
            json.dump(doc, f, indent=1)
        return {"json": "compat.json",
                **({} if doc["ok"] else {"status": "failed", "reason": "a compatibility check failed"})}

    def st_ab(logf):
        plan = "quality/ab/plan.json" if a.full else "quality/ab/plan-ci.json"
        rdir = os.path.join(work, "ab")
        need(sh([PY, "quality/ab/run", "--plan", plan, "--build-dir", build, "--work",
                 os.path.join(work, "ab-work"), "--report-dir", rdir, "--jobs", str(os.cpu_count() or 2),
                 "--fresh", "-q"], logf), "quality/ab/run")
        shutil.copy(os.path.join(rdir, "quality.json"), os.path.join(work, "ab.json"))
        return {"json": "ab.json", "plan": plan}

    def st_vram(logf):
        vd = os.path.join(work, "vram")
        need(sh([PY, "gpu/vram-report", "--build", build, "--out", vd, "--json-only", "-q"], logf),
             "gpu/vram-report")
        shutil.copy(os.path.join(vd, "vram.json"), os.path.join(work, "vram.json"))
        return {"json": "vram.json"}

    def st_sizes(logf):
        need(sh([PY, "bench/sizes", "--build-dir", bench_build, "--out", os.path.join(work, "sizes.json")],
                logf), "bench/sizes")
        return {"json": "sizes.json"}

    stages = [
        ("build", "gcc build (library, CLI, testees, tools) and release build (benchmarks)", st_build),
        ("conformance-c", "the conformance runner on the C testee, every vector",
         st_conformance(testee, "conformance-c.json", True)),
        ("conformance-py", "the conformance runner on the Python testee (written from the spec alone)",
         st_conformance(PY + " conformance/testees/python/expert_testee.py", "conformance-py.json", False)),
        ("corruption", "the corruption suite: every truncation, bit flip and field attack on valid files",
         st_corruption),
        ("bench", "load benchmark (%s): v1 vs v2, hot and cold, and sizes" % ("full" if a.full else "quick"),
         st_bench),
        ("compat", "backward compatibility: v1 auto-detected, v1 -> v2 -> v1 byte-exact", st_compat),
        ("ab", "OSD vs LoRA A/B (%s)" % ("the pre-registered plan" if a.full else
                                        "the CI plan: the pipeline end to end, its numbers are not results"),
         st_ab),
        ("vram", "VRAM per expert (measured with a GPU, else the loader's exact prediction)", st_vram),
    ]
    if a.full:
        stages.append(("sizes", "the lossless size study (levels, frame sizes, entropy floor)", st_sizes))
    built = True
    for name, what, fn in stages:
        if name in skip:
            job.stage(name, what, lambda logf, n=name: skipped(n))
            continue
        if not built and name != "build":
            job.stage(name, what, lambda logf: {"status": "not run", "reason": "the build failed"})
            continue
        ok = job.stage(name, what, fn)
        if name == "build" and not ok:
            built = False
    doc = {"schema": 1, "full": a.full, "provenance": provenance(a.full), "order": job.order,
           "stages": job.stages, "wall_seconds": round(time.time() - t_start, 1)}
    with open(os.path.join(work, "stages.json"), "w") as f:
        json.dump(doc, f, indent=1)
    log("== report: ci/decision-report %s --out %s" % (os.path.relpath(work, ROOT), os.path.relpath(a.out, ROOT)))
    r = subprocess.run([PY, os.path.join(ROOT, "ci", "decision-report"), work, "--out", a.out])
    if r.returncode not in (0, 1):
        sys.exit(2)
    failed = [n for n in job.order if job.stages[n]["status"] != "ok"]
    log("== done in %.0f s%s" % (time.time() - t_start,
                                 "; not ok: " + ", ".join(failed) if failed else ""))
    sys.exit(1 if failed or r.returncode == 1 else 0)


if __name__ == "__main__":
    main()
