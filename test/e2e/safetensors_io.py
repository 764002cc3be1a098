"""A minimal safetensors reader and writer (numpy only).

The file format (https://github.com/huggingface/safetensors):

    8 bytes      little-endian u64 N, the header's length in bytes
    N bytes      UTF-8 JSON object: {"NAME": {"dtype": "F32", "shape": [..],
                 "data_offsets": [BEGIN, END]}, ..., "__metadata__": {str: str}}
                 (offsets relative to the start of the data section; the
                 header may be padded with trailing spaces)
    the rest     the data section: each tensor's bytes, row-major, little-endian

Used by the end-to-end tests because the interpreter that has torch 1.13 has
no `safetensors` package. BF16 has no numpy dtype: it is read and written
through uint16 and widened to/rounded from float32 (round to nearest even).
"""

import json
import struct
from typing import Dict, List, Optional, Tuple

import numpy as np

# name -> (numpy dtype stored in the file, element size)
_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # raw bits, see bf16_to_f32 / f32_to_bf16
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}

_FROM_NUMPY = {
    np.dtype("float64"): "F64",
    np.dtype("float32"): "F32",
    np.dtype("float16"): "F16",
    np.dtype("int64"): "I64",
    np.dtype("int32"): "I32",
    np.dtype("int16"): "I16",
    np.dtype("int8"): "I8",
    np.dtype("uint8"): "U8",
    np.dtype("bool"): "BOOL",
}


class SafetensorsError(Exception):
    pass


def _contiguous(array, dtype) -> np.ndarray:
    """`array` as a C-contiguous array of `dtype`, rank 0 kept rank 0
    (np.ascontiguousarray would make it rank 1)."""
    array = np.asarray(array, dtype=dtype)
    return array if array.flags.c_contiguous else array.copy(order="C")


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """uint16 bf16 bit patterns -> float32 (exact)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> uint16 bf16 bit patterns, rounding to nearest even (NaN kept NaN)."""
    x = _contiguous(x, np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        rounded = np.where(nan, ((u >> 16) | 0x40).astype(np.uint16), rounded)
    return rounded


class Tensor:
    """A tensor as stored: its safetensors dtype name and the numpy array
    (for BF16, the uint16 bit patterns)."""

    def __init__(self, dtype: str, array: np.ndarray):
        if dtype not in _DTYPES:
            raise SafetensorsError(f"unknown dtype {dtype!r}")
        self.dtype = dtype
        self.array = _contiguous(array, _DTYPES[dtype])

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(self.array.shape)

    def to_numpy(self) -> np.ndarray:
        """The values: BF16 widened to float32, everything else as stored."""
        if self.dtype == "BF16":
            return bf16_to_f32(self.array)
        return self.array.astype(self.array.dtype.newbyteorder("="))


def tensor_from_numpy(array: np.ndarray, dtype: Optional[str] = None) -> Tensor:
    """Wraps `array`; `dtype` "BF16" rounds float data to bf16, any other name
    converts with numpy (e.g. "I32" of a float array truncates)."""
    array = np.asarray(array)
    if dtype is None:
        if array.dtype not in _FROM_NUMPY:
            raise SafetensorsError(f"no safetensors dtype for numpy {array.dtype}")
        dtype = _FROM_NUMPY[array.dtype]
    if dtype == "BF16":
        return Tensor("BF16", f32_to_bf16(array.astype(np.float32)))
    return Tensor(dtype, array.astype(_DTYPES[dtype]))


def serialize(tensors: Dict[str, Tensor], metadata: Optional[Dict[str, str]] = None,
              order: Optional[List[str]] = None) -> bytes:
    """The bytes of a safetensors file holding `tensors`, laid out in `order`
    (default: sorted by name, as the reference implementation does)."""
    names = list(order) if order is not None else sorted(tensors)
    if sorted(names) != sorted(tensors):
        raise SafetensorsError("order must name every tensor exactly once")
    header: Dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    chunks = []
    offset = 0
    for name in names:
        t = tensors[name]
        data = t.array.tobytes(order="C")
        header[name] = {"dtype": t.dtype, "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # data section 8-byte aligned, as safetensors does
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def save(path: str, tensors: Dict[str, Tensor], metadata: Optional[Dict[str, str]] = None,
         order: Optional[List[str]] = None) -> None:
    with open(path, "wb") as f:
        f.write(serialize(tensors, metadata, order))


def save_numpy(path: str, arrays: Dict[str, np.ndarray], dtype: Optional[str] = None,
               metadata: Optional[Dict[str, str]] = None) -> None:
    save(path, {k: tensor_from_numpy(v, dtype) for k, v in arrays.items()}, metadata)


def parse(blob: bytes, path: str = "<bytes>") -> Tuple[Dict[str, Tensor], Dict[str, str]]:
    """(tensors, metadata) of a whole file's bytes; SafetensorsError on any defect."""
    if len(blob) < 8:
        raise SafetensorsError(f"{path}: {len(blob)} bytes, expected at least 8")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > len(blob) - 8:
        raise SafetensorsError(f"{path}: header length {n} exceeds the {len(blob) - 8} "
                               "bytes that follow (truncated?)")
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"{path}: header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header is not a JSON object")
    data = blob[8 + n:]
    metadata = header.pop("__metadata__", None) or {}
    tensors = {}
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise SafetensorsError(f"{path}: tensor '{name}' has a malformed header entry") from None
        if dtype not in _DTYPES:
            raise SafetensorsError(f"{path}: tensor '{name}' has unknown dtype {dtype!r}")
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise SafetensorsError(f"{path}: tensor '{name}' has a bad shape {shape!r}")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        size = count * _DTYPES[dtype].itemsize
        if not (0 <= begin <= end <= len(data)):
            raise SafetensorsError(f"{path}: tensor '{name}' has data_offsets [{begin}, {end}] "
                                   f"outside the {len(data)}-byte data section (truncated?)")
        if end - begin != size:
            raise SafetensorsError(f"{path}: tensor '{name}' has {end - begin} bytes, "
                                   f"expected {size} for {dtype} {shape}")
        array = np.frombuffer(data, dtype=_DTYPES[dtype], count=count, offset=begin)
        tensors[name] = Tensor(dtype, array.reshape(shape))
    return tensors, metadata


def load(path: str) -> Dict[str, Tensor]:
    with open(path, "rb") as f:
        return parse(f.read(), path)[0]


def load_numpy(path: str) -> Dict[str, np.ndarray]:
    """name -> values (BF16 widened to float32)."""
    return {k: t.to_numpy() for k, t in load(path).items()}


def load_with_metadata(path: str) -> Tuple[Dict[str, Tensor], Dict[str, str]]:
    with open(path, "rb") as f:
        return parse(f.read(), path)
