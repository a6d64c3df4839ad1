#!/usr/bin/python3
"""Self-tests for expert_v2.py / expert_testee.py.

Run: /usr/bin/python3 conformance/testees/python/selftest.py
Writes requests through the testee, reads them back, and hand-crafts
single-defect files (hashes re-fixed so only the intended defect remains)."""

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import expert_v2 as ex  # noqa: E402

TESTEE = ["/usr/bin/python3", os.path.join(HERE, "expert_testee.py")]
EXAMPLE = os.path.join(HERE, "..", "..", "..", "specs", "binary-format", "example.expert")
FAILS = []


def run(*args):
    p = subprocess.run(TESTEE + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def check(name, cond, detail=""):
    if cond:
        print("ok   %s" % name)
    else:
        print("FAIL %s %s" % (name, detail))
        FAILS.append(name)


# ---------------------------------------------------------------------------
# raw crafting (canonical layout, arbitrary field values, no validation)

def craft(md_bytes=None, md=None, entries=(), alignment=64, md_frame=None,
          strings=None, index=None, extra_tail=b"", sig=None):
    """entries: list of dicts with name(bytes), type, codec, dtype, dims(list of
    rank), layer, module, frame_size, stored(bytes), decoded(bytes) and optional
    overrides: rank, res11, flags, res28, res120, offset, stored_length,
    decoded_length, sha, name_offset, name_length, dims4."""
    if md_bytes is None:
        md_bytes = json.dumps(md, separators=(",", ":")).encode()
    if md_frame is None:
        md_frame = ex.zstd_compress_frame(md_bytes)
    out = bytearray(256)
    cursor = 256
    toc = bytearray()
    noff = 0
    names = []
    for en in entries:
        stored = en["stored"]
        if len(stored) == 0:
            off = 0
        else:
            off = -(-cursor // alignment) * alignment
            out += b"\x00" * (off - cursor)
            out += stored
            cursor = off + len(stored)
        dims = list(en.get("dims4", list(en["dims"]) + [0] * (4 - len(en["dims"]))))
        name = en["name"]
        toc += ex.TOC_STRUCT.pack(
            en.get("name_offset", noff), en.get("name_length", len(name)),
            en["type"], en.get("codec", 0), en["dtype"],
            en.get("rank", len(en["dims"])), en.get("res11", 0), en.get("flags", 0),
            en.get("layer", ex.NONE32), en.get("module", ex.NONE32),
            en.get("frame_size", 0), en.get("res28", 0), en.get("offset", off),
            en.get("stored_length", len(stored)),
            en.get("decoded_length", len(en["decoded"])),
            dims[0], dims[1], dims[2], dims[3],
            en.get("sha", hashlib.sha256(en["decoded"]).digest()),
            en.get("res120", b"\x00" * 8))
        names.append(name)
        noff += len(name)
    if strings is None:
        strings = b"".join(names)
    if index is None:
        index = ex.build_index(names)
    offs = []
    for blob in (md_frame, bytes(toc), index):
        o = -(-cursor // 8) * 8
        out += b"\x00" * (o - cursor)
        out += blob
        offs.append(o)
        cursor = o + len(blob)
    str_off = cursor
    out += strings
    out += extra_tail
    flen = len(out)
    out[0:8] = ex.MAGIC
    struct.pack_into("<HHII", out, 8, 2, 0, 256, len(entries))
    struct.pack_into("<III", out, 0x74, alignment, 0, 128)
    struct.pack_into("<9Q", out, 0xA0, offs[0], len(md_frame), len(md_bytes), offs[1],
                     offs[2], len(index), str_off, len(strings), flen)
    return refix(out, sig=sig)


def refix(buf, sig=None):
    """Recompute file_sha256 and structure_sha256 from the current fields."""
    buf = bytearray(buf)
    hs = struct.unpack_from("<I", buf, 0x0C)[0]
    tc = struct.unpack_from("<I", buf, 0x10)[0]
    mo, ml, _, to, io, il, so, sl, fl = struct.unpack_from("<9Q", buf, 0xA0)
    buf[0x14:0x34] = ex.file_digest(buf, len(buf))
    try:
        regs = (bytes(buf[mo:mo + ml]), bytes(buf[to:to + 128 * tc]),
                bytes(buf[io:io + il]), bytes(buf[so:so + sl]))
        buf[0x80:0xA0] = ex.structure_digest(bytes(buf[0:min(hs, len(buf))]), regs)
    except Exception:
        pass
    if sig is not None:
        buf[0x34:0x74] = ex.ed25519_sign(sig, ex.SIGN_TAG + bytes(buf[0x80:0xA0]))
    return bytes(buf)


def f32(*vals):
    return struct.pack("<%df" % len(vals), *vals)


def base_md(modules=(), **kw):
    d = {"format": "expert-v2", "name": "t", "version": "1", "modules": list(modules)}
    d.update(kw)
    return d


LORA_MOD = {"path": "m.layers.0.q", "type": "lora", "layer": 0, "r": 1, "alpha": 2,
            "rslora": False}


def lora_entries(codec=0):
    a = f32(1, 2)
    b = f32(3, 4)
    es = []
    for nm, ty, data, dims in ((b"m.layers.0.q.lora_A.weight", 0x10, a, [1, 2]),
                               (b"m.layers.0.q.lora_B.weight", 0x11, b, [2, 1])):
        es.append(dict(name=nm, type=ty, dtype=1, dims=dims, layer=0, module=0,
                       stored=data, decoded=data))
    return es


def framed(data, e, codec=1, F=65536):
    st = b"".join(ex._encode_section(data, codec, F, e))
    return st


def expect(name, blob, cls, level=None, key=None):
    d = tempfile.mkdtemp()
    try:
        p = os.path.join(d, "f.expert")
        with open(p, "wb") as f:
            f.write(blob)
        args = ["read", p] + (["--key", key] if key else [])
        rc, out, err = run(*args)
        if cls is None:
            check(name, rc == 0, "rc=%d %s %s" % (rc, out[:200], err[-300:]))
            return json.loads(out) if rc == 0 else None
        try:
            got = json.loads(out)
        except ValueError:
            got = {}
        ok = rc == 1 and got.get("error") == cls and (level is None or
                                                       got.get("level") == level)
        check(name + " -> " + cls + (" @" + level if level else ""), ok,
              "rc=%d got %s %s" % (rc, out.strip(), err.strip()[-200:]))
    finally:
        shutil.rmtree(d)


# ---------------------------------------------------------------------------

def test_example():
    with open(EXAMPLE, "rb") as f:
        ex_bytes = f.read()
    d = expect("example accepted", ex_bytes, None)
    check("example sha", d and d["header"]["structure_sha256"].startswith("7a3ce998"))


def test_writer(tmp):
    rng = __import__("random").Random(1)
    keyp = os.path.join(tmp, "k.pem")
    pubp = os.path.join(tmp, "kpub.pem")
    subprocess.check_call(["openssl", "genpkey", "-algorithm", "ed25519", "-out", keyp])
    subprocess.check_call(["openssl", "pkey", "-in", keyp, "-pubout", "-out", pubp])
    big = bytes(rng.getrandbits(8) for _ in range(65536 * 3 + 1000))
    big = bytes(b & 0x0F for b in big)  # compressible
    with open(os.path.join(tmp, "big.bin"), "wb") as f:
        f.write(big[:len(big) // 4 * 4])

    def sec(name, ty, codec, dtype, shape, data, layer=None, module=None):
        return {"name": name, "type": ty, "codec": codec, "dtype": dtype,
                "shape": shape, "layer": layer, "module": module, "flags": 0,
                "data_hex": b"".hex() if data is None else data.hex()}

    mods = [
        {"path": "m.layers.0.q", "type": "lora", "layer": 0, "r": 2, "alpha": 4,
         "rslora": False, "in_features": 3, "out_features": 2},
        {"path": "m.layers.1.q", "type": "dora", "layer": 1, "r": 1, "alpha": 1.5,
         "rslora": True},
        {"path": "m.layers.2.mlp", "type": "ia3", "layer": 2, "feedforward": True},
        {"path": "m.osd", "type": "osd", "layer": None, "rank": 1,
         "sparse_format": "csr", "in_features": 3, "out_features": 2},
    ]
    md = base_md(mods, description="selftest", adapter_config="adapter_config.json",
                 extra={"x": [1, {"y": None}]}, base_model={"name": "b", "sha256": ""})
    i32 = lambda *v: struct.pack("<%di" % len(v), *v)  # noqa: E731
    i64 = lambda *v: struct.pack("<%dq" % len(v), *v)  # noqa: E731
    for codec in (0, 1, 2):
        for al in (64, 256, 4096):
            secs = [
                sec("m.layers.0.q.lora_A.weight", 0x10, codec, 1, [2, 3], f32(*range(6)), 0, 0),
                sec("m.layers.0.q.lora_B.weight", 0x11, codec, 2, [2, 2], b"\x01\x3c" * 4, 0, 0),
                sec("m.layers.1.q.lora_A.weight", 0x10, codec, 3, [1, 4], b"\x80\x3f" * 4, 1, 1),
                sec("m.layers.1.q.lora_B.weight", 0x11, codec, 4, [5, 1], struct.pack("<5d", *range(5)), 1, 1),
                sec("m.layers.1.q.lora_magnitude_vector", 0x12, codec, 1, [1, 5], f32(*range(5)), 1, 1),
                sec("m.layers.2.mlp.ia3_l", 0x13, codec, 2, [1, 7], b"\x00\x3c" * 7, 2, 2),
                sec("m.osd.U", 0x20, codec, 1, [2, 1], f32(1, 2), None, 3),
                sec("m.osd.S", 0x21, codec, 1, [1], f32(3), None, 3),
                sec("m.osd.Vt", 0x22, codec, 1, [1, 3], f32(1, 2, 3), None, 3),
                sec("m.osd.indptr", 0x23, codec, 9, [3], i32(0, 2, 3), None, 3),
                sec("m.osd.indices", 0x24, codec, 11, [3], i64(0, 2, 1), None, 3),
                sec("m.osd.values", 0x25, codec, 1, [3], f32(1, 1, 1), None, 3),
                sec("adapter_config.json", 0x01, codec, 0, [2], b"{}"),
                sec("tokenizer/empty.txt", 0x01, codec, 0, [0], b""),
                sec("scalar", 0x3F, codec, 12, [], struct.pack("<Q", 7)),
                sec("empty4d", 0x3F, codec, 5, [2, 0, 3, 1], b""),
                sec("boolz", 0x3F, codec, 13, [3], b"\x00\x01\x02"),
                sec("vendor.blob", 0x8123, codec, 7, [2], b"\x01\x02\x03\x04"),
                sec("prompt", 0x30, codec, 1, [1, 2], f32(0.5, -0.5), None, 2),
                sec("m.big", 0x3F, codec, 10, [len(big) // 4], None, None, None),
            ]
            secs[-1].pop("data_hex")
            secs[-1]["data_file"] = "big.bin"
            req = {"alignment": al, "frame_size": 65536, "metadata": md, "sections": secs}
            if codec == 2 and al == 4096:
                req["signing_key"] = "k.pem"
            rp = os.path.join(tmp, "req.json")
            with open(rp, "w") as f:
                json.dump(req, f)
            out = os.path.join(tmp, "out%d_%d.expert" % (codec, al))
            rc, o, e = run("write", rp, out)
            check("write codec=%d align=%d" % (codec, al), rc == 0 and os.path.exists(out), e)
            if rc:
                continue
            args = ["read", out] + (["--key", pubp] if "signing_key" in req else [])
            rc, o, e = run(*args)
            check("read back codec=%d align=%d" % (codec, al), rc == 0, o + e)
            if rc:
                continue
            d = json.loads(o)
            ok = d["metadata"] == md and d["header"]["alignment"] == al
            ok = ok and d["header"]["signed"] == ("signing_key" in req)
            for s, g in zip(secs, d["sections"]):
                data = bytes.fromhex(s["data_hex"]) if "data_hex" in s else big[:len(big) // 4 * 4]
                for k in ("name", "type", "codec", "dtype", "shape", "layer", "module", "flags"):
                    ok = ok and s[k] == g[k]
                ok = ok and g["sha256"] == hashlib.sha256(data).hexdigest()
            check("content codec=%d align=%d" % (codec, al), ok)
            if codec and al == 64:
                # the multi-frame section really has 4 frames
                ent = d["sections"][-1]
                check("multi-frame decoded_length", ent["decoded_length"] == len(big) // 4 * 4)
    # failures leave nothing
    bad = {"alignment": 64, "metadata": base_md([LORA_MOD]), "sections": []}
    rp = os.path.join(tmp, "bad.json")
    with open(rp, "w") as f:
        json.dump(bad, f)
    out = os.path.join(tmp, "bad.expert")
    rc, o, e = run("write", rp, out)
    check("write rejects incomplete module", rc != 0 and not os.path.exists(out), e)
    check("no temp files left", not [n for n in os.listdir(tmp) if n.endswith(".tmp")])


def test_defects(tmp):
    md = base_md([LORA_MOD])
    good = craft(md=md, entries=lora_entries())
    expect("crafted lora accepted", good, None)
    S, A, F = "structural", "access", "full"

    def patch(buf, off, fmt, val, fix=True):
        b = bytearray(buf)
        struct.pack_into(fmt, b, off, val)
        return refix(b) if fix else bytes(b)

    expect("S1 magic", b"HLLMEXQ\x00" + good[8:], "BAD_MAGIC", S)
    expect("S1 short", b"HLLM", "BAD_MAGIC", S)
    expect("S2 <256", good[:200], "TRUNCATED", S)
    expect("S3 major", patch(good, 8, "<H", 3), "UNSUPPORTED_VERSION", S)
    expect("minor 7 accepted", patch(good, 10, "<H", 7), None)
    expect("S4 header_size", patch(good, 0x0C, "<I", 260), "BAD_HEADER", S)
    expect("S4 header_size big", patch(good, 0x0C, "<I", 8192), "BAD_HEADER", S)
    expect("S5 trailing", good + b"\x00", "TRAILING_DATA", S)
    expect("S5 truncated", good[:-1], "TRUNCATED", S)
    expect("S6b reserved", patch(good, 0xF0, "<B", 1), "BAD_HEADER", S)
    expect("S6c alignment", patch(good, 0x74, "<I", 128), "BAD_HEADER", S)
    expect("S6d toc_entry_size", patch(good, 0x7C, "<I", 64), "BAD_HEADER", S)
    expect("S6e flag bit 0", patch(good, 0x78, "<I", 1), "UNKNOWN_FLAG", S)
    expect("flag bit 16 ignored", patch(good, 0x78, "<I", 1 << 16), None)
    expect("S7a toc_count", patch(good, 0x10, "<I", 65537), "LIMIT_EXCEEDED", S)
    expect("S7b md_len 0", patch(good, 0xA8, "<Q", 0), "BAD_HEADER", S)
    expect("S7b md_len big", patch(good, 0xA8, "<Q", (1 << 24) + 1), "LIMIT_EXCEEDED", S)
    expect("S7c md_dec 1", patch(good, 0xB0, "<Q", 1), "BAD_HEADER", S)
    expect("S7c md_dec big", patch(good, 0xB0, "<Q", (1 << 24) + 1), "LIMIT_EXCEEDED", S)
    expect("S7d strings", patch(good, 0xD8, "<Q", (1 << 26) + 1), "LIMIT_EXCEEDED", S)
    expect("S7e index_length", patch(good, 0xC8, "<Q", 72), "BAD_INDEX", S)
    mo = struct.unpack_from("<Q", good, 0xA0)[0]
    expect("S8 md oob", patch(good, 0xA0, "<Q", len(good)), "OUT_OF_BOUNDS", S)
    expect("S8 md overflow", patch(good, 0xA0, "<Q", (1 << 64) - 8), "OUT_OF_BOUNDS", S)
    expect("S8 md in header", patch(good, 0xA0, "<Q", 128), "OUT_OF_BOUNDS", S)
    expect("S8 md misaligned", patch(good, 0xA0, "<Q", mo + 1), "MISALIGNED", S)
    so = struct.unpack_from("<Q", good, 0xD0)[0]
    expect("S8 strings oob", patch(good, 0xD0, "<Q", so + 1), "OUT_OF_BOUNDS", S)
    expect("S9 structure hash", patch(good, 0x80, "<B", good[0x80] ^ 1, fix=False),
           "STRUCTURE_HASH_MISMATCH", S)
    expect("file hash", patch(good, 0x14, "<B", good[0x14] ^ 1, fix=False) if False else
           bytes(bytearray(good[:0x14]) + bytes([good[0x14] ^ 1]) + good[0x15:]),
           "STRUCTURE_HASH_MISMATCH", S)  # file_sha256 is covered by structure hash

    # -- S10 metadata
    def mdfile(raw=None, frame=None, mdobj=None, entries=None):
        es = lora_entries() if entries is None else entries
        if mdobj is not None:
            raw = json.dumps(mdobj, separators=(",", ":")).encode()
        return craft(md_bytes=raw, md_frame=frame, entries=es)

    good_raw = json.dumps(md, separators=(",", ":")).encode()
    expect("md ok via raw", mdfile(raw=good_raw), None)
    bad_json = {
        "bom": b"\xef\xbb\xbf" + good_raw,
        "utf8": good_raw[:-1] + b',"x":"\xc0\xaf"}',
        "surrogate-utf8": good_raw[:-1] + b',"x":"\xed\xa0\x80"}',
        "dup": good_raw[:-1] + b',"name":"u"}',
        "dup-escaped": good_raw[:-1] + b',"n\\u0061me":"u"}',
        "nan": good_raw[:-1] + b',"x":NaN}',
        "inf": good_raw[:-1] + b',"x":-Infinity}',
        "1e999": good_raw[:-1] + b',"x":1e999}',
        "bigint": good_raw[:-1] + b',"x":' + b"9" * 400 + b"}",
        "nul": good_raw[:-1] + b',"x":"a\\u0000"}',
        "lone-high": good_raw[:-1] + b',"x":"\\ud800x"}',
        "lone-low": good_raw[:-1] + b',"\\udc00":1}',
        "depth33": good_raw[:-1] + b',"x":' + b"[" * 32 + b"]" * 32 + b"}",
        "trailing": good_raw + b"x",
        "two-values": good_raw + b"{}",
        "array-top": b"[" + good_raw + b"]",
        "comment": good_raw[:-1] + b'/*c*/}',
        "single-quote": good_raw[:-1] + b",'x':1}",
        "leading-zero": good_raw[:-1] + b',"x":01}',
        "hex-escape": good_raw[:-1] + b',"x":"\\x41"}',
        "ctrl-in-string": good_raw[:-1] + b',"x":"a\tb"}',
        "nbsp-ws": good_raw[:-1] + b',\xc2\xa0"x":1}',
        "arabic-digit": good_raw[:-1] + b',"x":\xd9\xa1}',
    }
    for nm, raw in bad_json.items():
        expect("md json " + nm, mdfile(raw=raw), "BAD_METADATA", S)
    ok_json = {
        "depth32": good_raw[:-1] + b',"x":' + b"[" * 31 + b"]" * 31 + b"}",
        "pair": good_raw[:-1] + b',"x":"\\ud83d\\ude00"}',
        "ws": b" \n\t\r" + good_raw + b" \r\n",
        "-0 layer": good_raw.replace(b'"layer":0', b'"layer":-0'),
        "big-finite": good_raw[:-1] + b',"x":1.7976931348623157e308}',
        "unknown member": good_raw[:-1] + b',"zzz":{"a":[1,2]}}',
    }
    for nm, raw in ok_json.items():
        expect("md json ok " + nm, mdfile(raw=raw), None)
    expect("md frame checksum ok", mdfile(frame=zstd_with_checksum(good_raw), raw=good_raw), None)
    fr = ex.zstd_compress_frame(good_raw)
    expect("md frame trailing", mdfile(frame=fr + b"\x00", raw=good_raw), "BAD_METADATA", S)
    expect("md frame two frames", mdfile(frame=fr + fr, raw=good_raw), "BAD_METADATA", S)
    expect("md frame no FCS", mdfile(frame=zstd_no_fcs(good_raw), raw=good_raw), "BAD_METADATA", S)
    expect("md frame dict id", mdfile(frame=zstd_dictid(good_raw), raw=good_raw), "BAD_METADATA", S)
    bad_ck = bytearray(zstd_with_checksum(good_raw))
    bad_ck[-1] ^= 0xFF
    expect("md frame bad checksum", mdfile(frame=bytes(bad_ck), raw=good_raw), "BAD_METADATA", S)
    expect("md frame skippable", mdfile(frame=b"\x50\x2a\x4d\x18\x00\x00\x00\x00" + fr,
                                         raw=good_raw), "BAD_METADATA", S)
    expect("md dec length off by one", craft(md_bytes=good_raw + b" ", md_frame=fr,
                                             entries=lora_entries()), "BAD_METADATA", S)
    schema_bad = {
        "format": dict(md, format="expert-v3"),
        "no name": dict((k, v) for k, v in md.items() if k != "name"),
        "empty version": dict(md, version=""),
        "modules obj": dict(md, modules={}),
        "desc null": dict(md, description=None),
        "base_model no name": dict(md, base_model={"sha256": ""}),
        "extra list": dict(md, extra=[]),
        "r float": dict(md, modules=[dict(LORA_MOD, r=1.0)]),
        "r exp": None,
        "r zero": dict(md, modules=[dict(LORA_MOD, r=0)]),
        "alpha str": dict(md, modules=[dict(LORA_MOD, alpha="2")]),
        "rslora int": dict(md, modules=[dict(LORA_MOD, rslora=0)]),
        "layer 65536": dict(md, modules=[dict(LORA_MOD, layer=65536)]),
        "layer -1": dict(md, modules=[dict(LORA_MOD, layer=-1)]),
        "type bogus": dict(md, modules=[dict(LORA_MOD, type="lokr")]),
        "dup path": dict(md, modules=[LORA_MOD, LORA_MOD]),
        "in_features 0": dict(md, modules=[dict(LORA_MOD, in_features=0)]),
        "2^53": dict(md, modules=[dict(LORA_MOD, in_features=2 ** 53)]),
    }
    for nm, m in schema_bad.items():
        if m is None:
            raw = good_raw.replace(b'"r":1', b'"r":1e0')
            expect("schema " + nm, mdfile(raw=raw), "BAD_METADATA", S)
        else:
            expect("schema " + nm, mdfile(mdobj=m), "BAD_METADATA", S)
    expect("schema feedforward on lora ignored", mdfile(mdobj=dict(md, modules=[
        dict(LORA_MOD, feedforward="x", sparse_format=1)])), None)

    # -- S11 TOC entries
    def tocf(field, val, which=0):
        es = lora_entries()
        es[which][field] = val
        return craft(md=md, entries=es)

    expect("S11a res11", tocf("res11", 1), "BAD_TOC", S)
    expect("S11a res28", tocf("res28", 1), "BAD_TOC", S)
    expect("S11a res120", tocf("res120", b"\x00" * 7 + b"\x01"), "BAD_TOC", S)
    expect("S11b codec", tocf("codec", 3), "UNKNOWN_CODEC", S)
    expect("S11c dtype", tocf("dtype", 14), "UNKNOWN_DTYPE", S)
    expect("S11d type 0", tocf("type", 0), "UNKNOWN_SECTION_TYPE", S)
    expect("S11d type 0x14", tocf("type", 0x14), "UNKNOWN_SECTION_TYPE", S)
    expect("S11e flag bit 15", tocf("flags", 1 << 15), "UNKNOWN_FLAG", S)
    expect("TOC flag bit 31 ignored", tocf("flags", 1 << 31), None)
    expect("S11f rank 5", tocf("rank", 5), "BAD_TOC", S)
    expect("S11f dims beyond", tocf("dims4", [1, 2, 0, 1]), "BAD_TOC", S)
    expect("S11g decoded > 4GiB", tocf("decoded_length", (1 << 32) + 4), "LIMIT_EXCEEDED", S)
    expect("S11g numel", tocf("dims4", [2, 2, 0, 0]), "SIZE_MISMATCH", S)
    expect("S11g numel overflow", craft(md=base_md(), entries=[dict(
        name=b"t", type=0x3F, dtype=1, dims=[1 << 40, 1 << 40, 0], stored=b"",
        decoded=b"")]), "SIZE_MISMATCH", S)
    expect("S11g raw frame_size", tocf("frame_size", 65536), "BAD_TOC", S)
    expect("S11g raw stored != decoded", tocf("stored_length", 4), "SIZE_MISMATCH", S)
    expect("S11g section oob", tocf("offset", 1 << 20), "OUT_OF_BOUNDS", S)
    expect("S11g section in header", tocf("offset", 192), "OUT_OF_BOUNDS", S)
    expect("S11h name_length 0", tocf("name_length", 0), "BAD_TOC", S)
    expect("S11h name oob", tocf("name_offset", 1000), "OUT_OF_BOUNDS", S)
    es = lora_entries()
    es[0]["name"] = b"m.layers.0.q.lora_A.weigh\xff"
    expect("S11h name utf8", craft(md=md, entries=es), "BAD_TOC", S)
    es = lora_entries()
    es[0]["name"] = b"m.layers.0.q.lora_A\x00weight"
    expect("S11h name NUL", craft(md=md, entries=es), "BAD_TOC", S)
    expect("S11i layer", tocf("layer", 65536), "BAD_TOC", S)
    expect("S11i module", tocf("module", 1), "BAD_TOC", S)
    expect("S11j adapter layer mismatch", tocf("layer", 3), "BAD_TOC", S)
    expect("S11j adapter module NONE", tocf("module", ex.NONE32), "BAD_TOC", S)
    expect("S11j LORA_A dtype", tocf("dtype", 9), "BAD_TOC", S)
    for nm, path in (("abs", b"/etc/passwd"), ("dotdot", b"a/../b"), ("dot", b"./a"),
                     ("backslash", b"a\\b"), ("empty comp", b"a//b"),
                     ("trailing slash", b"a/")):
        expect("S11j FILE path " + nm, craft(md=base_md(), entries=[dict(
            name=path, type=1, dtype=0, dims=[1], stored=b"x", decoded=b"x")]), "BAD_TOC", S)
    two_st = [dict(name=b"a.safetensors", type=2, dtype=0, dims=[1], stored=b"x", decoded=b"x"),
              dict(name=b"b.safetensors", type=2, dtype=0, dims=[1], stored=b"y", decoded=b"y")]
    expect("S11j second SAFETENSORS_HEADER", craft(md=base_md(), entries=two_st), "BAD_TOC", S)
    expect("S11j TENSOR bytes", craft(md=base_md(), entries=[dict(
        name=b"t", type=0x3F, dtype=0, dims=[1], stored=b"x", decoded=b"x")]), "BAD_TOC", S)
    expect("must-ignore BYTES ok", craft(md=base_md(), entries=[dict(
        name=b"t", type=0xFFFF, dtype=0, dims=[1], stored=b"x", decoded=b"x",
        module=ex.NONE32)]), None)
    expect("must-ignore module range", craft(md=base_md(), entries=[dict(
        name=b"t", type=0x8000, dtype=0, dims=[1], stored=b"x", decoded=b"x",
        module=0)]), "BAD_TOC", S)
    # S12
    es = lora_entries()
    es[1]["name"] = es[0]["name"]
    expect("S12 duplicate name", craft(md=md, entries=es), "DUPLICATE_NAME", S)
    # S13
    idx = bytearray(ex.build_index([e["name"] for e in lora_entries()]))
    idx[4] = 1
    expect("S13 index reserved", craft(md=md, entries=lora_entries(), index=bytes(idx)),
           "BAD_INDEX", S)
    # S14
    es = lora_entries()
    es[1]["offset"] = 256
    expect("S14a overlap", craft(md=md, entries=es), "OVERLAP", S)
    es = lora_entries()
    es[0]["offset"] = 264  # inside the padding before B, no overlap
    expect("S14b misaligned", craft(md=md, entries=es), "MISALIGNED", S)
    # gap rule: shift metadata and all tail regions by 8 bytes
    buf = craft(md=md, entries=lora_entries())
    mo = struct.unpack_from("<Q", buf, 0xA0)[0]
    tail = bytes(buf[mo:])
    b = bytearray(buf[:mo]) + b"\x00" * 8 + tail
    for off in (0xA0, 0xB8, 0xC0, 0xD0, 0xE0):
        struct.pack_into("<Q", b, off, struct.unpack_from("<Q", b, off)[0] + 8)
    expect("S14c region gap 8", refix(b), "BAD_PADDING", S)
    b = bytearray(buf) + b"\x00" * 8
    struct.pack_into("<Q", b, 0xE0, len(b))
    expect("S14d trailing after last extent", refix(b), "TRAILING_DATA", S)
    b = bytearray(buf) + b"\x00"
    struct.pack_into("<Q", b, 0xE0, len(b))
    expect("S14d one unowned byte", refix(b), "TRAILING_DATA", S)
    # S15
    expect("S15 lora missing B", craft(md=md, entries=lora_entries()[:1]), "BAD_TOC", S)
    expect("S15 lora r mismatch", craft(md=base_md([dict(LORA_MOD, r=2)]),
                                        entries=lora_entries()), "BAD_TOC", S)
    expect("S15 in_features", craft(md=base_md([dict(LORA_MOD, in_features=3)]),
                                    entries=lora_entries()), "BAD_TOC", S)
    # S16
    expect("S16 adapter_config missing", craft(md=dict(md, adapter_config="x.json"),
                                               entries=lora_entries()), "BAD_METADATA", S)
    # -- access
    data = f32(*range(40000))  # 160000 bytes, 3 frames at 64 KiB
    st = framed(data, 4, 1)
    tens = lambda stored, **kw: craft(md=base_md(), entries=[dict(  # noqa: E731
        name=b"t", type=0x3F, dtype=1, dims=[40000], codec=kw.pop("codec", 1),
        frame_size=65536, stored=stored, decoded=data, **kw)])
    expect("framed ok", tens(st), None)
    expect("framed shuffle ok", tens(framed(data, 4, 2), codec=2), None)
    expect("framed hash", tens(st, sha=b"\x00" * 32), "SECTION_HASH_MISMATCH", A)
    b = bytearray(st)
    struct.pack_into("<I", b, 0, struct.unpack_from("<I", b, 0)[0] + 1)
    expect("frame table sum", tens(bytes(b)), "SIZE_MISMATCH", A)
    expect("stored < 4n", tens(b"\x00" * 8), "SIZE_MISMATCH", A)
    # corrupt frame 1 and frame 2; frame 1 must be reported (same class anyway)
    c0, c1, c2 = struct.unpack_from("<3I", st, 0)
    b = bytearray(st)
    b[12 + c0:12 + c0 + 4] = b"\x00\x00\x00\x00"
    expect("frame bad magic", tens(bytes(b)), "DECODE_FAILED", A)
    # frame declaring wrong content size: a 65536 frame in the last slot
    fr = [ex.zstd_compress_frame(data[i:i + 65536]) for i in (0, 65536, 131072)]
    fr[2] = ex.zstd_compress_frame(data[131072:] + b"\x00")
    stt = struct.pack("<3I", *[len(x) for x in fr]) + b"".join(fr)
    expect("frame FCS != L", tens(stt), "DECODE_FAILED", A)
    fr = [ex.zstd_compress_frame(data[i:i + 65536]) for i in (0, 65536, 131072)]
    fr[2] = fr[2] + b"\x00"
    stt = struct.pack("<3I", *[len(x) for x in fr]) + b"".join(fr)
    expect("frame trailing byte", tens(stt), "DECODE_FAILED", A)
    fr = [zstd_no_fcs(data[i:i + 65536]) for i in (0, 65536, 131072)]
    stt = struct.pack("<3I", *[len(x) for x in fr]) + b"".join(fr)
    expect("frame no FCS", tens(stt), "DECODE_FAILED", A)
    expect("empty zstd section D=0 stored!=0", craft(md=base_md(), entries=[dict(
        name=b"t", type=0x3F, dtype=1, dims=[0], codec=1, frame_size=65536,
        stored=b"\x00" * 4, decoded=b"")]), "SIZE_MISMATCH", A)
    # -- full
    osd_md = base_md([{"path": "o", "type": "osd", "layer": None, "rank": 0,
                       "sparse_format": "csr"}])

    def osd(indptr, indices):
        i32 = lambda *v: struct.pack("<%di" % len(v), *v)  # noqa: E731
        vals = f32(*([1.0] * len(indices)))
        return craft(md=osd_md, entries=[
            dict(name=b"U", type=0x20, dtype=1, dims=[2, 0], stored=b"", decoded=b"", module=0),
            dict(name=b"S", type=0x21, dtype=1, dims=[0], stored=b"", decoded=b"", module=0),
            dict(name=b"Vt", type=0x22, dtype=1, dims=[0, 3], stored=b"", decoded=b"", module=0),
            dict(name=b"ip", type=0x23, dtype=9, dims=[3], stored=i32(*indptr),
                 decoded=i32(*indptr), module=0),
            dict(name=b"ix", type=0x24, dtype=9, dims=[len(indices)], stored=i32(*indices),
                 decoded=i32(*indices), module=0),
            dict(name=b"v", type=0x25, dtype=1, dims=[len(indices)], stored=vals,
                 decoded=vals, module=0)])
    expect("csr ok", osd([0, 2, 3], [0, 2, 1]), None)
    expect("csr indptr[0]", osd([1, 2, 3], [0, 2, 1]), "DECODE_FAILED", F)
    expect("csr decreasing", osd([0, 3, 2], [0, 1, 2]), "DECODE_FAILED", F)
    expect("csr last != nnz", osd([0, 1, 2], [0, 2, 1]), "DECODE_FAILED", F)
    expect("csr col range", osd([0, 2, 3], [0, 3, 1]), "DECODE_FAILED", F)
    expect("csr col negative", osd([0, 2, 3], [-1, 2, 1]), "DECODE_FAILED", F)
    expect("csr not increasing", osd([0, 2, 3], [2, 0, 1]), "DECODE_FAILED", F)
    expect("csr duplicate", osd([0, 2, 3], [1, 1, 1]), "DECODE_FAILED", F)
    b = bytearray(good)
    b[0x110] = 1
    expect("nonzero padding", refix(b), "BAD_PADDING", F)
    b = bytearray(good)
    b[0x100] ^= 1
    expect("section byte flip", refix(b), "SECTION_HASH_MISMATCH", A)
    b = bytearray(good)
    b[0x100] ^= 1
    expect("section byte flip, no refix", bytes(b), "SECTION_HASH_MISMATCH", A)
    # file hash mismatch only: change a padding... impossible without other defect;
    # instead alter file_sha256 and recompute the structure hash only.
    b = bytearray(good)
    b[0x14] ^= 1
    hs = 256
    mo, ml, _, to, io, il, so, sl, fl = struct.unpack_from("<9Q", b, 0xA0)
    b[0x80:0xA0] = ex.structure_digest(bytes(b[:hs]), (bytes(b[mo:mo + ml]),
                                       bytes(b[to:to + 256]), bytes(b[io:io + il]),
                                       bytes(b[so:so + sl])))
    expect("file hash mismatch", bytes(b), "FILE_HASH_MISMATCH", F)


def zstd_with_checksum(data):
    import zstandard
    return zstandard.ZstdCompressor(level=3, write_checksum=True).compress(data)


def zstd_no_fcs(data):
    import zstandard
    c = zstandard.ZstdCompressor(level=3, write_content_size=False)
    return c.compress(data)


def zstd_dictid(data):
    # rebuild the frame header with a 1-byte non-zero Dictionary_ID field
    fr = ex.zstd_compress_frame(data)
    fhd = fr[4]
    assert fhd & 3 == 0
    return fr[:4] + bytes([fhd | 1]) + (fr[5:6] if not fhd & 0x20 else b"") \
        + b"\x07" + (fr[6:] if not fhd & 0x20 else fr[5:])


def main():
    tmp = tempfile.mkdtemp()
    try:
        test_example()
        test_writer(tmp)
        test_defects(tmp)
    finally:
        shutil.rmtree(tmp)
    print("%d failure(s)" % len(FAILS))
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
