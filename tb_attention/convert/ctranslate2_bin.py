"""Reads CTranslate2's `model.bin` (binary version 6) into numpy arrays, without CTranslate2."""

# Layout (little-endian), as CTranslate2's ModelSpec writes it:
#   u32 version | string spec name | u32 spec revision | u32 variable count
#   per variable: string name | u8 rank | u32 dims[rank] | u8 dtype | u32 byte count | raw bytes
#   u32 alias count | per alias: string alias | string target
# where a string is a u16 length (counting a trailing NUL) followed by the UTF-8 bytes and the NUL.
# Quantized weights carry a sibling `<name>_scale` that they are divided by.

import dataclasses
import pathlib
import struct

import numpy as np

SUPPORTED_VERSIONS = (6,)
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}


class FormatError(ValueError):
    """The file is not a CTranslate2 model.bin this reader understands."""


@dataclasses.dataclass
class Model:
    spec: str  # e.g. "WhisperSpec"
    revision: int
    variables: dict  # name -> numpy array (float16/float32 weights, integer scalars, ...)

    def float32(self, name):
        """The variable as float32, dequantized if it was stored as int8/int16 with a scale."""
        value = self.variables[name]
        scale = self.variables.get(name + "_scale")
        if value.dtype in (np.int8, np.int16) and scale is not None:
            scale = np.asarray(scale, np.float32)
            return value.astype(np.float32) / (scale[:, None] if scale.ndim == 1 else scale)
        return value.astype(np.float32)

    def scalar(self, name):
        return self.variables[name].reshape(()).item()


class _Reader:
    def __init__(self, data):
        self.data, self.offset = data, 0

    def take(self, fmt):
        try:
            values = struct.unpack_from("<" + fmt, self.data, self.offset)
        except struct.error:
            raise FormatError(f"file ends at byte {self.offset} inside a header") from None
        self.offset += struct.calcsize("<" + fmt)
        return values[0] if len(values) == 1 else values

    def string(self):
        size = self.take("H")
        raw = self.data[self.offset : self.offset + size]
        if len(raw) != size or not raw.endswith(b"\0"):
            raise FormatError(f"bad string at byte {self.offset}")
        self.offset += size
        return raw[:-1].decode("utf-8")

    def array(self, dtype, shape, size):
        raw = self.data[self.offset : self.offset + size]
        if len(raw) != size:
            raise FormatError(f"file ends inside a variable's data (byte {self.offset})")
        self.offset += size
        if dtype == "bfloat16":  # numpy has no bfloat16: widen the upper 16 bits of a float32
            return (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(shape)
        return np.frombuffer(raw, dtype).reshape(shape)


def read(path):
    """Reads a model.bin: its spec name, revision and every variable (aliases resolved)."""
    data = pathlib.Path(path).read_bytes()
    reader = _Reader(data)
    version = reader.take("I")
    if version not in SUPPORTED_VERSIONS:
        raise FormatError(f"{path}: CTranslate2 binary version {version}; this reader knows {SUPPORTED_VERSIONS}")
    spec = reader.string()
    revision = reader.take("I")
    variables = {}
    for _ in range(reader.take("I")):
        name = reader.string()
        shape = tuple(reader.take("I") for _ in range(reader.take("B")))
        type_id = reader.take("B")
        if type_id not in _DTYPES:
            raise FormatError(f"{path}: variable {name} has unknown dtype id {type_id}")
        size = reader.take("I")
        variables[name] = reader.array(_DTYPES[type_id], shape, size)
    for _ in range(reader.take("I")):
        alias, target = reader.string(), reader.string()
        variables[alias] = variables[target]
    if reader.offset != len(data):
        raise FormatError(f"{path}: {len(data) - reader.offset} unread bytes after the aliases")
    return Model(spec, revision, variables)
