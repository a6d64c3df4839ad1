#!/usr/bin/env python3
"""Build specs/binary-format/example.expert and print its annotated hex dump.

This script is an independent implementation of the writer side of
specs/binary-format/spec.md (version 2.0) for one tiny file, plus a small
checker that re-reads the file by the spec's rules.  It uses the Python 3
standard library only; zstd compression is done by the `zstd` command-line
tool (spec section 16 names the exact command and version used).

Usage:  python3 specs/binary-format/make_example.py [--out PATH] [--quiet]

The annotated dump printed on stdout is what spec.md section 16 shows.
"""

import argparse
import base64
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile

# --------------------------------------------------------------- constants

MAGIC = b"HLLMEXP\x00"
HEADER_SIZE = 256
TOC_ENTRY_SIZE = 128
SIGN_TAG = b"HLLMEXP2-SIGN-V1"
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
LAYER_NONE = 0xFFFFFFFF
MODULE_NONE = 0xFFFFFFFF

DTYPE_BYTES, DTYPE_F32 = 0, 1
DTYPE_SIZE = {0: 1, 1: 4, 2: 2, 3: 2, 4: 8, 5: 1, 6: 1, 7: 2, 8: 2, 9: 4, 10: 4,
              11: 8, 12: 8, 13: 1}
DTYPE_NAME = {0: "BYTES", 1: "F32"}
SECTION_FILE, SECTION_LORA_A, SECTION_LORA_B = 0x0001, 0x0010, 0x0011
SECTION_NAME = {0x0001: "FILE", 0x0010: "LORA_A", 0x0011: "LORA_B"}
CODEC_RAW = 0

ZSTD_COMMAND = ["zstd", "-19", "-c", "--no-check"]


def align_up(x, a):
    return (x + a - 1) // a * a


