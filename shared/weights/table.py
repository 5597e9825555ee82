"""Name tables: one list of rows (our param path, their key, transform) drives import AND export.

  Row("layers/self_attn/q_proj/kernel", "model.layers.{i}.self_attn.q_proj.weight", LINEAR, count=N)
A row whose key holds "{i}" is *stacked*: our parameter has a leading axis of `count` layers (nn.scan),
theirs is one tensor per layer. A Transform maps their array to ours (`to_ours`) and back
(`to_theirs`); both are written with array methods (.T, .reshape, .transpose) so the same function
works on numpy arrays and on jax.ShapeDtypeStruct shapes (jax.eval_shape) for shape checks before
any data is read. Import streams tensor by tensor into preallocated arrays; export yields tensor by
tensor: a multi-GB checkpoint is never held twice.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable, Mapping, Sequence

import jax
import numpy as np

from shared.errors import CheckpointError


@dataclasses.dataclass(frozen=True)
class Transform:
  name: str
  to_ours: Callable
  to_theirs: Callable


IDENTITY = Transform("identity", lambda x: x, lambda x: x)
LINEAR = Transform("linear", lambda x: x.T, lambda x: x.T)   # torch Linear weight [out, in] <-> kernel [in, out]


def reshape(ours_shape: Sequence[int], theirs_shape: Sequence[int], name: str = "reshape") -> Transform:
  return Transform(name, lambda x: x.reshape(tuple(ours_shape)), lambda x: x.reshape(tuple(theirs_shape)))


def transpose(axes: Sequence[int], name: str = "transpose") -> Transform:
  """to_ours = x.transpose(axes); to_theirs = the inverse permutation (conv kernels etc.)."""
  inv = tuple(int(i) for i in np.argsort(axes))
  return Transform(name, lambda x: x.transpose(tuple(axes)), lambda x: x.transpose(inv))


@dataclasses.dataclass(frozen=True)
class Row:
  ours: str                 # "/"-joined path inside the params collection
  theirs: str               # their key; "{i}" marks a stacked (scanned) row
  transform: Transform = IDENTITY
  count: int | None = None  # number of stacked layers (rows with "{i}")

  @property
  def stacked(self) -> bool:
    return "{i}" in self.theirs

  def their_keys(self) -> list[str]:
    if not self.stacked:
      return [self.theirs]
    if self.count is None:
      raise CheckpointError(f"stacked row {self.theirs!r} has no layer count")
    return [self.theirs.format(i=i) for i in range(self.count)]

  @property
  def path(self) -> tuple[str, ...]:
    return tuple(self.ours.split("/"))


def _shape_of(fn, shape, dtype=np.float32) -> tuple[int, ...]:
  return tuple(jax.eval_shape(fn, jax.ShapeDtypeStruct(tuple(shape), dtype)).shape)


def check_coverage(rows: Sequence[Row], expected: Mapping[tuple, tuple]):
  """expected: {our path tuple: shape}. Raises if rows and the module's params disagree."""
  paths = {r.path for r in rows}
  missing = sorted("/".join(p) for p in expected if p not in paths)
  extra = sorted("/".join(p) for p in paths if p not in expected)
  if missing or extra:
    raise CheckpointError(f"name table does not match the module: params without a row {missing}; "
                          f"rows without a param {extra}")


def import_tensors(rows: Sequence[Row], reader, expected: Mapping[tuple, tuple], dtype,
                   ignore: Sequence[str] = (), source: str = "") -> dict[tuple, np.ndarray]:
  """Reads every row's tensors from `reader` (keys(), shape(key), get(key)) into our layout.

  Returns {our path tuple: np.ndarray in `dtype`}. Raises CheckpointError listing missing keys,
  unexpected keys (not matched by any row nor any `ignore` regex) and shape mismatches."""
  available = set(reader.keys())
  wanted = {k: r for r in rows for k in r.their_keys()}
  missing = sorted(k for k in wanted if k not in available)
  unexpected = sorted(k for k in available if k not in wanted and not any(re.fullmatch(p, k) for p in ignore))
  bad_shapes = []
  for key, row in wanted.items():
    if key in available:
      want = tuple(expected[row.path])[1:] if row.stacked else tuple(expected[row.path])
      got = _shape_of(row.transform.to_ours, reader.shape(key))
      if got != want:
        bad_shapes.append(f"{key}: {tuple(reader.shape(key))} -> {got}, expected {want} for {row.ours}")
  if missing or unexpected or bad_shapes:
    parts = []
    if missing:
      parts.append(f"missing keys {missing}")
    if unexpected:
      parts.append(f"unexpected keys {unexpected}")
    if bad_shapes:
      parts.append(f"shape mismatches {bad_shapes}")
    raise CheckpointError(f"checkpoint {source} does not match the model: " + "; ".join(parts))
  out = {}
  for row in rows:
    arr = np.empty(tuple(expected[row.path]), dtype)
    for i, key in enumerate(row.their_keys()):
      value = np.asarray(row.transform.to_ours(reader.get(key)))
      if row.stacked:
        arr[i] = value
      else:
        arr[...] = value
      del value
    out[row.path] = arr
  return out


def export_specs(rows: Sequence[Row], flat_params: Mapping[tuple, object], dtype=None
                 ) -> list[tuple[str, tuple[int, ...], np.dtype, Callable[[], np.ndarray]]]:
  """[(their key, shape, dtype, produce)] in table order; produce() materialises one tensor."""
  specs = []
  for row in rows:
    if row.path not in flat_params:
      raise CheckpointError(f"parameter {row.ours} named in the table is absent from the params")
    leaf = flat_params[row.path]
    dt = np.dtype(dtype or leaf.dtype)
    per = tuple(leaf.shape[1:]) if row.stacked else tuple(leaf.shape)
    shape = _shape_of(row.transform.to_theirs, per, dt)
    for i, key in enumerate(row.their_keys()):
      def produce(leaf=leaf, i=i, row=row, dt=dt):
        x = np.asarray(jax.device_get(leaf[i] if row.stacked else leaf[()]))
        return np.asarray(row.transform.to_theirs(x), order="C").astype(dt, copy=False)  # keeps 0-d
      specs.append((key, shape, dt, produce))
  return specs
