"""Name tables: one list of rows (our param path, their key, transform) drives import AND export.

  Row("layers/self_attn/q_proj/kernel", "model.layers.{i}.self_attn.q_proj.weight", LINEAR, count=N)
A row whose key holds "{i}" is *stacked*: our parameter has a leading axis of `count` layers (nn.scan),
theirs is one tensor per layer. A Transform maps their array to ours (`to_ours`) and back
(`to_theirs`); both are written with array methods (.T, .reshape, .transpose) so the same function
works on numpy arrays and on jax.ShapeDtypeStruct shapes (jax.eval_shape) for shape checks before
any data is read. Import streams tensor by tensor into preallocated arrays; export yields tensor by
tensor: a multi-GB checkpoint is never held twice.

Other collections than params (BatchNorm statistics): a row's `collection` names the variables collection
its `ours` path lies in ("params" unless said); `batchnorm_rows` writes a torch BatchNorm's five keys. The
table functions below key rows by `row.path`; for a whole variables dict {"params": ..., "batch_stats": ...}
give them `leaf_rows(rows, variables=True)` (paths prefixed by the collection). Constant rows (`constant`,
e.g. num_batches_tracked) name no leaf of ours: `leaf_rows` leaves them out, `constant_ignore` gives
their keys as ignore regexes for import and `constant_specs` their tensors for export.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

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
  collection: str = "params"  # the variables collection `ours` lies in ("batch_stats": BatchNorm statistics)
  # A their-only key (ours ""): export writes constant() (a numpy array) under each of their keys; import
  # accepts the key, present or absent, and never reads it (e.g. BatchNorm's num_batches_tracked).
  constant: Callable[[], np.ndarray] | None = None

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


@dataclasses.dataclass
class Mismatch:
  """How a checkpoint's keys meet a name table (match_tensors). Empty (falsy) when they agree."""
  missing: list = dataclasses.field(default_factory=list)      # [(their key, row)] the checkpoint lacks
  unexpected: list = dataclasses.field(default_factory=list)   # [their key] no row reads and no ignore regex
  # [(their key, row, file shape, shape after row.transform.to_ours (None: it does not convert), expected shape)]
  mis_shaped: list = dataclasses.field(default_factory=list)

  def __bool__(self) -> bool:
    return bool(self.missing or self.unexpected or self.mis_shaped)

  def bad_rows(self) -> set[str]:
    """`ours` of every row with a missing or mis-shaped tensor."""
    return {r.ours for _, r in self.missing} | {m[1].ours for m in self.mis_shaped}


def _converted_shape(row: Row, shape) -> tuple[int, ...] | None:
  try:
    return _shape_of(row.transform.to_ours, shape)
  except Exception:  # e.g. a reshape transform given a tensor of another size
    return None


def match_tensors(rows: Sequence[Row], reader, expected: Mapping[tuple, tuple], ignore: Sequence[str] = ()
                  ) -> Mismatch:
  """Compares the reader's keys and shapes with the rows (reads no tensor data). `expected`: {our path: shape}
  (a stacked row's per-tensor shape is expected[path][1:])."""
  available = set(reader.keys())
  wanted = {k: r for r in rows for k in r.their_keys()}
  out = Mismatch()
  out.missing = sorted(((k, r) for k, r in wanted.items() if k not in available), key=lambda kr: kr[0])
  out.unexpected = sorted(k for k in available if k not in wanted and not any(re.fullmatch(p, k) for p in ignore))
  for key, row in wanted.items():
    if key in available:
      want = tuple(expected[row.path])[1:] if row.stacked else tuple(expected[row.path])
      got = _converted_shape(row, reader.shape(key))
      if got != want:
        out.mis_shaped.append((key, row, tuple(reader.shape(key)), got, want))
  return out


def read_row(row: Row, reader, shape: Sequence[int], dtype) -> np.ndarray:
  """One row's tensor(s) from `reader`, converted to our layout, in a new `dtype` array of `shape`
  (a stacked row's layers go to arr[i]); one checkpoint tensor is held besides it at a time."""
  arr = np.empty(tuple(shape), dtype)
  for i, key in enumerate(row.their_keys()):
    value = np.asarray(row.transform.to_ours(reader.get(key)))
    if row.stacked:
      arr[i] = value
    else:
      arr[...] = value
    del value
  return arr


