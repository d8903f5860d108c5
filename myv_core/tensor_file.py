"""Tensors of a checkpoint file, each read into memory of its own only when it is used.

torch.load(mmap=True) and safetensors' load_file map the whole file, and every page of a mapping
that has been read counts in the process's resident memory for as long as one tensor views it.
Loading a model copies (and usually casts) each weight, so with a mapping the file's pages and the
copies are resident together: about twice the release's 8.7 GB. Here a file is indexed once
(names, dtypes, shapes, byte offsets) and each tensor is read with plain file reads when a loader
asks for it, cast, handed over and dropped: the file stays in the OS page cache, nothing maps it,
and nothing of it is referenced once the load is done.

Two containers are indexed: safetensors, and the zip archive of torch.save (what torch >= 1.6 and
Lightning write; its pickle is read by safe_pickle, which runs nothing). The pre-1.6 legacy pickle
format interleaves tensor data with the pickle; checkpoint.py reads those whole.
"""

import ctypes
import ctypes.util
import functools
import json
import math
import os
import struct
import zipfile
from dataclasses import dataclass

import torch

from . import safe_pickle

SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
SAFETENSORS_NAMES = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}
ZIP_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # zipfile's own layout of a local file header


class FileError(ValueError):
    """The file's layout is damaged or not one this module reads; the message says what is wrong."""


@dataclass(frozen=True)
class FileTensor:
    """One tensor still in its file: what a loader needs to know before reading it, and `load`.

    offset: where the bytes of element 0 of the storage span it views lie in the file.
    """
    path: str
    offset: int
    dtype: torch.dtype
    shape: torch.Size
    stride: tuple

    @property
    def ndim(self):
        return len(self.shape)

    def numel(self):
        return math.prod(self.shape)

    def is_floating_point(self):
        return self.dtype.is_floating_point

    @property
    def nbytes(self):
        """Bytes of the storage span the tensor views (its numel's worth when contiguous)."""
        if self.numel() == 0:
            return 0
        return (1 + sum((n - 1) * s for n, s in zip(self.shape, self.stride))) * self.dtype.itemsize

    def load(self, dtype=None):
        """The tensor, read now into memory of its own; floating tensors cast to `dtype` if given."""
        raw = torch.empty(self.nbytes, dtype=torch.uint8)
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            if f.readinto(raw.numpy()) != self.nbytes:
                raise FileError(f"'{os.path.basename(self.path)}' ends inside a tensor: it is truncated; "
                                "fetch it again.")
        tensor = raw.view(self.dtype).as_strided(self.shape, self.stride)
        return cast(tensor, dtype)


def cast(tensor, dtype=None):
    """A floating-point tensor in `dtype` (None keeps it); other tensors unchanged."""
    return tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor


def read(value, dtype=None):
    """A FileTensor read, or a tensor already in memory, as a tensor (see cast)."""
    return value.load(dtype) if isinstance(value, FileTensor) else cast(value, dtype)


def load_into(module, sd, dtype=None, convert=None):
    """module.load_state_dict(sd, strict=False), one owning module at a time: (missing, unexpected).

    Each module's tensors are read, cast and loaded, then dropped, so a model is never held twice
    (file tensors and cast copies) beyond one module's weights. Each module's own
    _load_from_state_dict runs (ComfyUI's ops adopt or copy as they do for a whole state dict).
    convert: renames one owning module's tensors, read, to the module's names (it may split a tensor
    into several), e.g. a ComfyUI model config's process_clip_state_dict.
    """
    groups = {}  # owning module's name in the file -> its keys
    for key in sd:
        groups.setdefault(key.rpartition(".")[0], []).append(key)
    loaded, unexpected = set(), []
    for keys in groups.values():
        local = {key: read(sd[key], dtype) for key in keys}
        if convert is not None:
            local = convert(local)
        unexpected.extend(_load_owned(module, local))
        loaded.update(local)
        del local  # before the next module's tensors are read
    missing = sorted(set(module.state_dict()) - loaded)
    return missing, unexpected


def _load_owned(module, sd):
    """Loads sd (tensors in module's names) into each owning submodule: the keys none takes."""
    owners = {}  # owning module's name -> {tensor name in it: key in sd}
    for key in sd:
        owner, _, name = key.rpartition(".")
        owners.setdefault(owner, {})[name] = key
    unexpected = []
    for owner, names in owners.items():
        try:
            target = module.get_submodule(owner)
        except AttributeError:
            unexpected.extend(names.values())
            continue
        result = target.load_state_dict({name: sd[key] for name, key in names.items()}, strict=False)
        unexpected.extend(names[name] for name in result.unexpected_keys)
    return unexpected


@functools.cache
def _malloc_trim():
    libc = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(libc), "malloc_trim", None) if libc else None


def release_freed_memory():
    """Gives the heap memory a load freed back to the OS (glibc's malloc_trim; elsewhere nothing).

    A load allocates and frees thousands of buffers of a few MB: each tensor's bytes before their
    cast, the state dicts that core's CLIP and VAE constructors copy from. glibc serves blocks below
    its mmap threshold (which rises to 32 MiB as larger blocks are freed) from its heap and keeps the
    freed pages resident for later allocations: 0.35 GiB after MYV Checkpoint Loader reads the
    release (docs/memory.md), held through sampling. Returns whether anything was trimmed.
    """
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


