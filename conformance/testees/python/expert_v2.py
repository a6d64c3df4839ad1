"""Independent (clean-room) Python implementation of the `.expert` v2 container.

Written from specs/binary-format/spec.md only.  Reader: full validation in the
order of spec section 12 (S1-S16, access, full).  Writer: canonical layout (2.2).

Only the standard library, python3-zstandard and python3-cryptography are used.
One file (~1,350 lines) on purpose: an implementer reads the whole second
implementation next to the spec, in the spec's order.
"""

import hashlib
import json
import math
import mmap
import os
import struct
import sys
import tempfile

import zstandard

# ---------------------------------------------------------------------------
# constants

MAGIC = b"HLLMEXP\x00"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
SIGN_TAG = b"HLLMEXP2-SIGN-V1"
U64_MAX = (1 << 64) - 1
NONE32 = 0xFFFFFFFF
HEADER_FIXED = 256
TOC_ENTRY = 128
MAX_TOC = 65536
MAX_META = 1 << 24
MAX_STRINGS = 1 << 26
MAX_DECODED = 1 << 32
MAX_DECODED_SUM = 1 << 36
MAX_WINDOW = 1 << 27
MAX_JSON_DEPTH = 32
ALIGNMENTS = (64, 256, 4096)
ED25519_L = (1 << 252) + 27742317777372353535851937790883648493

LEVEL_S = "structural"
LEVEL_A = "access"
LEVEL_F = "full"

# dtype id -> element size (6.1)
DTYPE_SIZE = {0: 1, 1: 4, 2: 2, 3: 2, 4: 8, 5: 1, 6: 1, 7: 2, 8: 2, 9: 4,
              10: 4, 11: 8, 12: 8, 13: 1}
FLOAT_DTYPES = (1, 2, 3, 4)
DT_BYTES, DT_I32, DT_I64 = 0, 9, 11

# section types (6.2)
T_FILE = 0x0001
T_ST_HEADER = 0x0002
T_LORA_A = 0x0010
T_LORA_B = 0x0011
T_DORA_M = 0x0012
T_IA3 = 0x0013
T_OSD_U = 0x0020
T_OSD_S = 0x0021
T_OSD_VT = 0x0022
T_OSD_INDPTR = 0x0023
T_OSD_INDICES = 0x0024
T_OSD_VALUES = 0x0025
T_SOFT_PROMPT = 0x0030
T_TENSOR = 0x003F
KNOWN_TYPES = frozenset([T_FILE, T_ST_HEADER, T_LORA_A, T_LORA_B, T_DORA_M, T_IA3,
                         T_OSD_U, T_OSD_S, T_OSD_VT, T_OSD_INDPTR, T_OSD_INDICES,
                         T_OSD_VALUES, T_SOFT_PROMPT, T_TENSOR])
ADAPTER_TYPES = frozenset([T_LORA_A, T_LORA_B, T_DORA_M, T_IA3, T_OSD_U, T_OSD_S,
                           T_OSD_VT, T_OSD_INDPTR, T_OSD_INDICES, T_OSD_VALUES])
MODULE_OWNS = {
    "lora": frozenset([T_LORA_A, T_LORA_B]),
    "dora": frozenset([T_LORA_A, T_LORA_B, T_DORA_M]),
    "ia3": frozenset([T_IA3]),
    "osd": frozenset([T_OSD_U, T_OSD_S, T_OSD_VT, T_OSD_INDPTR, T_OSD_INDICES,
                      T_OSD_VALUES]),
}

TOC_STRUCT = struct.Struct("<IHHBBBBIIIIIQQQ4Q32s8s")
assert TOC_STRUCT.size == TOC_ENTRY


class ExpertError(Exception):
    """A validation failure: error class name (spec 15) and protocol level."""

    def __init__(self, cls, level, msg=""):
        Exception.__init__(self, "%s (%s): %s" % (cls, level, msg))
        self.cls = cls
        self.level = level
        self.msg = msg


def fail(cls, level, msg=""):
    raise ExpertError(cls, level, msg)


def u16(b, o):
    return struct.unpack_from("<H", b, o)[0]


def u32(b, o):
    return struct.unpack_from("<I", b, o)[0]


def u64(b, o):
    return struct.unpack_from("<Q", b, o)[0]


def slot_count(toc_count):
    s = 8
    while s < 2 * toc_count:
        s *= 2
    return s


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & U64_MAX
    return h


def fnv1a64_low(data, mask):
    """fnv1a64(data) & mask for mask = 2^k - 1 (k <= 64): the low k bits of
    a product mod 2^64 depend only on the low k bits of the factors."""
    h = 0xCBF29CE484222325 & mask
    prime = 0x100000001B3 & mask
    for b in data:
        h = ((h ^ b) * prime) & mask
    return h


def build_index(names):
    """Canonical index region bytes (8.2) for the list of name byte strings."""
    s = slot_count(len(names))
    mask = s - 1
    slots = [0] * s
    for i, name in enumerate(names):
        p = fnv1a64_low(name, mask)
        while slots[p] != 0:
            p = (p + 1) & mask
        slots[p] = i + 1
    return struct.pack("<II", s, 0) + struct.pack("<%dI" % s, *slots)


def is_pow2(v):
    return v > 0 and (v & (v - 1)) == 0


def valid_utf8(b):
    # Python's strict UTF-8 codec follows RFC 3629: it rejects overlong forms,
    # surrogates, code points above U+10FFFF and truncated sequences.
    try:
        bytes(b).decode("utf-8", "strict")
        return True
    except UnicodeDecodeError:
        return False


def safe_rel_path(name):
    if name.startswith(b"/") or b"\\" in name:
        return False
    for comp in name.split(b"/"):
        if comp in (b"", b".", b".."):
            return False
    return True


# ---------------------------------------------------------------------------
# zstd frames (7.3, 9.1)

_DCTX = []


def _dctx():
    if not _DCTX:
        _DCTX.append(zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW))
    return _DCTX[0]


