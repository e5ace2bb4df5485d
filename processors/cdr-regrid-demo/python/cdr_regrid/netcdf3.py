"""Read NetCDF classic files (CDF-1 and CDF-2, what `cdo -f nc` writes) with numpy alone.

A few dozen lines instead of netCDF4 or scipy keep the image small; NetCDF-4 (HDF5) files are
refused with a clear message.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_TYPES = {1: ">i1", 2: "S1", 3: ">i2", 4: ">i4", 5: ">f4", 6: ">f8"}
_ABSENT, _DIMENSION, _VARIABLE, _ATTRIBUTE = 0, 10, 11, 12


@dataclass
class Variable:
    dimensions: tuple[str, ...]
    attributes: dict[str, object]
    dtype: np.dtype
    vsize: int
    begin: int
    is_record: bool


@dataclass
class Dataset:
    """The header of a classic NetCDF file, and its variables' data on demand."""

    path: Path
    dimensions: dict[str, int] = field(default_factory=dict)
    attributes: dict[str, object] = field(default_factory=dict)
    variables: dict[str, Variable] = field(default_factory=dict)
    records: int = 0
    _data: bytes = b""

    def read(self, name: str) -> np.ndarray:
        """The variable's values, unpacked (scale_factor, add_offset) and fill values masked as NaN."""
        var = self.variables[name]
        shape = [self.dimensions[d] for d in var.dimensions]
        if var.is_record:
            shape[0] = self.records
            one = int(np.prod(shape[1:], dtype=np.int64))
            record_vars = [v for v in self.variables.values() if v.is_record]
            # records interleave every record variable's slice; a lone one is stored unpadded
            stride = one * var.dtype.itemsize if len(record_vars) == 1 else sum(v.vsize for v in record_vars)
            chunks = [
                np.frombuffer(self._data, var.dtype, one, var.begin + r * stride) for r in range(self.records)
            ]
            values = np.concatenate(chunks) if chunks else np.empty(0, var.dtype)
        else:
            values = np.frombuffer(self._data, var.dtype, int(np.prod(shape, dtype=np.int64)), var.begin)
        values = values.reshape(shape).astype(np.float64)
        for fill in ("_FillValue", "missing_value"):
            if fill in var.attributes:
                values[values == np.float64(var.attributes[fill])] = np.nan  # type: ignore[arg-type]
        scale = float(var.attributes.get("scale_factor", 1.0))  # type: ignore[arg-type]
        return values * scale + float(var.attributes.get("add_offset", 0.0))  # type: ignore[arg-type]


class _Reader:
    def __init__(self, data: bytes, offset_size: int) -> None:
        self.data, self.pos, self.offset_size = data, 4, offset_size

    def int(self, size: int = 4) -> int:
        (value,) = struct.unpack_from(">i" if size == 4 else ">q", self.data, self.pos)
        self.pos += size
        return int(value)

    def name(self) -> str:
        length = self.int()
        text = self.data[self.pos : self.pos + length].decode("utf-8")
        self.pos += -(-length // 4) * 4
        return text

    def attributes(self) -> dict[str, object]:
        tag, count = self.int(), self.int()
        if tag not in (_ABSENT, _ATTRIBUTE):
            raise ValueError(f"bad attribute list tag {tag}")
        found: dict[str, object] = {}
        for _ in range(count):
            name, kind, length = self.name(), self.int(), self.int()
            dtype = np.dtype(_TYPES[kind])
            raw = self.data[self.pos : self.pos + length * dtype.itemsize]
            self.pos += -(-len(raw) // 4) * 4
            if kind == 2:
                found[name] = raw.rstrip(b"\0").decode("utf-8", "replace")
            else:
                values = np.frombuffer(raw, dtype)
                found[name] = values[0] if length == 1 else values
        return found


def open_dataset(path: str | Path) -> Dataset:
    """Parse the header of a classic NetCDF file; variables are read with `Dataset.read`."""
    data = Path(path).read_bytes()
    if data[:3] != b"CDF" or data[3] not in (1, 2):
        kind = "a NetCDF-4/HDF5 file" if data[:4] == b"\x89HDF" else "no NetCDF file"
        raise ValueError(f"{path}: {kind}; this reader reads NetCDF classic (write it with `cdo -f nc`)")
    reader = _Reader(data, 4 if data[3] == 1 else 8)
    dataset = Dataset(Path(path), _data=data)
    dataset.records = reader.int()
    tag, count = reader.int(), reader.int()
    if tag not in (_ABSENT, _DIMENSION):
        raise ValueError(f"{path}: bad dimension list tag {tag}")
    names = []
    for _ in range(count):
        name, length = reader.name(), reader.int()
        names.append(name)
        dataset.dimensions[name] = length
    record_dim = next((n for n in names if dataset.dimensions[n] == 0), None)
    dataset.attributes = reader.attributes()
    tag, count = reader.int(), reader.int()
    if tag not in (_ABSENT, _VARIABLE):
        raise ValueError(f"{path}: bad variable list tag {tag}")
    for _ in range(count):
        name = reader.name()
        dims = tuple(names[reader.int()] for _ in range(reader.int()))
        attributes = reader.attributes()
        dtype = np.dtype(_TYPES[reader.int()])
        vsize, begin = reader.int(), reader.int(reader.offset_size)
        is_record = bool(dims) and dims[0] == record_dim
        dataset.variables[name] = Variable(dims, attributes, dtype, vsize, begin, is_record)
    return dataset