def safetensors_index(path):
    """{name: FileTensor} of a .safetensors file, and its metadata."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise FileError("it has no safetensors header")
        length = struct.unpack("<Q", head)[0]
        if length > size - 8:
            raise FileError(f"its header claims {length} bytes but the file has {size - 8}")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise FileError(f"its header is not JSON ({e})") from None
    metadata = header.pop("__metadata__", None) or {}
    tensors = {}
    for name, entry in header.items():
        try:
            dtype = SAFETENSORS_DTYPES[entry["dtype"]]
            shape = torch.Size(entry["shape"])
            begin, end = entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise FileError(f"its header entry for {name!r} is not a tensor ({entry!r:.100})") from None
        if end - begin != math.prod(shape) * dtype.itemsize or 8 + length + end > size:
            raise FileError(f"tensor {name!r} lies outside the file: it is truncated")
        tensors[name] = FileTensor(path, 8 + length + begin, dtype, shape, _contiguous_strides(shape))
    return tensors, metadata


def _contiguous_strides(shape):
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


def write_safetensors(path, tensors, dtype=None, metadata=None):
    """Write {name: tensor or FileTensor} as a .safetensors file, one tensor in memory at a time.

    Floating tensors are cast to `dtype` if given. Tensors that viewed one storage are written
    apart (safetensors has no views), as save_file requires of its callers with clone().
    """
    entries, offset = {}, 0
    for name in sorted(tensors):
        value = tensors[name]
        out_dtype = dtype if dtype is not None and value.is_floating_point() else value.dtype
        nbytes = math.prod(value.shape) * out_dtype.itemsize
        entries[name] = {"dtype": SAFETENSORS_NAMES[out_dtype], "shape": list(value.shape),
                         "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata:
        entries["__metadata__"] = metadata
    header = json.dumps(entries, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        for name in sorted(tensors):
            tensor = read(tensors[name], dtype).contiguous()
            f.write(tensor.reshape(-1).view(torch.uint8).numpy().data)


class _StorageRef:
    """A storage of a torch.save archive, named by its record, not read."""

    def __init__(self, key, dtype):
        self.key, self.dtype = key, dtype


class _IndexingUnpickler(safe_pickle.Unpickler):
    """safe_pickle's unpickler whose tensors come out as FileTensors of the archive."""

    def __init__(self, file, records, **kwargs):
        super().__init__(file, **kwargs)
        self._records = records

    def persistent_load(self, pid):
        _, storage_type, key, _location, _numel = pid
        dtype = torch.uint8 if storage_type is torch.UntypedStorage else storage_type.dtype
        return _StorageRef(str(key), dtype)

    def _call(self, func, args, kwargs=None):
        if func is torch._tensor._rebuild_from_type_v2 and len(args) > 2 and isinstance(args[2], tuple):
            inner = args[2]  # (rebuild function, tensor subclass, its arguments, state)
            if inner and isinstance(inner[0], _StorageRef):
                return self._call(args[0], inner)
        if func in (torch._utils._rebuild_tensor_v2, torch._utils._rebuild_tensor) and args \
                and isinstance(args[0], _StorageRef):
            storage, storage_offset, size, stride = args[:4]
            offset = self._records(storage.key) + storage_offset * storage.dtype.itemsize
            return FileTensor(self._records.path, offset, storage.dtype, torch.Size(size), tuple(stride))
        if func in (torch._utils._rebuild_parameter, torch._utils._rebuild_parameter_with_state) \
                and args and isinstance(args[0], FileTensor):
            return args[0]
        if any(isinstance(a, _StorageRef) for a in args):
            raise FileError(f"it stores a tensor through {getattr(func, '__name__', func)!r}, a layout the pack does "
                            "not read (quantized or sparse tensors)")
        return super()._call(func, args, kwargs)


class _Records:
    """Byte offsets of the stored (uncompressed) data records of a torch.save zip archive."""

    def __init__(self, path, archive, prefix):
        self.path, self._archive, self._prefix = path, archive, prefix
        self._offsets = {}

    def __call__(self, key):
        if key not in self._offsets:
            self._offsets[key] = self._offset(key)
        return self._offsets[key]

    def _offset(self, key):
        try:
            info = self._archive.getinfo(f"{self._prefix}data/{key}")
        except KeyError:
            raise FileError(f"its tensor record data/{key} is missing: it is truncated or damaged") from None
        if info.compress_type != zipfile.ZIP_STORED:
            raise FileError(f"its tensor record data/{key} is compressed; torch.save never does that")
        with open(self.path, "rb") as f:
            f.seek(info.header_offset)
            fields = ZIP_LOCAL_HEADER.unpack(f.read(ZIP_LOCAL_HEADER.size))
        name_length, extra_length = fields[-2:]
        return info.header_offset + ZIP_LOCAL_HEADER.size + name_length + extra_length


def zip_index(path):
    """The object of a torch.save zip archive, its tensors as FileTensors (read by safe_pickle)."""
    path = os.fspath(path)
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise FileError("it is a zip archive but not one torch.save writes (no data.pkl)")
        prefix = pickles[0][:-len("data.pkl")]
        if prefix + "byteorder" in archive.namelist() and archive.read(prefix + "byteorder") != b"little":
            raise FileError("its tensors are big-endian; convert it on the machine that wrote it")
        records = _Records(path, archive, prefix)
        with archive.open(pickles[0]) as f:
            return _IndexingUnpickler(f, records, encoding="utf-8").load()