def zstd_frame_check_and_decode(data, expected, cls, level):
    """Decode exactly one zstd frame occupying all of `data` into exactly
    `expected` bytes.  Every violation of 7.3 fails with `cls`."""
    c = len(data)
    if c == 0:
        fail(cls, level, "empty frame")
    if c < 4 or bytes(data[0:4]) != ZSTD_MAGIC:
        fail(cls, level, "not a zstd frame (magic)")
    if c < 5:
        fail(cls, level, "truncated frame header")
    fhd = data[4]
    fcs_flag = fhd >> 6
    single = (fhd >> 5) & 1
    reserved = (fhd >> 3) & 1
    has_checksum = (fhd >> 2) & 1
    did_flag = fhd & 3
    if reserved:
        fail(cls, level, "frame header reserved bit set")
    pos = 5
    window = None
    if not single:
        if pos >= c:
            fail(cls, level, "truncated frame header")
        wd = data[pos]
        pos += 1
        exponent = wd >> 3
        mantissa = wd & 7
        window_log = 10 + exponent
        base = 1 << window_log
        window = base + (base // 8) * mantissa
    did_size = (0, 1, 2, 4)[did_flag]
    if pos + did_size > c:
        fail(cls, level, "truncated frame header")
    did = int.from_bytes(bytes(data[pos:pos + did_size]), "little")
    pos += did_size
    if did != 0:
        fail(cls, level, "dictionary id present")
    fcs_size = (1 if single else 0, 2, 4, 8)[fcs_flag]
    if fcs_size == 0:
        fail(cls, level, "frame lacks Frame_Content_Size")
    if pos + fcs_size > c:
        fail(cls, level, "truncated frame header")
    fcs = int.from_bytes(bytes(data[pos:pos + fcs_size]), "little")
    if fcs_size == 2:
        fcs += 256
    pos += fcs_size
    if single:
        window = fcs
    if window > MAX_WINDOW:
        fail(cls, level, "window larger than 2^27")
    if fcs != expected:
        fail(cls, level, "Frame_Content_Size %d != expected %d" % (fcs, expected))
    # Walk the blocks to find where the frame ends (no trailing data, no
    # second frame, no frame running past its slot).
    while True:
        if pos + 3 > c:
            fail(cls, level, "frame runs past its slot (block header)")
        bh = data[pos] | (data[pos + 1] << 8) | (data[pos + 2] << 16)
        pos += 3
        last = bh & 1
        btype = (bh >> 1) & 3
        bsize = bh >> 3
        if btype == 3:
            fail(cls, level, "reserved block type")
        pos += 1 if btype == 1 else bsize
        if pos > c:
            fail(cls, level, "frame runs past its slot (block)")
        if last:
            break
    if has_checksum:
        pos += 4
        if pos > c:
            fail(cls, level, "frame runs past its slot (checksum)")
    if pos != c:
        fail(cls, level, "trailing bytes after the frame in its slot")
    try:
        dctx = _dctx()
        out = dctx.decompress(bytes(data), max_output_size=expected,
                              allow_extra_data=False)
    except zstandard.ZstdError as e:
        fail(cls, level, "zstd: %s" % e)
    if len(out) != expected:
        fail(cls, level, "decoded %d bytes, expected %d" % (len(out), expected))
    return out


def zstd_compress_frame(data, level=19):
    cctx = zstandard.ZstdCompressor(level=level, write_checksum=False,
                                    write_content_size=True, write_dict_id=False)
    return cctx.compress(bytes(data))


def shuffle(plain, e):
    if e == 1:
        return bytes(plain)
    n = len(plain) // e
    out = bytearray(len(plain))
    for j in range(e):
        out[j * n:(j + 1) * n] = plain[j::e]
    return bytes(out)


def unshuffle(t, e):
    if e == 1:
        return t
    n = len(t) // e
    out = bytearray(len(t))
    for j in range(e):
        out[j::e] = t[j * n:(j + 1) * n]
    return bytes(out)


# ---------------------------------------------------------------------------
# metadata JSON (9.2) and schema (9.3)

class JInt(int):
    """A JSON number written without fraction or exponent."""


class _MetaErr(Exception):
    pass


def _pairs_hook(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise _MetaErr("duplicate member name %r" % k)
        d[k] = v
    return d


def _parse_constant(s):
    raise _MetaErr("non-RFC 8259 token %s" % s)


def _parse_int(s):
    try:
        f = float(s)
    except (ValueError, OverflowError):
        raise _MetaErr("bad number")
    if math.isinf(f):
        raise _MetaErr("number rounds to infinity: %s..." % s[:20])
    return JInt(int(s))


def _parse_float(s):
    f = float(s)
    if math.isinf(f) or math.isnan(f):
        raise _MetaErr("number rounds to infinity: %s..." % s[:20])
    return f


def _check_str(s):
    for ch in s:
        o = ord(ch)
        if o == 0:
            raise _MetaErr("escaped U+0000")
        if 0xD800 <= o <= 0xDFFF:
            raise _MetaErr("unpaired surrogate escape")


def _walk(v, depth):
    if isinstance(v, dict):
        if depth > MAX_JSON_DEPTH:
            raise _MetaErr("nesting deeper than 32")
        for k, x in v.items():
            _check_str(k)
            _walk(x, depth + 1)
    elif isinstance(v, list):
        if depth > MAX_JSON_DEPTH:
            raise _MetaErr("nesting deeper than 32")
        for x in v:
            _walk(x, depth + 1)
    elif isinstance(v, str):
        _check_str(v)


def parse_json_strict(raw):
    """Parse metadata bytes by 9.2; raise _MetaErr on any violation."""
    raw = bytes(raw)
    if raw.startswith(b"\xef\xbb\xbf"):
        raise _MetaErr("byte-order mark")
    try:
        text = raw.decode("utf-8", "strict")
    except UnicodeDecodeError as e:
        raise _MetaErr("invalid UTF-8: %s" % e)
    try:
        obj = json.loads(text, object_pairs_hook=_pairs_hook,
                         parse_constant=_parse_constant, parse_int=_parse_int,
                         parse_float=_parse_float)
    except _MetaErr:
        raise
    except RecursionError:
        raise _MetaErr("nesting far deeper than 32")
    except (ValueError, OverflowError) as e:
        raise _MetaErr("invalid JSON: %s" % e)
    if not isinstance(obj, dict):
        raise _MetaErr("top-level value is not an object")
    _walk(obj, 1)
    return obj


def _is_int(v, lo=0, hi=(1 << 53) - 1):
    return type(v) is JInt and lo <= v <= hi


def _is_num(v):
    return type(v) in (JInt, float)


def _is_str(v):
    return type(v) is str


def _is_bool(v):
    return type(v) is bool


def check_schema(md):
    """9.3 except the cross-references (S16).  Raise _MetaErr."""
    def need(cond, msg):
        if not cond:
            raise _MetaErr(msg)

    for k in ("format", "name", "version", "modules"):
        need(k in md, "missing required member %r" % k)
    need(md["format"] == "expert-v2" and _is_str(md["format"]), "format")
    need(_is_str(md["name"]) and md["name"] != "", "name")
    need(_is_str(md["version"]) and md["version"] != "", "version")
    need(type(md["modules"]) is list, "modules is not an array")
    for k in ("description", "adapter_config", "source_manifest", "created_by"):
        if k in md:
            need(_is_str(md[k]), "%s is not a string" % k)
    if "base_model" in md:
        bm = md["base_model"]
        need(type(bm) is dict, "base_model is not an object")
        need("name" in bm and _is_str(bm["name"]), "base_model.name")
        if "sha256" in bm:
            need(_is_str(bm["sha256"]), "base_model.sha256")
    if "extra" in md:
        need(type(md["extra"]) is dict, "extra is not an object")
    paths = set()
    for i, m in enumerate(md["modules"]):
        need(type(m) is dict, "module %d is not an object" % i)
        for k in ("path", "type", "layer"):
            need(k in m, "module %d: missing %r" % (i, k))
        need(_is_str(m["path"]) and m["path"] != "", "module %d: path" % i)
        need(m["path"] not in paths, "module %d: duplicate path" % i)
        paths.add(m["path"])
        t = m["type"]
        need(_is_str(t) and t in MODULE_OWNS, "module %d: type" % i)
        need(m["layer"] is None or _is_int(m["layer"], 0, 65535), "module %d: layer" % i)
        for k in ("in_features", "out_features"):
            if k in m:
                need(_is_int(m[k], 1), "module %d: %s" % (i, k))
        if t in ("lora", "dora"):
            for k in ("r", "alpha", "rslora"):
                need(k in m, "module %d: missing %r" % (i, k))
            need(_is_int(m["r"], 1), "module %d: r" % i)
            need(_is_num(m["alpha"]), "module %d: alpha" % i)
            need(_is_bool(m["rslora"]), "module %d: rslora" % i)
        elif t == "ia3":
            need("feedforward" in m and _is_bool(m["feedforward"]),
                 "module %d: feedforward" % i)
        elif t == "osd":
            need("rank" in m and _is_int(m["rank"], 0), "module %d: rank" % i)
            need("sparse_format" in m and _is_str(m["sparse_format"])
                 and m["sparse_format"] == "csr", "module %d: sparse_format" % i)


# ---------------------------------------------------------------------------
# keys (11.5)

_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")


class KeyError_(Exception):
    pass


def _pem_decode(text, label):
    import base64
    import binascii
    try:
        s = text.decode("ascii")
    except UnicodeDecodeError:
        raise KeyError_("PEM is not ASCII")
    begin = "-----BEGIN %s-----" % label
    end = "-----END %s-----" % label
    lines = [ln.strip() for ln in s.replace("\r\n", "\n").split("\n")]
    try:
        b = lines.index(begin)
        e = lines.index(end, b + 1)
    except ValueError:
        raise KeyError_("no %s PEM block" % label)
    # no other PEM block may be present (a second key would be ambiguous)
    if any(ln.startswith("-----") for ln in lines[e + 1:]) or \
            any(ln.startswith("-----") for ln in lines[:b]):
        raise KeyError_("extra PEM blocks")
    body = "".join(lines[b + 1:e])
    if ":" in body:
        raise KeyError_("encrypted/legacy PEM headers")
    try:
        der = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise KeyError_("bad base64")
    return der


def load_public_key(path):
    """Raw 32-byte Ed25519 public key from a PEM SPKI file, else KeyError_."""
    with open(path, "rb") as f:
        data = f.read(1 << 20)
    der = _pem_decode(data, "PUBLIC KEY")
    if len(der) != 44 or der[:12] != _SPKI_PREFIX:
        raise KeyError_("not an Ed25519 SubjectPublicKeyInfo")
    return der[12:]


def load_private_key(path):
    """32-byte Ed25519 seed from a PEM PKCS#8 file, else KeyError_."""
    with open(path, "rb") as f:
        data = f.read(1 << 20)
    der = _pem_decode(data, "PRIVATE KEY")
    if len(der) == 48 and der[:16] == _PKCS8_PREFIX:
        return der[16:]
    # PKCS#8 v2 (OneAsymmetricKey with the public key attached) is a MAY:
    # accept it via cryptography and check the public key matches the seed.
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
        k = serialization.load_der_private_key(der, password=None)
    except Exception:
        raise KeyError_("not an Ed25519 PKCS#8 key")
    if not isinstance(k, ed25519.Ed25519PrivateKey):
        raise KeyError_("not an Ed25519 key")
    if not der.startswith(b"\x30") or b"\x06\x03\x2b\x65\x70" not in der[:20]:
        raise KeyError_("not an Ed25519 key")
    return k.private_bytes(serialization.Encoding.Raw,
                           serialization.PrivateFormat.Raw,
                           serialization.NoEncryption())


def ed25519_verify(pub, sig, msg):
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ed25519
    s = int.from_bytes(sig[32:], "little")
    if s >= ED25519_L:
        return False
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(pub).verify(sig, msg)
        return True
    except InvalidSignature:
        return False
    except ValueError:
        return False


def ed25519_sign(seed, msg):
    from cryptography.hazmat.primitives.asymmetric import ed25519
    return ed25519.Ed25519PrivateKey.from_private_bytes(seed).sign(msg)


# ---------------------------------------------------------------------------
# digests (11.1, 11.2)

def file_digest(buf, file_length, chunk=1 << 22):
    h = hashlib.sha256()
    h.update(buf[0:0x14])
    h.update(b"\x00" * 96)
    h.update(buf[0x74:0x80])
    h.update(b"\x00" * 32)
    pos = 0xA0
    while pos < file_length:
        end = min(file_length, pos + chunk)
        h.update(buf[pos:end])
        pos = end
    return h.digest()


def structure_digest(header, regions):
    """header: bytes [0, header_size); regions: list of byte strings
    (metadata, TOC, index, strings)."""
    h = hashlib.sha256()
    h.update(header[0:0x34])
    h.update(b"\x00" * 64)
    h.update(header[0x74:0x80])
    h.update(b"\x00" * 32)
    h.update(header[0xA0:])
    for r in regions:
        h.update(r)
    return h.digest()


# ---------------------------------------------------------------------------
# reader

class Entry(object):
    __slots__ = ("index", "name_offset", "name_length", "type", "codec", "dtype",
                 "rank", "flags", "layer", "module", "frame_size", "offset",
                 "stored_length", "decoded_length", "dims", "sha256", "name",
                 "decoded_sha256")


def _region_bounds(off, length, header_size, file_length):
    if length > 0:
        return header_size <= off and off + length <= file_length
    return header_size <= off <= file_length


def validate(buf, pubkey=None, entries_out=None):
    """Full validation of the file image `buf` (bytes/mmap).  Returns the
    canonical description dict or raises ExpertError; the parsed TOC entries
    are appended to entries_out when given."""
    S = LEVEL_S
    size = len(buf)
    # S1
    if size < 8 or bytes(buf[0:8]) != MAGIC:
        fail("BAD_MAGIC", S)
    # S2
    if size < HEADER_FIXED:
        fail("TRUNCATED", S, "file shorter than 256 bytes")
    major = u16(buf, 0x08)
    minor = u16(buf, 0x0A)
    header_size = u32(buf, 0x0C)
    toc_count = u32(buf, 0x10)
    alignment = u32(buf, 0x74)
    hflags = u32(buf, 0x78)
    toc_entry_size = u32(buf, 0x7C)
    stored_struct = bytes(buf[0x80:0xA0])
    md_off = u64(buf, 0xA0)
    md_len = u64(buf, 0xA8)
    md_dec = u64(buf, 0xB0)
    toc_off = u64(buf, 0xB8)
    idx_off = u64(buf, 0xC0)
    idx_len = u64(buf, 0xC8)
    str_off = u64(buf, 0xD0)
    str_len = u64(buf, 0xD8)
    file_length = u64(buf, 0xE0)
    # S3
    if major != 2:
        fail("UNSUPPORTED_VERSION", S, "major %d" % major)
    # S4
    if not (256 <= header_size <= 4096 and header_size % 8 == 0):
        fail("BAD_HEADER", S, "header_size %d" % header_size)
    # S5
    if size < file_length:
        fail("TRUNCATED", S, "size %d < file_length %d" % (size, file_length))
    if size > file_length:
        fail("TRAILING_DATA", S, "size %d > file_length %d" % (size, file_length))
    # S6
    if not header_size < file_length:
        fail("BAD_HEADER", S, "header_size >= file_length")
    if any(buf[0xE8:0x100]):
        fail("BAD_HEADER", S, "reserved header bytes")
    if alignment not in ALIGNMENTS:
        fail("BAD_HEADER", S, "alignment %d" % alignment)
    if toc_entry_size != TOC_ENTRY:
        fail("BAD_HEADER", S, "toc_entry_size %d" % toc_entry_size)
    if hflags & 0xFFFF:
        fail("UNKNOWN_FLAG", S, "header flags 0x%08x" % hflags)
    # S7
    if toc_count > MAX_TOC:
        fail("LIMIT_EXCEEDED", S, "toc_count")
    if md_len < 1:
        fail("BAD_HEADER", S, "metadata_length 0")
    if md_len > MAX_META:
        fail("LIMIT_EXCEEDED", S, "metadata_length")
    if md_dec < 2:
        fail("BAD_HEADER", S, "metadata_decoded_length < 2")
    if md_dec > MAX_META:
        fail("LIMIT_EXCEEDED", S, "metadata_decoded_length")
    if str_len > MAX_STRINGS:
        fail("LIMIT_EXCEEDED", S, "strings_length")
    if idx_len != 8 + 4 * slot_count(toc_count):
        fail("BAD_INDEX", S, "index_length")
    # S8
    toc_len = TOC_ENTRY * toc_count
    for name, off, length, al8 in (("metadata", md_off, md_len, True),
                                   ("TOC", toc_off, toc_len, True),
                                   ("index", idx_off, idx_len, True),
                                   ("strings", str_off, str_len, False)):
        if not _region_bounds(off, length, header_size, file_length):
            fail("OUT_OF_BOUNDS", S, "%s region" % name)
        if al8 and off % 8:
            fail("MISALIGNED", S, "%s offset" % name)
    header = bytes(buf[0:header_size])
    md_raw = bytes(buf[md_off:md_off + md_len])
    toc_raw = bytes(buf[toc_off:toc_off + toc_len])
    idx_raw = bytes(buf[idx_off:idx_off + idx_len])
    strings = bytes(buf[str_off:str_off + str_len])
    # S9
    if structure_digest(header, (md_raw, toc_raw, idx_raw, strings)) != stored_struct:
        fail("STRUCTURE_HASH_MISMATCH", S)
    # S10
    md_json = zstd_frame_check_and_decode(md_raw, md_dec, "BAD_METADATA", S)
    try:
        md = parse_json_strict(md_json)
        check_schema(md)
    except _MetaErr as e:
        fail("BAD_METADATA", S, str(e))
    modules = md["modules"]
    n_modules = len(modules)
    # S11
    entries = []
    running = 0
    seen_st_header = False
    for i in range(toc_count):
        f = TOC_STRUCT.unpack_from(toc_raw, i * TOC_ENTRY)
        (name_offset, name_length, stype, codec, dtype, rank, res11, flags, layer,
         module, frame_size, res28, offset, stored_length, decoded_length,
         d0, d1, d2, d3, sha, res120) = f
        dims = (d0, d1, d2, d3)
        where = "entry %d" % i
        # (a)
        if res11 or res28 or any(res120):
            fail("BAD_TOC", S, where + ": reserved bytes")
        # (b)
        if codec not in (0, 1, 2):
            fail("UNKNOWN_CODEC", S, where)
        # (c)
        if dtype not in DTYPE_SIZE:
            fail("UNKNOWN_DTYPE", S, where)
        # (d)
        if not (stype in KNOWN_TYPES or stype >= 0x8000):
            fail("UNKNOWN_SECTION_TYPE", S, where + ": type 0x%04x" % stype)
        # (e)
        if flags & 0xFFFF:
            fail("UNKNOWN_FLAG", S, where)
        # (f)
        if rank > 4:
            fail("BAD_TOC", S, where + ": rank")
        if any(dims[k] for k in range(rank, 4)):
            fail("BAD_TOC", S, where + ": dims beyond rank")
        if dtype == DT_BYTES and rank != 1:
            fail("BAD_TOC", S, where + ": BYTES needs rank 1")
        # (g)
        if decoded_length > MAX_DECODED:
            fail("LIMIT_EXCEEDED", S, where + ": decoded_length")
        running += decoded_length
        if running > MAX_DECODED_SUM:
            fail("LIMIT_EXCEEDED", S, where + ": sum of decoded_length")
        numel = 1
        for k in range(rank):
            numel *= dims[k]
            if numel > U64_MAX:
                fail("SIZE_MISMATCH", S, where + ": numel overflow")
        e = DTYPE_SIZE[dtype]
        if numel * e > U64_MAX or numel * e != decoded_length:
            fail("SIZE_MISMATCH", S, where + ": decoded_length != numel*e")
        if codec == 0:
            if frame_size != 0:
                fail("BAD_TOC", S, where + ": raw frame_size")
            if stored_length != decoded_length:
                fail("SIZE_MISMATCH", S, where + ": raw stored != decoded")
        else:
            if not (is_pow2(frame_size) and (1 << 16) <= frame_size <= (1 << 26)):
                fail("BAD_TOC", S, where + ": frame_size")
        if stored_length > 0:
            ok = header_size <= offset and offset + stored_length <= file_length
        else:
            ok = offset <= file_length
        if not ok:
            fail("OUT_OF_BOUNDS", S, where + ": section range")
        # (h)
        if not 1 <= name_length <= 1024:
            fail("BAD_TOC", S, where + ": name_length")
        if name_offset + name_length > str_len:
            fail("OUT_OF_BOUNDS", S, where + ": name range")
        name = strings[name_offset:name_offset + name_length]
        if not valid_utf8(name) or b"\x00" in name:
            fail("BAD_TOC", S, where + ": name not UTF-8 / contains NUL")
        # (i)
        if not (layer == NONE32 or layer < 65536):
            fail("BAD_TOC", S, where + ": layer")
        if not (module == NONE32 or module < n_modules):
            fail("BAD_TOC", S, where + ": module")
        # (j)
        if stype in KNOWN_TYPES:
            _type_rules(stype, dtype, rank, dims, name, layer, module, modules,
                        seen_st_header, where)
            if stype == T_ST_HEADER:
                seen_st_header = True
        ent = Entry()
        ent.index = i
        ent.name_offset = name_offset
        ent.name_length = name_length
        ent.type = stype
        ent.codec = codec
        ent.dtype = dtype
        ent.rank = rank
        ent.flags = flags
        ent.layer = layer
        ent.module = module
        ent.frame_size = frame_size
        ent.offset = offset
        ent.stored_length = stored_length
        ent.decoded_length = decoded_length
        ent.dims = dims
        ent.sha256 = sha
        ent.name = name
        entries.append(ent)
    # S12
    seen = {}
    for ent in entries:
        if ent.name in seen:
            fail("DUPLICATE_NAME", S, "entry %d" % ent.index)
        seen[ent.name] = ent.index
    # S13
    if idx_raw != build_index([ent.name for ent in entries]):
        fail("BAD_INDEX", S, "index content is not canonical")
    # S14
    extents = []  # (start, end, kind) kind: 'h', 'r', 's'
    extents.append((0, header_size, "h"))
    for off, length in ((md_off, md_len), (toc_off, toc_len), (idx_off, idx_len),
                        (str_off, str_len)):
        if length > 0:
            extents.append((off, off + length, "r"))
    for ent in entries:
        if ent.stored_length > 0:
            extents.append((ent.offset, ent.offset + ent.stored_length, "s"))
    extents.sort(key=lambda x: x[0])
    for a, b in zip(extents, extents[1:]):
        if b[0] < a[1]:
            fail("OVERLAP", S)
    for ent in entries:
        if ent.offset % alignment:
            fail("MISALIGNED", S, "section %d offset" % ent.index)
    prev_end = header_size
    gaps = []
    for x in extents:
        if x[2] == "h":
            continue
        gap = x[0] - prev_end
        limit = alignment if x[2] == "s" else 8
        if gap >= limit:
            fail("BAD_PADDING", S, "padding run of %d bytes" % gap)
        if gap:
            gaps.append((prev_end, x[0]))
        prev_end = x[1]
    if prev_end != file_length:
        fail("TRAILING_DATA", S, "bytes after the last extent")
    # S15
    for mi, m in enumerate(modules):
        _module_rules(mi, m, entries)
    # S16
    names = set(ent.name for ent in entries)
    by_name = dict((ent.name, ent) for ent in entries)
    for k in ("adapter_config", "source_manifest"):
        if k in md:
            nb = md[k].encode("utf-8")
            if nb not in names or by_name[nb].type != T_FILE:
                fail("BAD_METADATA", S, "%s cross-reference" % k)

    # ---- access level (12.2) for every section, in TOC order
    keep = set()
    for mi, m in enumerate(modules):
        if m["type"] == "osd":
            for ent in entries:
                if ent.module == mi and ent.type in (T_OSD_INDPTR, T_OSD_INDICES):
                    keep.add(ent.index)
    kept = {}
    for ent in entries:
        data = decode_section(buf, ent, ent.index in keep)
        if ent.index in keep:
            kept[ent.index] = data

    # ---- full level (12.3)
    F = LEVEL_F
    for mi, m in enumerate(modules):
        if m["type"] != "osd":
            continue
        secs = dict((ent.type, ent) for ent in entries
                    if ent.module == mi and ent.type in ADAPTER_TYPES)
        if T_OSD_INDPTR not in secs:
            continue
        _check_csr(secs, kept, mi)
    for a, b in gaps:
        if any(buf[a:b]):
            fail("BAD_PADDING", F, "non-zero padding byte in [%d, %d)" % (a, b))
    file_sha = bytes(buf[0x14:0x34])
    if file_digest(buf, file_length) != file_sha:
        fail("FILE_HASH_MISMATCH", F)
    sig = bytes(buf[0x34:0x74])
    signed = any(sig)
    if pubkey is not None:
        if not signed:
            fail("UNSIGNED", F)
        if not ed25519_verify(pubkey, sig, SIGN_TAG + stored_struct):
            fail("BAD_SIGNATURE", F)

    if entries_out is not None:
        entries_out.extend(entries)
    return {
        "header": {
            "major": major, "minor": minor, "alignment": alignment,
            "section_count": toc_count, "signed": signed,
            "file_sha256": file_sha.hex(), "structure_sha256": stored_struct.hex(),
        },
        "metadata": md,
        "sections": [{
            "index": ent.index,
            "name": ent.name.decode("utf-8"),
            "type": ent.type, "codec": ent.codec, "dtype": ent.dtype,
            "shape": list(ent.dims[:ent.rank]),
            "layer": None if ent.layer == NONE32 else ent.layer,
            "module": None if ent.module == NONE32 else ent.module,
            "flags": ent.flags,
            "decoded_length": ent.decoded_length,
            "sha256": ent.decoded_sha256,
        } for ent in entries],
    }


def _type_rules(stype, dtype, rank, dims, name, layer, module, modules,
                seen_st_header, where):
    def bad(msg):
        fail("BAD_TOC", LEVEL_S, where + ": " + msg)

    is_float = dtype in FLOAT_DTYPES
    if stype in (T_FILE, T_ST_HEADER):
        if dtype != DT_BYTES or rank != 1:
            bad("FILE/SAFETENSORS_HEADER must be BYTES rank 1")
        if not safe_rel_path(name):
            bad("unsafe path")
        if stype == T_ST_HEADER and seen_st_header:
            bad("second SAFETENSORS_HEADER")
    elif stype in (T_LORA_A, T_LORA_B, T_OSD_U, T_OSD_VT, T_SOFT_PROMPT):
        if not is_float or rank != 2:
            bad("needs a float dtype and rank 2")
    elif stype in (T_OSD_S, T_OSD_VALUES):
        if not is_float or rank != 1:
            bad("needs a float dtype and rank 1")
    elif stype == T_DORA_M:
        if not is_float or not (rank == 1 or (rank == 2 and dims[0] == 1)):
            bad("DORA_MAGNITUDE shape/dtype")
    elif stype == T_IA3:
        if not is_float or not (rank == 2 and (dims[0] == 1 or dims[1] == 1)):
            bad("IA3_VECTOR shape/dtype")
    elif stype in (T_OSD_INDPTR, T_OSD_INDICES):
        if dtype not in (DT_I32, DT_I64) or rank != 1:
            bad("CSR index arrays need I32/I64 rank 1")
        if stype == T_OSD_INDPTR and dims[0] < 1:
            bad("INDPTR dims[0] must be >= 1")
    elif stype == T_TENSOR:
        if dtype == DT_BYTES:
            bad("TENSOR must not be BYTES")
    if stype in ADAPTER_TYPES:
        if module == NONE32:
            bad("adapter section without module")
        m = modules[module]
        if stype not in MODULE_OWNS[m["type"]]:
            bad("section type not allowed in a %s module" % m["type"])
        mlayer = NONE32 if m["layer"] is None else m["layer"]
        if layer != mlayer:
            bad("layer differs from the module's layer")


def _module_rules(mi, m, entries):
    def bad(msg):
        fail("BAD_TOC", LEVEL_S, "module %d: %s" % (mi, msg))

    secs = {}
    for ent in entries:
        if ent.module == mi and ent.type in ADAPTER_TYPES:
            if ent.type in secs:
                bad("two sections of type 0x%04x" % ent.type)
            secs[ent.type] = ent
    t = m["type"]
    have = set(secs)

    def dims(ty):
        ent = secs[ty]
        return ent.dims[:ent.rank]

    in_f = out_f = None
    if t in ("lora", "dora"):
        req = {T_LORA_A, T_LORA_B} | ({T_DORA_M} if t == "dora" else set())
        if have != req:
            bad("sections are not exactly %s" % sorted(req))
        r = m["r"]
        a = dims(T_LORA_A)
        b = dims(T_LORA_B)
        if a[0] != r or b[1] != r:
            bad("LoRA rank does not match r")
        in_f, out_f = a[1], b[0]
        if t == "dora":
            mag = dims(T_DORA_M)
            n = mag[0] if len(mag) == 1 else mag[1]
            if n != out_f:
                bad("DORA_MAGNITUDE length != out")
    elif t == "ia3":
        if have != {T_IA3}:
            bad("sections are not exactly IA3_VECTOR")
        v = dims(T_IA3)
        if m["feedforward"]:
            if v[0] != 1:
                bad("feedforward IA3 vector must be [1, in]")
            in_f = v[1]
        else:
            if v[1] != 1:
                bad("non-feedforward IA3 vector must be [out, 1]")
            out_f = v[0]
    elif t == "osd":
        core = {T_OSD_U, T_OSD_S, T_OSD_VT}
        sparse = {T_OSD_INDPTR, T_OSD_INDICES, T_OSD_VALUES}
        if have != core and have != core | sparse:
            bad("sections are not U, S, Vt [+ all three sparse]")
        k = m["rank"]
        u = dims(T_OSD_U)
        s = dims(T_OSD_S)
        vt = dims(T_OSD_VT)
        if u[1] != k or s[0] != k or vt[0] != k:
            bad("OSD rank does not match k")
        out_f, in_f = u[0], vt[1]
        if sparse <= have:
            if dims(T_OSD_INDPTR)[0] != out_f + 1:
                bad("INDPTR length != out + 1")
            if dims(T_OSD_INDICES)[0] != dims(T_OSD_VALUES)[0]:
                bad("INDICES and VALUES lengths differ")
    if "in_features" in m and in_f is not None and m["in_features"] != in_f:
        bad("in_features does not match the shapes")
    if "out_features" in m and out_f is not None and m["out_features"] != out_f:
        bad("out_features does not match the shapes")


def decode_section(buf, ent, keep):
    """Access validation of one section (12.2).  Stores the decoded digest in
    ent.decoded_sha256; returns the decoded bytes when keep is true."""
    A = LEVEL_A
    h = hashlib.sha256()
    parts = [] if keep else None
    where = "section %d" % ent.index
    if ent.codec == 0:
        pos = ent.offset
        end = ent.offset + ent.stored_length
        while pos < end:
            nxt = min(end, pos + (1 << 24))
            chunk = buf[pos:nxt]
            h.update(chunk)
            if keep:
                parts.append(bytes(chunk))
            pos = nxt
    else:
        F = ent.frame_size
        D = ent.decoded_length
        n = 0 if D == 0 else (D - 1) // F + 1
        if ent.stored_length < 4 * n:
            fail("SIZE_MISMATCH", A, where + ": stored_length < frame table")
        c = struct.unpack_from("<%dI" % n, buf, ent.offset) if n else ()
        total = 4 * n + sum(c)
        if total != ent.stored_length:
            fail("SIZE_MISMATCH", A, where + ": frame table sum != stored_length")
        e = DTYPE_SIZE[ent.dtype]
        pos = ent.offset + 4 * n
        for i in range(n):
            L = min(F, D - i * F)
            frame = buf[pos:pos + c[i]]
            try:
                plain = zstd_frame_check_and_decode(frame, L, "DECODE_FAILED", A)
            except ExpertError as err:
                err.msg = where + " frame %d: " % i + err.msg
                raise
            if ent.codec == 2:
                plain = unshuffle(plain, e)
            h.update(plain)
            if keep:
                parts.append(plain)
            pos += c[i]
    digest = h.digest()
    if digest != ent.sha256:
        fail("SECTION_HASH_MISMATCH", A, where)
    ent.decoded_sha256 = digest.hex()
    return b"".join(parts) if keep else None


def _int_array(data, dtype):
    import array
    code = "i" if dtype == DT_I32 else "q"
    a = array.array(code)
    if a.itemsize != (4 if dtype == DT_I32 else 8):
        code = "l" if dtype == DT_I32 else "q"
        a = array.array(code)
    a.frombytes(data)
    if sys.byteorder != "little":
        a.byteswap()
    return a


def _check_csr(secs, kept, mi):
    def bad(msg):
        fail("DECODE_FAILED", LEVEL_F, "module %d CSR: %s" % (mi, msg))

    indptr_e = secs[T_OSD_INDPTR]
    indices_e = secs[T_OSD_INDICES]
    indptr = _int_array(kept[indptr_e.index], indptr_e.dtype)
    indices = _int_array(kept[indices_e.index], indices_e.dtype)
    out = len(indptr) - 1
    nnz = len(indices)
    n_in = secs[T_OSD_VT].dims[1]
    if indptr[0] != 0:
        bad("indptr[0] != 0")
    for o in range(out):
        if indptr[o + 1] < indptr[o]:
            bad("indptr decreases")
    if indptr[out] != nnz:
        bad("indptr[out] != nnz")
    for j in range(nnz):
        if not 0 <= indices[j] < n_in:
            bad("column index out of range")
    for o in range(out):
        for j in range(indptr[o] + 1, indptr[o + 1]):
            if indices[j] <= indices[j - 1]:
                bad("column indices not strictly increasing in row %d" % o)


def read_path(path, pubkey=None):
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return validate(b"", pubkey)
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return validate(mm, pubkey)


# ---------------------------------------------------------------------------
# writer

class WriteError(Exception):
    pass


def _encode_section(data, codec, frame_size, e):
    if codec == 0:
        return [bytes(data)]
    D = len(data)
    n = 0 if D == 0 else (D - 1) // frame_size + 1
    frames = []
    for i in range(n):
        plain = data[i * frame_size:min(D, (i + 1) * frame_size)]
        if codec == 2:
            plain = shuffle(plain, e)
        frames.append(zstd_compress_frame(plain))
    table = struct.pack("<%dI" % n, *[len(f) for f in frames]) if n else b""
    return [table] + frames


def write_file(out_path, metadata, sections, alignment=64, frame_size=1 << 20,
               signing_seed=None):
    """sections: list of dicts with name (str), type, codec, dtype, shape
    (list), layer (int or None), module (int or None), flags, data (bytes)."""
    if alignment not in ALIGNMENTS:
        raise WriteError("alignment must be 64, 256 or 4096")
    if not (is_pow2(frame_size) and (1 << 16) <= frame_size <= (1 << 26)):
        raise WriteError("frame_size must be a power of two in [2^16, 2^26]")
    if len(sections) > MAX_TOC:
        raise WriteError("too many sections")
    md_bytes = json.dumps(metadata, ensure_ascii=False, allow_nan=False,
                          separators=(",", ":")).encode("utf-8")
    if len(md_bytes) > MAX_META:
        raise WriteError("metadata too large")
    md_frame = zstd_compress_frame(md_bytes)

    out_dir = os.path.dirname(os.path.abspath(out_path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(out_path) + ".",
                               suffix=".tmp", dir=out_dir)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w+b") as f:
            f.write(b"\x00" * HEADER_FIXED)
            cursor = HEADER_FIXED
            toc = bytearray()
            names = []
            name_off = 0
            total_decoded = 0
            for k, s in enumerate(sections):
                name = s["name"].encode("utf-8")
                dtype = s["dtype"]
                if dtype not in DTYPE_SIZE:
                    raise WriteError("section %d: unknown dtype" % k)
                e = DTYPE_SIZE[dtype]
                shape = list(s["shape"])
                if len(shape) > 4:
                    raise WriteError("section %d: rank > 4" % k)
                numel = 1
                for d in shape:
                    numel *= d
                data = s["data"]
                if numel * e != len(data):
                    raise WriteError("section %d: data length %d != numel*e %d"
                                     % (k, len(data), numel * e))
                total_decoded += len(data)
                codec = s["codec"]
                if codec not in (0, 1, 2):
                    raise WriteError("section %d: unknown codec" % k)
                if s.get("flags", 0) != 0:
                    raise WriteError("section %d: a 2.0 writer MUST write TOC flags = 0"
                                     % k)
                parts = _encode_section(data, codec, frame_size, e)
                stored_length = sum(len(p) for p in parts)
                if stored_length == 0:
                    offset = 0
                else:
                    offset = -(-cursor // alignment) * alignment
                    f.write(b"\x00" * (offset - cursor))
                    for p in parts:
                        f.write(p)
                    cursor = offset + stored_length
                layer = s.get("layer")
                module = s.get("module")
                dims = shape + [0] * (4 - len(shape))
                toc += TOC_STRUCT.pack(
                    name_off, len(name), s["type"], codec, dtype, len(shape), 0,
                    0, NONE32 if layer is None else layer,
                    NONE32 if module is None else module,
                    0 if codec == 0 else frame_size, 0, offset, stored_length,
                    len(data), dims[0], dims[1], dims[2], dims[3],
                    hashlib.sha256(data).digest(), b"\x00" * 8)
                names.append(name)
                name_off += len(name)
            strings = b"".join(names)
            index = build_index(names)
            regions = []
            for blob in (md_frame, bytes(toc), index):
                off = -(-cursor // 8) * 8
                f.write(b"\x00" * (off - cursor))
                f.write(blob)
                regions.append(off)
                cursor = off + len(blob)
            str_off = cursor
            f.write(strings)
            file_length = cursor + len(strings)
            hdr = bytearray(HEADER_FIXED)
            hdr[0:8] = MAGIC
            struct.pack_into("<HHII", hdr, 0x08, 2, 0, HEADER_FIXED, len(sections))
            struct.pack_into("<III", hdr, 0x74, alignment, 0, TOC_ENTRY)
            struct.pack_into("<9Q", hdr, 0xA0, regions[0], len(md_frame),
                             len(md_bytes), regions[1], regions[2], len(index),
                             str_off, len(strings), file_length)
            f.seek(0)
            f.write(hdr)
            f.flush()
            # 11.4: file digest, then structure digest, then signature
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                if len(mm) != file_length:
                    raise WriteError("internal: length mismatch")
                fsha = file_digest(mm, file_length)
            hdr[0x14:0x34] = fsha
            ssha = structure_digest(bytes(hdr), (md_frame, bytes(toc), index, strings))
            hdr[0x80:0xA0] = ssha
            if signing_seed is not None:
                hdr[0x34:0x74] = ed25519_sign(signing_seed, SIGN_TAG + ssha)
            f.seek(0)
            f.write(hdr)
            f.flush()
            os.fsync(f.fileno())
        # self-check: the output must pass all three validation levels
        pub = None
        if signing_seed is not None:
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric import ed25519
            pub = ed25519.Ed25519PrivateKey.from_private_bytes(
                signing_seed).public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        try:
            read_path(tmp, pub)
        except ExpertError as err:
            raise WriteError("output fails validation: %s" % err)
        os.replace(tmp, out_path)
        tmp = None
        try:
            dfd = os.open(out_dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


# ---------------------------------------------------------------------------
# package files (10.7)

LEVEL_R = "rebuild"
# safetensors dtype names -> dtype ids (6.1)
ST_DTYPES = {"BOOL": 13, "U8": 6, "I8": 5, "I16": 7, "U16": 8, "F16": 2, "BF16": 3,
             "I32": 9, "U32": 10, "F32": 1, "F64": 4, "I64": 11, "U64": 12}


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        fail("BAD_SAFETENSORS", LEVEL_R, "duplicate key in the safetensors header")
    return dict(pairs)


def rebuild_file(buf, name):
    """The bytes of the package file stored as section `name` (a str): a FILE
    section's bytes, or the safetensors file rebuilt from a SAFETENSORS_HEADER
    section and the tensor sections its header lists (10.7).  Full
    validation runs first."""
    entries = []
    validate(buf, None, entries)
    by_name = dict((e.name, e) for e in entries)
    ent = by_name.get(name.encode("utf-8"))
    if ent is None:
        fail("NOT_FOUND", LEVEL_R, "no section %r" % name)
    if ent.type == T_FILE:
        return decode_section(buf, ent, True)
    if ent.type != T_ST_HEADER:
        fail("INVALID_ARGUMENT", LEVEL_R, "%r is neither FILE nor SAFETENSORS_HEADER" % name)
    hdr = decode_section(buf, ent, True)
    if len(hdr) < 8 or 8 + u64(hdr, 0) != len(hdr):
        fail("BAD_SAFETENSORS", LEVEL_R, "header length does not match the section")
    try:
        j = json.loads(bytes(hdr[8:]).decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError):
        fail("BAD_SAFETENSORS", LEVEL_R, "the header is not UTF-8 JSON")
    if not isinstance(j, dict):
        fail("BAD_SAFETENSORS", LEVEL_R, "the header is not an object")
    tensors = []
    for key, t in j.items():
        if key == "__metadata__":
            continue
        try:
            dtype = ST_DTYPES[t["dtype"]]
            shape = [int(d) for d in t["shape"]]
            begin, end = [int(x) for x in t["data_offsets"]]
        except (KeyError, TypeError, ValueError):
            fail("BAD_SAFETENSORS", LEVEL_R, "malformed entry %r" % key)
        numel = 1
        for d in shape:
            numel *= d
        if len(shape) > 4 or end - begin != numel * DTYPE_SIZE[dtype]:
            fail("BAD_SAFETENSORS", LEVEL_R, "entry %r: shape and data_offsets disagree" % key)
        tensors.append((begin, end, key, dtype, shape))
    tensors.sort()
    out = [bytes(hdr)]
    pos = 0
    for begin, end, key, dtype, shape in tensors:
        if begin != pos:
            fail("BAD_SAFETENSORS", LEVEL_R, "tensor %r does not start where the last ended" % key)
        sec = by_name.get(key.encode("utf-8"))
        if sec is None:
            fail("BAD_SAFETENSORS", LEVEL_R, "tensor %r of the header has no section" % key)
        if sec.type in (T_FILE, T_ST_HEADER) or sec.dtype != dtype or \
                list(sec.dims[:len(shape)]) != shape or sec.rank != len(shape) or \
                sec.decoded_length != end - begin:
            fail("BAD_SAFETENSORS", LEVEL_R, "tensor %r does not match its section" % key)
        out.append(decode_section(buf, sec, True))
        pos = end
    return b"".join(out)


def rebuild_path(path, name):
    with open(path, "rb") as f:
        return rebuild_file(f.read(), name)