def import_tensors(rows: Sequence[Row], reader, expected: Mapping[tuple, tuple], dtype,
                   ignore: Sequence[str] = (), source: str = "",
                   on_mismatch: Callable[[Mismatch], None] | None = None) -> dict[tuple, np.ndarray]:
  """Reads every row's tensors from `reader` (keys(), shape(key), get(key)) into our layout.

  Returns {our path tuple: np.ndarray in `dtype`}. Raises CheckpointError listing missing keys,
  unexpected keys (not matched by any row nor any `ignore` regex) and shape mismatches.
  on_mismatch (lenient import): called with the Mismatch instead of raising; rows with a missing or
  mis-shaped tensor are then left out of the result (unexpected keys are not read)."""
  found = match_tensors(rows, reader, expected, ignore)
  if found and on_mismatch is not None:
    on_mismatch(found)
  elif found:
    parts = []
    if found.missing:
      parts.append(f"missing keys {[k for k, _ in found.missing]}")
    if found.unexpected:
      parts.append(f"unexpected keys {found.unexpected}")
    if found.mis_shaped:
      bad_shapes = [f"{k}: {theirs} -> {got}, expected {want} for {row.ours}"
                    for k, row, theirs, got, want in found.mis_shaped]
      parts.append(f"shape mismatches {bad_shapes}")
    raise CheckpointError(f"checkpoint {source} does not match the model: " + "; ".join(parts))
  bad = found.bad_rows()
  return {row.path: read_row(row, reader, expected[row.path], dtype) for row in rows if row.ours not in bad}


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


# ---- a family's in-memory import / export (the steps every state_dict family repeats) ----

def import_params(rows: Sequence[Row], reader, expected_shapes: Mapping[tuple, tuple], dtype, source: str = "",
                  ignore: Sequence[str] = ()) -> dict:
  """import_tensors (strict) -> the nested params tree of jax arrays in `dtype`."""
  flat = import_tensors(rows, reader, expected_shapes, np.dtype(dtype), ignore, source=source)
  return traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in flat.items()})


def export_params_specs(rows: Sequence[Row], params, expected_shapes: Mapping[tuple, tuple] | None = None,
                        class_name: str = "the model", dtype=None) -> list:
  """params (nested, boxed or not) -> export_specs, after check_coverage and, when `expected_shapes` is given,
  a shape check raising CheckpointError "params do not match <class_name> with this config: [...]"."""
  flat = traverse_util.flatten_dict(nn.meta.unbox(params))
  check_coverage(rows, {k: v.shape for k, v in flat.items()})
  if expected_shapes is not None:
    bad = [f"{'/'.join(k)}: {tuple(v.shape)}, expected {expected_shapes[k]}" for k, v in flat.items()
           if tuple(v.shape) != tuple(expected_shapes[k])]
    if bad:
      raise CheckpointError(f"params do not match {class_name} with this config: {bad[:8]}")
  return export_specs(rows, flat, dtype)


def export_state_dict(rows: Sequence[Row], params, expected_shapes: Mapping[tuple, tuple] | None = None,
                      class_name: str = "the model", dtype=None) -> dict[str, np.ndarray]:
  """export_params_specs materialised: {their key: np.ndarray} in table order."""
  return {key: produce() for key, _, _, produce in export_params_specs(rows, params, expected_shapes, class_name,
                                                                      dtype)}


# ---- other collections (BatchNorm statistics) and constant rows ----

def leaf_rows(rows: Sequence[Row], variables: bool = False) -> list[Row]:
  """The rows naming a leaf of ours (constant rows left out). variables=True: `ours` becomes the path in the
  whole variables dict, prefixed by the row's collection ("batch_stats/bn1/mean"), which is how such rows
  are keyed when `expected` / the flat tree are variables paths (apply it once: the prefix is not idempotent)."""
  return [dataclasses.replace(r, ours=f"{r.collection}/{r.ours}") if variables else r
          for r in rows if r.constant is None]


