"""safetensors reading/writing (single file or sharded with index.json) and config.json, streaming.

The reader parses headers only and reads one tensor at a time from disk (np.fromfile at its offset);
the writer writes the header first, then tensors one by one as they are produced. So converting a
multi-GB checkpoint holds at most the converted tree plus one tensor. bfloat16 via ml_dtypes.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Sequence

import ml_dtypes
import numpy as np

from shared.errors import CheckpointError

_DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn), "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}
_NAMES = {v: k for k, v in _DTYPES.items()}

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"


def read_json(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise CheckpointError(f"file {path} not found") from None
  except json.JSONDecodeError as e:
    raise CheckpointError(f"file {path} is not valid JSON: {e}") from None


def write_json(path: str, obj: dict):
  with open(path, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write("\n")


def _read_header(path: str) -> tuple[dict, int]:
  try:
    with open(path, "rb") as f:
      (n,) = struct.unpack("<Q", f.read(8))
      header = json.loads(f.read(n))
  except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CheckpointError(f"file {path} is not a safetensors file: {e}") from None
  return header, 8 + n


def to_numpy(v) -> np.ndarray:
  """A torch tensor (bf16/fp16 widened to fp32: numpy has no bfloat16) or array-like -> numpy."""
  if hasattr(v, "detach"):
    v = v.detach().cpu()
    v = (v.float() if v.is_floating_point() and v.element_size() < 4 else v).numpy()
  return np.asarray(v)


class StateDictReader:
  """An in-memory state_dict (torch tensors or arrays) behind the reader interface: keys(), shape(key), get(key)."""

  def __init__(self, state_dict):
    self._sd = state_dict

  def keys(self):
    return list(self._sd)

  def shape(self, key):
    return tuple(self._sd[key].shape)

  def get(self, key):
    return to_numpy(self._sd[key])


class SafetensorsReader:
  """Lazy view of a checkpoint: a .safetensors file, or a directory with model.safetensors, an
  index.json (sharded), or *.safetensors files. keys(), shape(key), dtype(key), get(key[, dtype])."""

  def __init__(self, path: str, index_name: str = INDEX, single_name: str = SINGLE):
    self.source = path
    files: list[str]
    if os.path.isdir(path):
      if os.path.exists(os.path.join(path, index_name)):
        weight_map = read_json(os.path.join(path, index_name)).get("weight_map", {})
        files = sorted({os.path.join(path, f) for f in weight_map.values()})
      elif os.path.exists(os.path.join(path, single_name)):
        files = [os.path.join(path, single_name)]
      else:
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".safetensors"))
      if not files:
        raise CheckpointError(f"no safetensors weights in directory {path} (expected {single_name} or {index_name})")
    else:
      files = [path]
    self._entries = {}
    for f in files:
      header, start = _read_header(f)
      for k, v in header.items():
        if k == "__metadata__":
          continue
        if v["dtype"] not in _DTYPES:
          raise CheckpointError(f"file {f} key {k!r}: unsupported dtype {v['dtype']}")
        self._entries[k] = (f, start + v["data_offsets"][0], _DTYPES[v["dtype"]], tuple(v["shape"]))

  def keys(self):
    return list(self._entries)

  def __contains__(self, key):
    return key in self._entries

  def shape(self, key):
    return self._entries[key][3]

  def dtype(self, key):
    return self._entries[key][2]

  def get(self, key, dtype=None) -> np.ndarray:
    f, offset, dt, shape = self._entries[key]
    arr = np.fromfile(f, dtype=dt, count=int(np.prod(shape, dtype=np.int64)), offset=offset).reshape(shape)
    return arr if dtype is None else arr.astype(dtype)


Spec = tuple  # (key, shape, dtype, produce: () -> np.ndarray)


def write_safetensors(path: str, specs: Sequence[Spec], metadata: dict | None = None):
  """Writes tensors in `specs` order: header from shapes/dtypes, then each produce() streamed."""
  header, offset = {}, 0
  for key, shape, dt, _ in specs:
    n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize
    header[key] = {"dtype": _NAMES[np.dtype(dt)], "shape": list(shape), "data_offsets": [offset, offset + n]}
    offset += n
  header["__metadata__"] = {"format": "pt", **(metadata or {})}
  raw = json.dumps(header, separators=(",", ":")).encode()
  raw += b" " * (-len(raw) % 8)
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(raw)))
    f.write(raw)
    for key, shape, dt, produce in specs:
      x = np.asarray(produce(), dtype=dt, order="C")  # C-contiguous; keeps 0-d (ascontiguousarray makes it 1-d)
      if tuple(x.shape) != tuple(shape):
        raise CheckpointError(f"tensor {key} has shape {x.shape}, header says {tuple(shape)}")
      f.write(x.tobytes())
      del x


def parse_size(size) -> int:
  if isinstance(size, int):
    return size
  s = str(size).strip().upper()
  for unit, mult in (("GB", 10 ** 9), ("MB", 10 ** 6), ("KB", 10 ** 3), ("B", 1)):
    if s.endswith(unit):
      return int(float(s[:-len(unit)]) * mult)
  return int(s)


def write_checkpoint(directory: str, specs: Sequence[Spec], max_shard_size="5GB",
                     single_name: str = SINGLE, index_name: str = INDEX):
  """model.safetensors, or model-0000k-of-0000n.safetensors + index.json when over max_shard_size."""
  os.makedirs(directory, exist_ok=True)
  limit = parse_size(max_shard_size)
  shards, cur, cur_bytes = [], [], 0
  for spec in specs:
    n = int(np.prod(spec[1], dtype=np.int64)) * np.dtype(spec[2]).itemsize
    if cur and cur_bytes + n > limit:
      shards.append(cur)
      cur, cur_bytes = [], 0
    cur.append(spec)
    cur_bytes += n
  shards.append(cur)
  stem = single_name[:-len(".safetensors")]
  for stale in os.listdir(directory):  # never leave an old index/shard next to the new files
    if stale.startswith(stem) and (stale.endswith(".safetensors") or stale == index_name):
      os.remove(os.path.join(directory, stale))
  if len(shards) == 1:
    write_safetensors(os.path.join(directory, single_name), shards[0])
    return
  weight_map, total = {}, 0
  for i, shard in enumerate(shards):
    name = f"{stem}-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    write_safetensors(os.path.join(directory, name), shard)
    for key, shape, dt, _ in shard:
      weight_map[key] = name
      total += int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize
  write_json(os.path.join(directory, index_name), {"metadata": {"total_size": total}, "weight_map": weight_map})
