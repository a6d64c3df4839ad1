#!/usr/bin/python3
"""Conformance testee (conformance/PROTOCOL.md, version 1) for the independent
Python implementation of `.expert` v2 (expert_v2.py next to this file)."""

import hashlib
import json
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import expert_v2 as ex  # noqa: E402

NAME = "expert-python"
VERSION = "0.1.0"


def emit(obj):
    sys.stdout.write(json.dumps(obj, ensure_ascii=True) + "\n")
    sys.stdout.flush()


def cmd_capabilities(args):
    emit({"name": NAME, "version": VERSION, "protocol": 1, "read": True,
          "write": True, "verify_signature": True, "rebuild": True})
    return 0


def cmd_read(args):
    path = None
    key = None
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--key" and i + 1 < len(args):
            key = args[i + 1]
            i += 2
        elif a.startswith("--key="):
            key = a[len("--key="):]
            i += 1
        elif path is None:
            path = a
            i += 1
        else:
            sys.stderr.write("usage: read FILE [--key PUBLIC.pem]\n")
            return 2
    if path is None:
        sys.stderr.write("usage: read FILE [--key PUBLIC.pem]\n")
        return 2
    pub = None
    if key is not None:
        # The key is loaded before the file is opened (spec 12.3 does not order
        # BAD_KEY; see the report).
        try:
            pub = ex.load_public_key(key)
        except (ex.KeyError_, OSError) as e:
            sys.stderr.write("BAD_KEY: %s\n" % e)
            emit({"error": "BAD_KEY", "level": "full"})
            return 1
    try:
        desc = ex.read_path(path, pub)
    except ex.ExpertError as e:
        sys.stderr.write("rejected: %s\n" % e)
        emit({"error": e.cls, "level": e.level})
        return 1
    except MemoryError:
        emit({"error": "NOMEM", "level": "structural"})
        return 1
    except OSError as e:
        sys.stderr.write("IO: %s\n" % e)
        emit({"error": "IO", "level": "structural"})
        return 1
    emit(desc)
    return 0


def cmd_rebuild(args):
    if len(args) != 2:
        sys.stderr.write("usage: rebuild FILE NAME\n")
        return 2
    try:
        data = ex.rebuild_path(args[0], args[1])
    except ex.ExpertError as e:
        sys.stderr.write("rejected: %s\n" % e)
        emit({"error": e.cls, "level": e.level})
        return 1
    except OSError as e:
        sys.stderr.write("IO: %s\n" % e)
        emit({"error": "IO", "level": "structural"})
        return 1
    emit({"length": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    return 0


def _req_int(v, what, allow_none=False):
    if v is None and allow_none:
        return None
    if type(v) is not int:
        raise ex.WriteError("%s must be an integer" % what)
    return v


def cmd_write(args):
    if len(args) != 2:
        sys.stderr.write("usage: write REQUEST.json OUT\n")
        return 2
    req_path, out = args
    base = os.path.dirname(os.path.abspath(req_path))
    try:
        with open(req_path, "rb") as f:
            req = json.loads(f.read().decode("utf-8"))
        alignment = _req_int(req.get("alignment", 64), "alignment")
        frame_size = req.get("frame_size")
        frame_size = (1 << 20) if frame_size is None else _req_int(frame_size,
                                                                   "frame_size")
        metadata = req["metadata"]
        sections = []
        for k, s in enumerate(req.get("sections", [])):
            if "data_hex" in s and "data_file" in s:
                raise ex.WriteError("section %d: both data_hex and data_file" % k)
            if "data_hex" in s:
                data = bytes.fromhex(s["data_hex"])
            elif "data_file" in s:
                with open(os.path.join(base, s["data_file"]), "rb") as f:
                    data = f.read()
            else:
                raise ex.WriteError("section %d: no data" % k)
            if not isinstance(s.get("name"), str):
                raise ex.WriteError("section %d: name" % k)
            shape = s.get("shape")
            if not isinstance(shape, list):
                raise ex.WriteError("section %d: shape" % k)
            sections.append({
                "name": s["name"],
                "type": _req_int(s.get("type"), "type"),
                "codec": _req_int(s.get("codec", 0), "codec"),
                "dtype": _req_int(s.get("dtype"), "dtype"),
                "shape": [_req_int(d, "shape") for d in shape],
                "layer": _req_int(s.get("layer"), "layer", True),
                "module": _req_int(s.get("module"), "module", True),
                "flags": _req_int(s.get("flags", 0), "flags"),
                "data": data,
            })
        seed = None
        if req.get("signing_key") is not None:
            seed = ex.load_private_key(os.path.join(base, req["signing_key"]))
        ex.write_file(out, metadata, sections, alignment=alignment,
                      frame_size=frame_size, signing_seed=seed)
    except (ex.WriteError, ex.KeyError_, OSError, ValueError, KeyError,
            TypeError, OverflowError, MemoryError) as e:
        sys.stderr.write("write failed: %s: %s\n" % (type(e).__name__, e))
        return 1
    return 0


def main(argv):
    if len(argv) < 2:
        sys.stderr.write("usage: expert_testee.py capabilities|read|write|rebuild ...\n")
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "capabilities":
        return cmd_capabilities(args)
    if cmd == "read":
        return cmd_read(args)
    if cmd == "write":
        return cmd_write(args)
    if cmd == "rebuild":
        return cmd_rebuild(args)
    sys.stderr.write("unknown command %r\n" % cmd)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
