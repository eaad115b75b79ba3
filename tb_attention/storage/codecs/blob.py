"""Blob plumbing shared by the codecs: gzip, the magic/version/JSON-header framing, numpy or torch input."""

import json
import struct
import zlib

import numpy as np

from tb_attention.storage.schema import FORMAT_VERSION, FormatError, NewerFormatError, parse_manifest

ATTENTION_MAGIC = b"TBAT"
QK_MAGIC = b"TBQK"
_HEADER = struct.Struct("<4sII")  # magic, format version, header length in bytes
_ALIGN = 8  # payload offset alignment in bytes, so typed-array views need no copy
# What a stored blob may claim, checked before anything is sized by it: a header is a small JSON
# object (a 32k-token example's token lists take ~1 MB); a JSON blob (manifest, exemplar table) is
# small; a binary blob holds at most one example's layers (a 4,096-token causal layer of 32 heads
# is 0.27 GB).
MAX_HEADER_BYTES = 16 << 20
MAX_JSON_BYTES = 64 << 20
MAX_BLOB_BYTES = 2 << 30

# Huffman-only deflate: attention bytes have a skewed distribution but few repeats, so string
# matching buys ~5 % of size at twice the time. Any gzip decoder (browsers included) reads it.
_GZIP_WBITS = 31
_GZIP_LEVEL = 6


# ---------------------------------------------------------------------------------------------
# Compression


def compress(raw):
    """gzip bytes: stored as is and served with Content-Encoding: gzip."""
    c = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS, 9, zlib.Z_HUFFMAN_ONLY)
    return c.compress(raw) + c.flush()


def decompress(blob, limit=MAX_BLOB_BYTES):
    """The gzip blob's bytes; a FormatError, not the memory, for one that inflates past `limit` bytes."""
    inflate = zlib.decompressobj(_GZIP_WBITS)
    try:
        out = inflate.decompress(blob, limit + 1)
        if len(out) > limit:
            raise FormatError(f"blob inflates to more than {limit:,} bytes: not one that tb-attention wrote")
        out += inflate.flush()
    except zlib.error as e:
        raise FormatError(f"blob is not valid gzip: {e}") from None
    if not inflate.eof or inflate.unused_data:
        raise FormatError("blob is not valid gzip: it ends early or has data after its end")
    return out


def encode_json(obj):
    return compress(json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def decode_json(blob):
    try:
        return json.loads(decompress(blob, MAX_JSON_BYTES).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise FormatError(f"blob is not gzip JSON: {e}") from None


def decode_manifest(blob):
    """The manifest of a step read from its blob, as `schema.parse_manifest` gives it."""
    return parse_manifest(decode_json(blob))


# ---------------------------------------------------------------------------------------------
# numpy arrays and torch tensors


def is_torch(x):
    return hasattr(x, "detach") and hasattr(x, "device")


def as_float32(x):
    """x as float32, a torch tensor staying on its device."""
    if is_torch(x):
        x = x.detach()
        return x if x.dtype.is_floating_point and x.dtype.itemsize == 4 else x.float()
    return np.asarray(x, dtype=np.float32)


def to_host(x):
    """A torch tensor or numpy array as a C-contiguous numpy array."""
    if is_torch(x):
        x = x.cpu().numpy()
    return np.ascontiguousarray(x)


# ---------------------------------------------------------------------------------------------
# Blobs with a JSON header and a binary payload


def pack(magic, header, payloads, version=FORMAT_VERSION):
    """The framed bytes: magic, `version`, header length, the JSON header padded to 8 bytes, the payloads."""
    head = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    head += b" " * (-(_HEADER.size + len(head)) % _ALIGN)  # pad so the payload is aligned
    return b"".join([_HEADER.pack(magic, version, len(head)), head, *payloads])


def unpack(raw, magic, newest=FORMAT_VERSION):
    """(JSON header, payload view) of framed bytes; NewerFormatError past version `newest`."""
    if len(raw) < _HEADER.size:
        raise FormatError("blob is shorter than its header")
    found, version, head_len = _header_frame(raw, magic)
    if version > newest:
        raise NewerFormatError(f"blob of storage format v{version}; this tb-attention reads up to v{newest}")
    end = _HEADER.size + head_len
    if end > len(raw):
        raise FormatError("blob header runs past its end")
    try:
        header = json.loads(raw[_HEADER.size : end].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise FormatError(f"blob header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise FormatError("blob header is not a JSON object")
    header.setdefault("num_key_tokens", header.get("num_tokens"))  # v1: square
    header.setdefault("first_layer", 0)
    return header, memoryview(raw)[end:]


def _header_frame(raw, magic):
    """(magic, version, header length) of a blob's first bytes, the magic and the length checked."""
    found, version, head_len = _HEADER.unpack_from(raw)
    if found != magic:
        raise FormatError(f"blob starts with {found!r}, expected {magic!r}")
    if head_len > MAX_HEADER_BYTES:
        raise FormatError(
            f"blob claims a header of {head_len:,} bytes (at most {MAX_HEADER_BYTES:,}): not one that tb-attention wrote"
        )
    return found, version, head_len


def payload_prefix(blob, magic, size):
    """The first `size` payload bytes of a gzip blob (fewer if it holds fewer), inflating nothing past them."""
    inflate = zlib.decompressobj(_GZIP_WBITS)
    try:
        raw = inflate.decompress(blob, _HEADER.size)
        if len(raw) < _HEADER.size:
            raise FormatError("blob is shorter than its header")
        end = _HEADER.size + _header_frame(raw, magic)[2]
        raw += inflate.decompress(inflate.unconsumed_tail, end + size - len(raw))
    except zlib.error as e:
        raise FormatError(f"blob is not valid gzip: {e}") from None
    return memoryview(raw)[end:]


def header_sizes(header, *names):
    values = [header.get(name) for name in names]
    bad = [n for n, v in zip(names, values) if not isinstance(v, int) or isinstance(v, bool) or v < 0]
    if bad:
        raise FormatError(f"header field {bad[0]!r} is not a non-negative integer")
    return values


_CHECK_CHUNK = 1 << 18  # bytes of decompressed data held at once while checking a blob


def check_gzip(blob, magic):
    """(header, payload length) of a gzip blob, checked to its end (gzip's CRC included) while holding
    at most _CHECK_CHUNK decompressed bytes beyond the header: checking a long example costs no copy."""
    inflate = zlib.decompressobj(_GZIP_WBITS)
    prefix, header, end, size, data = b"", None, None, 0, blob
    try:
        while not inflate.eof:
            chunk = inflate.decompress(data, _CHECK_CHUNK)
            if not chunk and inflate.unconsumed_tail == data:  # no progress: the input ended early
                break
            data = inflate.unconsumed_tail
            if header is not None:
                size += len(chunk)
                if size > MAX_BLOB_BYTES:
                    raise FormatError(f"blob inflates to more than {MAX_BLOB_BYTES:,} bytes: not one that tb-attention wrote")
                continue
            prefix += chunk
            if end is None and len(prefix) >= _HEADER.size:
                end = _HEADER.size + _header_frame(prefix, magic)[2]
            if end is not None and len(prefix) >= end:
                header, payload = unpack(prefix, magic)
                prefix, size = None, len(payload)
    except zlib.error as e:
        raise FormatError(f"blob is not valid gzip: {e}") from None
    if not inflate.eof or inflate.unused_data or inflate.unconsumed_tail:
        raise FormatError("blob is not valid gzip: it ends early or has data after its end")
    if header is None:
        header, payload = unpack(prefix, magic)  # raises, naming what is missing
    return header, size
