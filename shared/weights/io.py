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
  """A JSON object (config.json, index.json, adapter_config.json); CheckpointError naming the file if it is
  missing, unreadable, not valid JSON or not an object."""
  try:
    with open(path, "rb") as f:
      obj = json.loads(f.read().decode("utf-8"))
  except FileNotFoundError:
    raise CheckpointError(f"file {path} not found") from None
  except OSError as e:
    raise CheckpointError(f"file {path} cannot be read: {e.strerror or e}") from None
  except UnicodeDecodeError as e:
    raise CheckpointError(f"file {path} is not valid JSON: not UTF-8 text ({e.reason} at byte {e.start})") from None
  except json.JSONDecodeError as e:
    raise CheckpointError(f"file {path} is not valid JSON: {e}") from None
  if not isinstance(obj, dict):
    raise CheckpointError(f"file {path} is not a JSON object (got a JSON {type(obj).__name__})")
  return obj


def write_json(path: str, obj: dict):
  with open(path, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write("\n")


def _count(shape) -> int:
  return int(np.prod(shape, dtype=np.int64))


def _read_header(path: str) -> tuple[dict, int]:
  """(header dict, byte offset of the data) after checking the file against its header: the length field,
  the JSON, and each tensor's dtype, shape and data_offsets (nbytes == end - start, inside the file, no
  overlaps). Reads the header only. CheckpointError naming the file (and the tensor key) otherwise."""
  try:
    size = os.path.getsize(path)
    with open(path, "rb") as f:
      head = f.read(8)
      if len(head) < 8:
        raise CheckpointError(f"safetensors file {path} is truncated: {size} bytes, shorter than the 8-byte "
                              "header length field")
      (n,) = struct.unpack("<Q", head)
      if 8 + n > size:
        raise CheckpointError(f"safetensors file {path} is truncated or not a safetensors file: its header "
                              f"length field says {n} bytes of header but the file has {size} bytes")
      raw = f.read(n)
  except FileNotFoundError:
    raise CheckpointError(f"safetensors file {path} not found") from None
  except IsADirectoryError:
    raise CheckpointError(f"safetensors file {path} is a directory") from None
  except OSError as e:
    raise CheckpointError(f"safetensors file {path} cannot be read: {e.strerror or e}") from None
  if len(raw) < n:  # the file shrank while being read
    raise CheckpointError(f"safetensors file {path} is truncated: header of {n} bytes, only {len(raw)} read")
  try:
    header = json.loads(raw.decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise CheckpointError(f"safetensors file {path}: header is not valid JSON ({e})") from None
  if not isinstance(header, dict):
    raise CheckpointError(f"safetensors file {path}: header is a JSON {type(header).__name__}, not an object")
  data_size = size - 8 - n
  spans = []
  for k, v in header.items():
    if k == "__metadata__":
      continue
    where = f"safetensors file {path} tensor {k!r}"
    if not isinstance(v, dict) or not {"dtype", "shape", "data_offsets"} <= set(v):
      raise CheckpointError(f"{where}: header entry {v!r} lacks dtype / shape / data_offsets")
    dt, shape, offs = v["dtype"], v["shape"], v["data_offsets"]
    if dt not in _DTYPES:
      raise CheckpointError(f"{where}: unsupported dtype {dt!r} (supported: {sorted(_DTYPES)})")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
      raise CheckpointError(f"{where}: shape {shape!r} is not a list of non-negative integers")
    if (not isinstance(offs, list) or len(offs) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs) or not 0 <= offs[0] <= offs[1]):
      raise CheckpointError(f"{where}: data_offsets {offs!r} is not [start, end] with 0 <= start <= end")
    nbytes = _count(shape) * _DTYPES[dt].itemsize
    if offs[1] - offs[0] != nbytes:
      raise CheckpointError(f"{where}: {dt} {tuple(shape)} is {nbytes} bytes but data_offsets {offs} span "
                            f"{offs[1] - offs[0]} bytes")
    spans.append((offs[0], offs[1], k))
  spans.sort()
  for (_, end0, k0), (start1, _, k1) in zip(spans, spans[1:]):
    if start1 < end0:
      raise CheckpointError(f"safetensors file {path}: tensors {k0!r} and {k1!r} overlap (data_offsets)")
  beyond = [(end, k) for _, end, k in spans if end > data_size]
  if beyond:
    end, k = min(beyond)
    raise CheckpointError(f"safetensors file {path} is truncated: the file has {size} bytes, its header says "
                          f"{8 + n + max(e for _, e, _ in spans)} (tensor {k!r} ends at byte {8 + n + end}; "
                          f"{len(beyond)} of {len(spans)} tensors lie past the end)")
  return header, 8 + n


def to_numpy(v) -> np.ndarray:
  """A torch tensor (bf16/fp16 widened to fp32: numpy has no bfloat16) or array-like -> numpy."""
  if hasattr(v, "detach"):
    v = v.detach().cpu()
    v = (v.float() if v.is_floating_point() and v.element_size() < 4 else v).numpy()
  return np.asarray(v)


def load_torch_state_dict(path: str, *, unwrap: tuple[str, ...] = ("generator", "state_dict", "model")) -> dict:
  """A torch checkpoint file (.pt/.pth/.bin/...) -> its state dict {key: torch tensor}, read with
  torch.load(weights_only=True) (no pickled code runs; torch imported lazily). A dict holding the state dict under
  one of `unwrap` is unwrapped (in that order, nested wrappers too); entries that are not tensors are dropped."""
  if not os.path.isfile(path):
    raise CheckpointError(f"weights file {path} not found")
  try:
    import torch  # noqa: PLC0415 (optional dependency, only for torch files)
  except ImportError:
    raise CheckpointError(f"reading {path} needs torch (pip install torch), or convert it to .safetensors") from None
  try:
    sd = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # noqa: BLE001 -- pickle errors, truncated files, ...
    raise CheckpointError(f"{path}: torch.load(weights_only=True) failed: {type(e).__name__}: {e}") from None
  for k in unwrap:
    if isinstance(sd, dict) and isinstance(sd.get(k), dict):
      sd = sd[k]
  if not isinstance(sd, dict):
    raise CheckpointError(f"{path} holds a {type(sd).__name__}, expected a state dict")
  return {k: v for k, v in sd.items() if hasattr(v, "shape")}


def read_state_dict(path: str, *, unwrap: tuple[str, ...] = ("generator", "state_dict", "model")
                    ) -> dict[str, np.ndarray]:
  """A weights file -> {key: numpy array}: .safetensors, .npz, or a torch checkpoint (load_torch_state_dict;
  bf16/fp16 tensors widened to fp32)."""
  if not os.path.isfile(path):
    raise CheckpointError(f"weights file {path} not found")
  if path.endswith(".safetensors"):
    reader = SafetensorsReader(path)
    return {k: reader.get(k) for k in reader.keys()}
  if path.endswith(".npz"):
    with np.load(path) as z:
      return {k: z[k] for k in z.files}
  return {k: to_numpy(v) for k, v in load_torch_state_dict(path, unwrap=unwrap).items()}


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
    listed: dict[str, list[str]] = {}  # shard file -> keys its index says it holds
    if os.path.isdir(path):
      index_path = os.path.join(path, index_name)
      if os.path.exists(index_path):
        files, listed = _index_files(index_path)
      elif os.path.exists(os.path.join(path, single_name)):
        files = [os.path.join(path, single_name)]
      else:
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".safetensors"))
      if not files:
        raise CheckpointError(f"no safetensors weights in directory {path} (expected {single_name} or {index_name})")
    elif not os.path.exists(path):
      raise CheckpointError(f"checkpoint {path} not found (expected a directory or a .safetensors file)")
    else:
      files = [path]
    self._entries = {}
    for f in files:
      header, start = _read_header(f)
      for k, v in header.items():
        if k == "__metadata__":
          continue
        self._entries[k] = (f, start + v["data_offsets"][0], _DTYPES[v["dtype"]], tuple(v["shape"]))
      absent = [k for k in listed.get(f, ()) if k not in header]
      if absent:
        raise CheckpointError(f"index {os.path.join(path, index_name)}: shard {os.path.relpath(f, path)} lacks "
                              f"{len(absent)} key(s) its weight_map assigns to it: {absent[:20]}"
                              f"{' ...' if len(absent) > 20 else ''}")

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
    count = _count(shape)
    try:
      arr = np.fromfile(f, dtype=dt, count=count, offset=offset)
    except OSError as e:
      raise CheckpointError(f"safetensors file {f} tensor {key!r} cannot be read: {e.strerror or e}") from None
    if arr.size != count:  # the file was cut after its header was checked
      raise CheckpointError(f"safetensors file {f} is truncated: tensor {key!r} {shape} needs {count} "
                            f"elements at byte {offset}, the file holds {arr.size}")
    arr = arr.reshape(shape)
    return arr if dtype is None else arr.astype(dtype)


def _index_files(index_path: str) -> tuple[list[str], dict[str, list[str]]]:
  """(sorted shard paths, {shard path: keys}) of a *.safetensors.index.json; CheckpointError naming the index
  and every shard file it names that does not exist."""
  weight_map = read_json(index_path).get("weight_map")
  if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
    raise CheckpointError(f"index {index_path}: \"weight_map\" must be an object {{tensor key: shard file name}}, "
                          f"got {type(weight_map).__name__}")
  directory = os.path.dirname(index_path)
  listed: dict[str, list[str]] = {}
  for k, name in weight_map.items():
    listed.setdefault(os.path.join(directory, name), []).append(k)
  if not listed:
    raise CheckpointError(f"index {index_path}: \"weight_map\" is empty (no shard files listed)")
  missing = sorted(os.path.relpath(f, directory) for f in listed if not os.path.isfile(f))
  if missing:
    raise CheckpointError(f"index {index_path} names {len(missing)} shard file(s) that do not exist in {directory}: "
                          f"{missing} ({len(listed)} shards listed)")
  return sorted(listed), listed


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