def constant_ignore(rows: Sequence[Row]) -> list[str]:
  """Import: regexes matching the keys of the constant rows (accepted when present, never read)."""
  return [re.escape(k) for r in rows if r.constant is not None for k in r.their_keys()]


def constant_specs(rows: Sequence[Row]) -> list[tuple[str, tuple[int, ...], np.dtype, Callable[[], np.ndarray]]]:
  """Export: [(their key, shape, dtype, produce)] of the constant rows, in their own dtype (never cast)."""
  specs = []
  for r in rows:
    if r.constant is not None:
      value = np.asarray(r.constant())
      for key in r.their_keys():
        specs.append((key, tuple(value.shape), value.dtype, lambda value=value: value))
  return specs


def batchnorm_rows(ours: str, theirs: str, count: int | None = None, *, affine: bool = True,
                   num_batches_tracked: int = 0) -> list[Row]:
  """Rows of one torch BatchNorm{1,2,3}d `theirs` <-> one flax nn.BatchNorm `ours` (count: a stack of
  `count` of them under nn.scan with variable_axes {"params": 0, "batch_stats": 0}; `theirs` holds "{i}"):

    params       <ours>/scale <-> <theirs>.weight          <ours>/bias <-> <theirs>.bias   (affine only)
    batch_stats  <ours>/mean  <-> <theirs>.running_mean    <ours>/var  <-> <theirs>.running_var
    (constant)   <theirs>.num_batches_tracked: import accepts it (or its absence) and does not read it;
                 export writes a 0-d int64 tensor holding `num_batches_tracked` (default 0).

  Why 0 is right: PyTorch reads num_batches_tracked only when the layer's momentum is None (a cumulative
  average, factor 1/num_batches_tracked); with a momentum (torchvision's 0.1, ours too) it is a counter
  nothing consumes, eval never touches it, and 0 is what a fresh torch BatchNorm holds and what torch itself
  fills in when it loads a checkpoint that lacks the key. Flax keeps no batch count; pass the real count
  (e.g. training steps) if a momentum=None consumer needs it. Match the hyper-parameters too: flax
  momentum = 1 - torch momentum (torch 0.1 -> nn.BatchNorm(momentum=0.9)), epsilon = eps (1e-5);
  use_scale/use_bias False <-> affine=False. Eval outputs then agree; in training torch updates running_var
  with the unbiased batch variance, flax with the biased one (both normalise with the biased one)."""
  if (count is not None) != ("{i}" in theirs):
    raise ValueError(f"batchnorm_rows({ours!r}, {theirs!r}, count={count}): a stacked row needs both "
                     "count and '{i}' in theirs, an unstacked one neither")
  rows = []
  if affine:
    rows += [Row(f"{ours}/scale", f"{theirs}.weight", IDENTITY, count),
             Row(f"{ours}/bias", f"{theirs}.bias", IDENTITY, count)]
  rows += [Row(f"{ours}/mean", f"{theirs}.running_mean", IDENTITY, count, collection="batch_stats"),
           Row(f"{ours}/var", f"{theirs}.running_var", IDENTITY, count, collection="batch_stats"),
           Row("", f"{theirs}.num_batches_tracked", IDENTITY, count,
               constant=lambda n=int(num_batches_tracked): np.asarray(n, np.int64))]
  return rows


# ---- config.json keys a family does not model (carried through import -> export) ----

NOT_CARRIED = ("dtype", "torch_dtype", "transformers_version")   # describe the written files: rewritten on save


def carry_extra(cfg: Mapping, read: Sequence[str]) -> tuple[tuple[str, str], ...]:
  """The config.json keys a family's from_config does not read, as sorted (key, JSON text) pairs for a config's
  `hf_extra` field (hashable; lists and dicts survive); file-describing keys and "_" bookkeeping are dropped."""
  import json
  return tuple(sorted((k, json.dumps(v)) for k, v in cfg.items()
                      if k not in read and k not in NOT_CARRIED and not k.startswith("_")))


def with_extra(defaults: Mapping, hf_extra, modelled: Mapping) -> dict:
  """config.json for export: defaults < the imported keys carried in hf_extra < the fields the family models."""
  import json
  return {**defaults, **{k: json.loads(v) for k, v in hf_extra}, **modelled}