def fnv1a64(data):
    h = FNV_OFFSET
    for b in data:
        h ^= b
        h = (h * FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h


def slot_count_for(toc_count):
    s = 8
    while s < 2 * toc_count:
        s *= 2
    return s


def build_index(names):
    s = slot_count_for(len(names))
    mask = s - 1
    slots = [0] * s
    trace = []
    for i, name in enumerate(names):
        h = fnv1a64(name)
        home = p = h & mask
        while slots[p] != 0:
            p = (p + 1) & mask
        slots[p] = i + 1
        trace.append((i, name, h, home, p))
    return s, slots, trace


def f32(values):
    return b"".join(struct.pack("<f", v) for v in values)


def shuffle(plain, e):
    """Byte shuffle of one frame (spec section 7.4)."""
    n = len(plain) // e
    out = bytearray(len(plain))
    for i in range(n):
        for j in range(e):
            out[j * n + i] = plain[i * e + j]
    return bytes(out)


def unshuffle(shuffled, e):
    n = len(shuffled) // e
    out = bytearray(len(shuffled))
    for i in range(n):
        for j in range(e):
            out[i * e + j] = shuffled[j * n + i]
    return bytes(out)


# ------------------------------------------------------------------- zstd

def parse_zstd_frame(frame):
    """Returns (content_size or None, dict_id, checksum_flag, frame_length)."""
    if len(frame) < 6 or struct.unpack_from("<I", frame, 0)[0] != 0xFD2FB528:
        raise ValueError("not a zstd frame")
    fhd = frame[4]
    fcs_flag = fhd >> 6
    single_segment = (fhd >> 5) & 1
    if (fhd >> 3) & 1:
        raise ValueError("reserved bit set")
    checksum_flag = (fhd >> 2) & 1
    did_flag = fhd & 3
    pos = 5
    if not single_segment:
        pos += 1  # window descriptor
    did_size = [0, 1, 2, 4][did_flag]
    dict_id = int.from_bytes(frame[pos:pos + did_size], "little") if did_size else 0
    pos += did_size
    fcs_size = [1 if single_segment else 0, 2, 4, 8][fcs_flag]
    if fcs_size == 0:
        content_size = None
    else:
        content_size = int.from_bytes(frame[pos:pos + fcs_size], "little")
        if fcs_size == 2:
            content_size += 256
    pos += fcs_size
    while True:  # walk the blocks
        bh = int.from_bytes(frame[pos:pos + 3], "little")
        last, btype, bsize = bh & 1, (bh >> 1) & 3, bh >> 3
        pos += 3
        if btype == 3:
            raise ValueError("reserved block type")
        pos += 1 if btype == 1 else bsize
        if last:
            break
    if checksum_flag:
        pos += 4
    return content_size, dict_id, checksum_flag, pos


def zstd_compress(data):
    """One zstd frame with Frame_Content_Size, no checksum, no dictionary.

    The CLI writes the content size only when it knows the input size, so the
    input goes through a temporary file, not a pipe."""
    with tempfile.NamedTemporaryFile(delete=False) as tmp:
        tmp.write(data)
        path = tmp.name
    try:
        frame = subprocess.run(ZSTD_COMMAND + [path], check=True,
                               stdout=subprocess.PIPE).stdout
    finally:
        os.unlink(path)
    content_size, dict_id, checksum_flag, length = parse_zstd_frame(frame)
    assert content_size == len(data), "zstd frame lacks the content size"
    assert dict_id == 0 and checksum_flag == 0 and length == len(frame)
    assert zstd_decompress(frame) == data
    return frame


def zstd_decompress(frame):
    return subprocess.run(["zstd", "-d", "-c"], input=frame, check=True,
                          stdout=subprocess.PIPE).stdout


def zstd_version():
    out = subprocess.run(["zstd", "--version"], check=True, stdout=subprocess.PIPE)
    return out.stdout.decode().strip()


# ------------------------------------------------ Ed25519 (RFC 8032, pure)

_P = 2 ** 255 - 19
_L = 2 ** 252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_I = pow(2, (_P - 1) // 4, _P)


def _xrecover(y):
    xx = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P)
    x = pow(xx, (_P + 3) // 8, _P)
    if (x * x - xx) % _P != 0:
        x = x * _I % _P
    if x % 2 != 0:
        x = _P - x
    return x


_BY = 4 * pow(5, _P - 2, _P) % _P
_B = (_xrecover(_BY), _BY, 1, _xrecover(_BY) * _BY % _P)


def _add(p, q):
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % _P
    b = (y1 + x1) * (y2 + x2) % _P
    c = 2 * t1 * t2 * _D % _P
    d = 2 * z1 * z2 % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _mul(s, p):
    q = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            q = _add(q, p)
        p = _add(p, p)
        s >>= 1
    return q


def _encode(p):
    x, y, z, _ = p
    zi = pow(z, _P - 2, _P)
    x, y = x * zi % _P, y * zi % _P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def ed25519_public(seed):
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    return _encode(_mul(a, _B))


def ed25519_sign(seed, msg):
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    pub = _encode(_mul(a, _B))
    r = int.from_bytes(hashlib.sha512(h[32:] + msg).digest(), "little") % _L
    rr = _encode(_mul(r, _B))
    k = int.from_bytes(hashlib.sha512(rr + pub + msg).digest(), "little") % _L
    s = (r + k * a) % _L
    return rr + s.to_bytes(32, "little")


RFC8032_TEST1_SEED = bytes.fromhex(
    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_TEST1_PUB = bytes.fromhex(
    "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_TEST1_SIG = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
    "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")

PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


def pem(label, der):
    b = base64.b64encode(der).decode()
    lines = [b[i:i + 64] for i in range(0, len(b), 64)]
    return "-----BEGIN %s-----\n%s\n-----END %s-----\n" % (label, "\n".join(lines), label)


# ------------------------------------------------------------- the example

ADAPTER_CONFIG = b'{"lora_alpha":4,"peft_type":"LORA","r":2,"target_modules":["q_proj"]}'

METADATA = (
    b'{"format":"expert-v2","name":"example","version":"1.0.0",'
    b'"adapter_config":"adapter_config.json",'
    b'"modules":[{"path":"model.layers.0.q_proj","type":"lora","layer":0,'
    b'"in_features":2,"out_features":2,"r":2,"alpha":4,"rslora":false}]}'
)

LORA_A = [1.0, 2.0, 3.0, 4.0]       # [r=2, in=2]
LORA_B = [0.5, -0.5, 0.25, -0.25]   # [out=2, r=2]

SECTIONS = [
    # name, type, dtype, rank, dims, layer, module, decoded bytes
    (b"model.layers.0.q_proj.lora_A.weight", SECTION_LORA_A, DTYPE_F32, 2, [2, 2], 0, 0,
     f32(LORA_A)),
    (b"model.layers.0.q_proj.lora_B.weight", SECTION_LORA_B, DTYPE_F32, 2, [2, 2], 0, 0,
     f32(LORA_B)),
    (b"adapter_config.json", SECTION_FILE, DTYPE_BYTES, 1, [len(ADAPTER_CONFIG)],
     LAYER_NONE, MODULE_NONE, ADAPTER_CONFIG),
]

ALIGNMENT = 64

# Header field offsets (spec section 3)
H_MAGIC, H_MAJOR, H_MINOR, H_HEADER_SIZE, H_TOC_COUNT = 0x00, 0x08, 0x0A, 0x0C, 0x10
H_FILE_SHA, H_SIG, H_ALIGN, H_FLAGS, H_ENTRY_SIZE = 0x14, 0x34, 0x74, 0x78, 0x7C
H_STRUCT_SHA, H_META_OFF, H_META_LEN, H_META_DEC = 0x80, 0xA0, 0xA8, 0xB0
H_TOC_OFF, H_INDEX_OFF, H_INDEX_LEN = 0xB8, 0xC0, 0xC8
H_STR_OFF, H_STR_LEN, H_FILE_LEN, H_RESERVED = 0xD0, 0xD8, 0xE0, 0xE8

TOC_FMT = "<IHHBBBBIIIIIQQQ4Q32s8s"
assert struct.calcsize(TOC_FMT) == TOC_ENTRY_SIZE


def file_hash_input(data):
    """The whole file with 0x14..0x73 and 0x80..0x9F taken as zero."""
    b = bytearray(data)
    b[0x14:0x74] = bytes(0x60)
    b[0x80:0xA0] = bytes(0x20)
    return bytes(b)


def structure_hash_input(data, header_size, regions):
    h = bytearray(data[:header_size])
    h[0x34:0x74] = bytes(0x40)
    h[0x80:0xA0] = bytes(0x20)
    out = bytes(h)
    for off, length in regions:
        out += data[off:off + length]
    return out


def build():
    # 1. sections, in TOC order, each at the next multiple of the alignment
    cursor = HEADER_SIZE
    layout = []  # (kind, label, offset, bytes)
    entries = []
    for name, stype, dtype, rank, dims, layer, module, decoded in SECTIONS:
        stored = decoded  # codec raw
        if len(stored) == 0:
            offset = 0
        else:
            offset = align_up(cursor, ALIGNMENT)
            cursor = offset + len(stored)
        layout.append(("section", name.decode(), offset, stored))
        entries.append(dict(name=name, type=stype, codec=CODEC_RAW, dtype=dtype, rank=rank,
                            dims=dims + [0] * (4 - len(dims)), layer=layer, module=module,
                            frame_size=0, offset=offset, stored_length=len(stored),
                            decoded_length=len(decoded),
                            sha256=hashlib.sha256(decoded).digest()))
    # 2. metadata, TOC, index at the next multiple of 8; strings right after
    meta_stored = zstd_compress(METADATA)
    meta_off = align_up(cursor, 8)
    toc_off = align_up(meta_off + len(meta_stored), 8)
    strings = b""
    for e in entries:
        e["name_offset"] = len(strings)
        strings += e["name"]
    toc = b""
    for e in entries:
        toc += struct.pack(TOC_FMT, e["name_offset"], len(e["name"]), e["type"], e["codec"],
                           e["dtype"], e["rank"], 0, 0, e["layer"], e["module"],
                           e["frame_size"], 0, e["offset"], e["stored_length"],
                           e["decoded_length"], *e["dims"], e["sha256"], bytes(8))
    index_off = align_up(toc_off + len(toc), 8)
    s, slots, trace = build_index([e["name"] for e in entries])
    index = struct.pack("<II", s, 0) + struct.pack("<%dI" % s, *slots)
    str_off = index_off + len(index)
    file_length = str_off + len(strings)

    data = bytearray(file_length)
    for _, _, off, stored in layout:
        data[off:off + len(stored)] = stored
    data[meta_off:meta_off + len(meta_stored)] = meta_stored
    data[toc_off:toc_off + len(toc)] = toc
    data[index_off:index_off + len(index)] = index
    data[str_off:str_off + len(strings)] = strings

    hdr = bytearray(HEADER_SIZE)
    hdr[0:8] = MAGIC
    struct.pack_into("<HHII", hdr, H_MAJOR, 2, 0, HEADER_SIZE, len(entries))
    struct.pack_into("<III", hdr, H_ALIGN, ALIGNMENT, 0, TOC_ENTRY_SIZE)
    struct.pack_into("<QQQQQQQQQ", hdr, H_META_OFF, meta_off, len(meta_stored), len(METADATA),
                     toc_off, index_off, len(index), str_off, len(strings), file_length)
    data[0:HEADER_SIZE] = hdr

    # 3. hashes: file hash first, then the structure hash (which covers it)
    file_sha = hashlib.sha256(file_hash_input(data)).digest()
    data[H_FILE_SHA:H_FILE_SHA + 32] = file_sha
    regions = [(meta_off, len(meta_stored)), (toc_off, len(toc)), (index_off, len(index)),
               (str_off, len(strings))]
    struct_sha = hashlib.sha256(structure_hash_input(data, HEADER_SIZE, regions)).digest()
    data[H_STRUCT_SHA:H_STRUCT_SHA + 32] = struct_sha
    # 4. unsigned: the signature stays 64 zero bytes
    info = dict(entries=entries, meta_off=meta_off, meta_stored=meta_stored, toc_off=toc_off,
                index_off=index_off, index=index, slots=slots, trace=trace, str_off=str_off,
                strings=strings, file_length=file_length, regions=regions, layout=layout)
    return bytes(data), info


# ----------------------------------------------------------------- checker

class Reject(Exception):
    pass


def check(data):
    """Re-reads the file by the spec's rules: structural steps S1-S14 and the full-level
    checks without a key (spec section 12). The per-type, module and cross-reference
    steps S11j, S15 and S16 and the zstd frame rules beyond the content size are not
    re-checked here."""
    def need(cond, cls):
        if not cond:
            raise Reject(cls)
    u16 = lambda o: struct.unpack_from("<H", data, o)[0]
    u32 = lambda o: struct.unpack_from("<I", data, o)[0]
    u64 = lambda o: struct.unpack_from("<Q", data, o)[0]
    n = len(data)
    need(n >= 8 and data[:8] == MAGIC, "BAD_MAGIC")
    need(n >= 256, "TRUNCATED")
    need(u16(8) == 2, "UNSUPPORTED_VERSION")
    hs = u32(0x0C)
    need(256 <= hs <= 4096 and hs % 8 == 0, "BAD_HEADER")
    fl = u64(0xE0)
    need(not n < fl, "TRUNCATED")
    need(not n > fl, "TRAILING_DATA")
    need(hs < fl, "BAD_HEADER")
    need(data[0xE8:0x100] == bytes(24), "BAD_HEADER")
    align = u32(0x74)
    need(align in (64, 256, 4096), "BAD_HEADER")
    need(u32(0x7C) == 128, "BAD_HEADER")
    need(u32(0x78) & 0xFFFF == 0, "UNKNOWN_FLAG")
    count = u32(0x10)
    need(count <= 65536, "LIMIT_EXCEEDED")
    ml, md, sl = u64(0xA8), u64(0xB0), u64(0xD8)
    need(ml >= 1, "BAD_HEADER")
    need(ml <= 1 << 24, "LIMIT_EXCEEDED")
    need(md >= 2, "BAD_HEADER")
    need(md <= 1 << 24, "LIMIT_EXCEEDED")
    need(sl <= 1 << 26, "LIMIT_EXCEEDED")
    S = slot_count_for(count)
    need(u64(0xC8) == 8 + 4 * S, "BAD_INDEX")
    regions = [(u64(0xA0), ml, True), (u64(0xB8), count * 128, True),
               (u64(0xC0), u64(0xC8), True), (u64(0xD0), sl, False)]
    for off, length, aligned8 in regions:
        end = off + length
        if length == 0:
            need(hs <= off <= fl, "OUT_OF_BOUNDS")
        else:
            need(end < 1 << 64 and hs <= off and end <= fl, "OUT_OF_BOUNDS")
        need(not aligned8 or off % 8 == 0, "MISALIGNED")
    sh = hashlib.sha256(structure_hash_input(data, hs, [(o, l) for o, l, _ in regions]))
    need(sh.digest() == data[0x80:0xA0], "STRUCTURE_HASH_MISMATCH")
    meta = zstd_decompress(data[regions[0][0]:regions[0][0] + ml])
    need(len(meta) == md, "BAD_METADATA")

    def no_dup(pairs):
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            raise Reject("BAD_METADATA")
        return dict(pairs)
    doc = json.loads(meta.decode("utf-8"), object_pairs_hook=no_dup)
    need(doc.get("format") == "expert-v2", "BAD_METADATA")
    modules = doc["modules"]
    toc_off, str_off = regions[1][0], regions[3][0]
    names, total = [], 0
    for i in range(count):
        e = struct.unpack_from(TOC_FMT, data, toc_off + 128 * i)
        (noff, nlen, stype, codec, dtype, rank, res1, flags, layer, module, fsize, res2,
         off, stored, decoded, d0, d1, d2, d3, sha, res3) = e
        dims = [d0, d1, d2, d3]
        need(res1 == 0 and res2 == 0 and res3 == bytes(8), "BAD_TOC")
        need(codec in (0, 1, 2), "UNKNOWN_CODEC")
        need(dtype in DTYPE_SIZE, "UNKNOWN_DTYPE")
        need(stype >= 0x8000 or stype in (1, 2, 0x10, 0x11, 0x12, 0x13, 0x20, 0x21, 0x22,
                                           0x23, 0x24, 0x25, 0x30, 0x3F),
             "UNKNOWN_SECTION_TYPE")
        need(flags & 0xFFFF == 0, "UNKNOWN_FLAG")
        need(rank <= 4 and all(d == 0 for d in dims[rank:]), "BAD_TOC")
        need(dtype != DTYPE_BYTES or rank == 1, "BAD_TOC")
        need(decoded <= 1 << 32, "LIMIT_EXCEEDED")
        total += decoded
        need(total <= 1 << 36, "LIMIT_EXCEEDED")
        numel = 1
        for d in dims[:rank]:
            numel *= d
        need(numel * DTYPE_SIZE[dtype] == decoded, "SIZE_MISMATCH")
        if codec == 0:
            need(fsize == 0, "BAD_TOC")
            need(stored == decoded, "SIZE_MISMATCH")
        if stored:
            need(hs <= off and off + stored <= fl, "OUT_OF_BOUNDS")
        else:
            need(off <= fl, "OUT_OF_BOUNDS")
        need(1 <= nlen <= 1024, "BAD_TOC")
        need(noff + nlen <= sl, "OUT_OF_BOUNDS")
        name = data[str_off + noff:str_off + noff + nlen]
        name.decode("utf-8")
        need(b"\x00" not in name, "BAD_TOC")
        need(layer == LAYER_NONE or layer < 65536, "BAD_TOC")
        need(module == MODULE_NONE or module < len(modules), "BAD_TOC")
        names.append((name, off, stored, sha, codec))
    need(len(set(n for n, *_ in names)) == len(names), "DUPLICATE_NAME")
    io = regions[2][0]
    s, slots, _ = build_index([nm for nm, *_ in names])
    need(data[io:io + 8 + 4 * s] == struct.pack("<II", s, 0) + struct.pack("<%dI" % s, *slots),
         "BAD_INDEX")
    ext = [(0, hs, "header")]
    ext += [(o, o + l, "region") for o, l, _ in regions if l]
    ext += [(o, o + st, "section") for _, o, st, _, _ in names if st]
    ext.sort()
    for a, b in zip(ext, ext[1:]):
        need(b[0] >= a[1], "OVERLAP")
    need(all(o % align == 0 for _, o, _, _, _ in names), "MISALIGNED")
    prev = hs
    gaps = []
    for o, end, kind in ext[1:]:
        need(o - prev < (align if kind == "section" else 8), "BAD_PADDING")
        if o > prev:
            gaps.append((prev, o))
        prev = end
    need(prev == fl, "TRAILING_DATA")
    # full level (access checks of every section, padding, file hash)
    for name, off, stored, sha, codec in names:
        assert codec == 0
        need(hashlib.sha256(data[off:off + stored]).digest() == sha, "SECTION_HASH_MISMATCH")
    need(all(data[a:b] == bytes(b - a) for a, b in gaps), "BAD_PADDING")
    need(hashlib.sha256(file_hash_input(data)).digest() == data[0x14:0x34],
         "FILE_HASH_MISMATCH")
    return "OK"


# ------------------------------------------------------------------- dump

def hexs(b):
    return " ".join("%02X" % x for x in b)


class Dump:
    def __init__(self):
        self.lines = []

    def title(self, text):
        self.lines.append("")
        self.lines.append("-- " + text)

    def field(self, off, b, text):
        """One field; long values wrap at 16 bytes per line."""
        if len(b) == 0:
            self.lines.append("%04X  %-47s  %s" % (off, "(empty)", text))
            return
        first = True
        for i in range(0, len(b), 16):
            chunk = b[i:i + 16]
            self.lines.append("%04X  %-47s  %s" % (off + i, hexs(chunk), text if first else ""))
            first = False

    def run_of_zeros(self, off, length, text):
        self.lines.append("%04X  %-47s  %s" % (off, "00 x %d" % length, text))

    def ascii(self, off, b, text):
        for i in range(0, len(b), 16):
            chunk = b[i:i + 16]
            asc = "".join(chr(c) if 32 <= c < 127 else "." for c in chunk)
            self.lines.append("%04X  %-47s  |%s|%s" % (off + i, hexs(chunk), asc,
                                                        ("  " + text) if i == 0 else ""))


def annotate(data, info):
    d = Dump()
    u16 = lambda o: struct.unpack_from("<H", data, o)[0]
    u32 = lambda o: struct.unpack_from("<I", data, o)[0]
    u64 = lambda o: struct.unpack_from("<Q", data, o)[0]
    d.lines.append("example.expert: %d bytes (0x%X), SHA-256 of the whole file as stored:"
                   % (len(data), len(data)))
    d.lines.append("  " + hashlib.sha256(data).hexdigest())
    d.lines.append("Offsets are hexadecimal; multi-byte integers are little-endian.")

    d.title("Header [0x0000, 0x0100)")
    d.field(0x00, data[0:8], 'magic "HLLMEXP\\0"')
    d.field(0x08, data[8:10], "major = %d" % u16(8))
    d.field(0x0A, data[10:12], "minor = %d" % u16(10))
    d.field(0x0C, data[12:16], "header_size = %d" % u32(12))
    d.field(0x10, data[16:20], "toc_count = %d" % u32(16))
    d.field(0x14, data[0x14:0x34], "file_sha256")
    d.field(0x34, data[0x34:0x74], "signature: 64 zero bytes = unsigned")
    d.field(0x74, data[0x74:0x78], "alignment = %d" % u32(0x74))
    d.field(0x78, data[0x78:0x7C], "flags = 0x%08X" % u32(0x78))
    d.field(0x7C, data[0x7C:0x80], "toc_entry_size = %d" % u32(0x7C))
    d.field(0x80, data[0x80:0xA0], "structure_sha256")
    for off, name in ((0xA0, "metadata_offset"), (0xA8, "metadata_length"),
                      (0xB0, "metadata_decoded_length"), (0xB8, "toc_offset"),
                      (0xC0, "index_offset"), (0xC8, "index_length"),
                      (0xD0, "strings_offset"), (0xD8, "strings_length"),
                      (0xE0, "file_length")):
        v = u64(off)
        d.field(off, data[off:off + 8], "%s = %d (0x%X)" % (name, v, v))
    d.field(0xE8, data[0xE8:0x100], "reserved (24 zero bytes)")

    # everything after the header, in file order
    items = []
    for kind, label, off, stored in info["layout"]:
        items.append((off, "section", label, stored))
    items.append((info["meta_off"], "metadata", "", info["meta_stored"]))
    items.append((info["toc_off"], "toc", "", data[info["toc_off"]:info["toc_off"]
                                                        + 128 * len(info["entries"])]))
    items.append((info["index_off"], "index", "", info["index"]))
    items.append((info["str_off"], "strings", "", info["strings"]))
    items.sort(key=lambda t: t[0])
    pos = HEADER_SIZE
    sec_no = 0
    for off, kind, label, b in items:
        if off > pos:
            need_align = ALIGNMENT if kind == "section" else 8
            d.title("Padding [0x%04X, 0x%04X): %d zero bytes (< %d, next item is %s)"
                    % (pos, off, off - pos, need_align,
                       "a section" if kind == "section" else "a region"))
            d.run_of_zeros(pos, off - pos, "padding")
        end = off + len(b)
        if kind == "section":
            e = info["entries"][sec_no]
            d.title("Section %d [0x%04X, 0x%04X): %s, %s, raw, %d bytes"
                    % (sec_no, off, end, SECTION_NAME[e["type"]], DTYPE_NAME[e["dtype"]], len(b)))
            if e["dtype"] == DTYPE_F32:
                for i in range(0, len(b), 4):
                    v = struct.unpack_from("<f", b, i)[0]
                    idx = i // 4
                    cols = e["dims"][1]
                    d.field(off + i, b[i:i + 4], "[%d,%d] = %g" % (idx // cols, idx % cols, v))
            else:
                d.ascii(off, b, "")
            sec_no += 1
        elif kind == "metadata":
            d.title("Metadata region [0x%04X, 0x%04X): one zstd frame, %d stored bytes"
                    % (off, end, len(b)))
            d.field(off, b[0:4], "zstd magic 0xFD2FB528")
            fhd = b[4]
            d.field(off + 4, b[4:5], "Frame_Header_Descriptor 0x%02X: Single_Segment=1, "
                    "FCS field 1 byte, no checksum, no dictionary" % fhd)
            d.field(off + 5, b[5:6], "Frame_Content_Size = %d (= metadata_decoded_length)"
                    % b[5])
            d.field(off + 6, b[6:], "blocks (compressed JSON)")
            d.lines.append("      decoded (%d bytes of UTF-8 JSON):" % len(METADATA))
            d.lines.append("      " + METADATA.decode())
        elif kind == "toc":
            d.title("TOC region [0x%04X, 0x%04X): %d entries x 128 bytes"
                    % (off, end, len(info["entries"])))
            for i, e in enumerate(info["entries"]):
                base = off + 128 * i
                eb = b[128 * i:128 * (i + 1)]
                d.lines.append("   entry %d (%s)" % (i, e["name"].decode()))
                g = lambda o, n: eb[o:o + n]
                d.field(base + 0, g(0, 4), "name_offset = %d" % e["name_offset"])
                d.field(base + 4, g(4, 2), "name_length = %d" % len(e["name"]))
                d.field(base + 6, g(6, 2), "section_type = 0x%04X %s"
                        % (e["type"], SECTION_NAME[e["type"]]))
                d.field(base + 8, g(8, 1), "codec = 0 raw")
                d.field(base + 9, g(9, 1), "dtype = %d %s" % (e["dtype"], DTYPE_NAME[e["dtype"]]))
                d.field(base + 10, g(10, 1), "rank = %d" % e["rank"])
                d.field(base + 11, g(11, 1), "reserved")
                d.field(base + 12, g(12, 4), "flags = 0")
                d.field(base + 16, g(16, 4), "layer = %s" % (
                    "0xFFFFFFFF (none)" if e["layer"] == LAYER_NONE else e["layer"]))
                d.field(base + 20, g(20, 4), "module = %s" % (
                    "0xFFFFFFFF (none)" if e["module"] == MODULE_NONE else e["module"]))
                d.field(base + 24, g(24, 4), "frame_size = 0 (raw)")
                d.field(base + 28, g(28, 4), "reserved")
                d.field(base + 32, g(32, 8), "offset = %d (0x%X)" % (e["offset"], e["offset"]))
                d.field(base + 40, g(40, 8), "stored_length = %d" % e["stored_length"])
                d.field(base + 48, g(48, 8), "decoded_length = %d" % e["decoded_length"])
                d.field(base + 56, g(56, 32), "dims = [%s]" % ", ".join(str(x) for x in e["dims"]))
                d.field(base + 88, g(88, 32), "sha256 of the decoded bytes")
                d.field(base + 120, g(120, 8), "reserved")
        elif kind == "index":
            s = len(info["slots"])
            d.title("Index region [0x%04X, 0x%04X): slot_count = %d = max(8, pow2 >= 2*%d)"
                    % (off, end, s, len(info["entries"])))
            d.field(off, b[0:4], "slot_count = %d" % s)
            d.field(off + 4, b[4:8], "reserved")
            for j in range(s):
                v = info["slots"][j]
                d.field(off + 8 + 4 * j, b[8 + 4 * j:12 + 4 * j],
                        "slot %d = %s" % (j, "empty" if v == 0 else "TOC %d + 1" % (v - 1)))
            for i, name, h, home, p in info["trace"]:
                d.lines.append("      FNV-1a64(\"%s\") = 0x%016X, & %d = %d%s"
                               % (name.decode(), h, s - 1, home,
                                  "" if home == p else " -> probed to %d" % p))
        elif kind == "strings":
            d.title("Strings region [0x%04X, 0x%04X): names in TOC order, no separators"
                    % (off, end))
            d.ascii(off, b, "")
        pos = max(pos, end)
    d.lines.append("")
    d.lines.append("-- End of file at 0x%04X = file_length" % pos)

    fl = len(data)
    d.lines.append("")
    d.lines.append("-- Hashes")
    d.lines.append("file_sha256 = SHA-256 of [0x0000,0x0014) || 96 zero bytes (for [0x0014,0x0074))")
    d.lines.append("              || [0x0074,0x0080) || 32 zero bytes (for [0x0080,0x00A0))"
                   " || [0x00A0,0x%04X)" % fl)
    d.lines.append("            = " + data[0x14:0x34].hex())
    regs = info["regions"]
    d.lines.append("structure_sha256 = SHA-256 of [0x0000,0x0034) || 64 zero bytes (for "
                   "[0x0034,0x0074))")
    d.lines.append("              || [0x0074,0x0080) || 32 zero bytes (for [0x0080,0x00A0))"
                   " || [0x00A0,0x0100)")
    d.lines.append("              || metadata [0x%04X,0x%04X) || TOC [0x%04X,0x%04X)"
                   % (regs[0][0], regs[0][0] + regs[0][1], regs[1][0], regs[1][0] + regs[1][1]))
    d.lines.append("              || index [0x%04X,0x%04X) || strings [0x%04X,0x%04X)"
                   % (regs[2][0], regs[2][0] + regs[2][1], regs[3][0], regs[3][0] + regs[3][1]))
    d.lines.append("              (%d bytes hashed in total)"
                   % (256 + sum(l for _, l in regs)))
    d.lines.append("            = " + data[0x80:0xA0].hex())
    for e in info["entries"]:
        d.lines.append("section sha256 \"%s\" = %s" % (e["name"].decode(), e["sha256"].hex()))
    return d.lines


def extras(data):
    out = []
    out.append("")
    out.append("-- Test values")
    for s in (b"", b"a", b"foobar", b"model.layers.0.q_proj.lora_A.weight"):
        out.append('FNV-1a64("%s") = 0x%016X' % (s.decode(), fnv1a64(s)))
    plain = f32([1.0, 2.0, -0.5])
    sh = shuffle(plain, 4)
    assert unshuffle(sh, 4) == plain
    out.append("shuffle, e = 4, plain    = " + hexs(plain))
    out.append("                shuffled = " + hexs(sh))
    fr = zstd_compress(sh)
    stored = struct.pack("<I", len(fr)) + fr
    out.append("shuffle+zstd stored bytes for that section (frame_size 65536, n = 1, "
               "one valid encoding):")
    out.append("  frame table: " + hexs(stored[:4]) + "   frame: " + hexs(fr))

    # Ed25519 known answers
    assert ed25519_public(RFC8032_TEST1_SEED) == RFC8032_TEST1_PUB
    assert ed25519_sign(RFC8032_TEST1_SEED, b"") == RFC8032_TEST1_SIG
    msg = SIGN_TAG + data[0x80:0xA0]
    sig = ed25519_sign(RFC8032_TEST1_SEED, msg)
    out.append("")
    out.append("-- Signing example.expert with the RFC 8032 section 7.1 TEST 1 key")
    out.append("domain tag          = " + hexs(SIGN_TAG))
    out.append("message (48 bytes)  = tag || structure_sha256 =")
    out.append("  " + msg.hex())
    out.append("signature (write at 0x0034..0x0073) =")
    out.append("  " + sig.hex())
    out.append("private key PEM (PKCS#8, RFC 8410):")
    out.extend("  " + l for l in pem("PRIVATE KEY", PKCS8_PREFIX + RFC8032_TEST1_SEED).splitlines())
    out.append("public key PEM (SubjectPublicKeyInfo, RFC 8410):")
    out.extend("  " + l for l in pem("PUBLIC KEY", SPKI_PREFIX + RFC8032_TEST1_PUB).splitlines())
    signed = bytearray(data)
    signed[0x34:0x74] = sig
    out.append("SHA-256 of the signed file = " + hashlib.sha256(signed).hexdigest())
    assert check(bytes(signed)) == "OK"  # hashes do not cover the signature
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(here, "example.expert"))
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    data, info = build()
    assert check(data) == "OK"
    with open(args.out, "wb") as f:
        f.write(data)
    if not args.quiet:
        print("generated with: %s; metadata frame: %s <file>" % (zstd_version(),
                                                                 " ".join(ZSTD_COMMAND)))
        for line in annotate(data, info) + extras(data):
            print(line.rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
