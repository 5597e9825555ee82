"""Pretrained weights into any subtree of a system's parameters, from config, with a per-key report.

  params, report = load_into(params, "ckpt_dir", prefix="encoder")             # a family's tree -> params["encoder"]
  params, report = load_into(params, "wan/transformer", rename=[("blocks", "blocks/video"), ...])
  params, reports = apply_init_entries(cfg.init, params, workdir=workdir)    # every named config entry
  variables, report = load_into({"params": params, **model_state}, "resnet_dir", prefix="frontend")  # + batch_stats
  config.init = ml_collections.ConfigDict({"video": init_entry(prefix="", rename=...)})   # in a config file
  # then:  --config.init.video.path=DIR   (an empty path skips the entry)

What `path` may be:
  * a checkpoint directory of any family shared.weights supports (see `shared.weights.families()`): a
    config file (config.json, or the family's own config name) + safetensors, single or sharded with an
    index; transformers configs are recognised by "model_type", diffusers ones by "_class_name"
    (e.g. WanTransformer3DModel); the original Wan layout (config.json model_type t2v / ti2v / i2v, or
    "_class_name" WanModel / "dim" + "num_heads" without a model_type) too;
  * a single .safetensors file: with a config beside it (config.json or the family's config name in the
    same directory) it is read like a directory; without one its keys must already be in our naming
    ('/'-joined paths of the source tree, e.g. "layers/mlp/up_proj/kernel", tensors in our layout), which
    is also what family="params" forces.
  * a training workdir of this stack (a directory with checkpoints/; or family="workdir"): its newest
    restorable checkpoint's params and model state (BatchNorm statistics), keys in our naming: a later stage
    starts from an earlier one (e.g. the tri-modal stage 2 from stage 1). The whole tree is read onto the
    host first (at paper size: the model's size in host memory).
Checkpoint keys carrying a known wrapper prefix (KEY_PREFIXES: ComfyUI's "model.diffusion_model.") are read
without it. `family` forces a family by its name (shared.weights.families(): "llm", "wan_dit",
"wan_dit_original", ...) or by one of its model_types; None / "" detects it from the config. PEFT adapter
directories and diffusers pipeline folders are not read here: point `path` at the component's subfolder.

Mapping: the checkpoint is read into the family's own Flax tree (our naming, through the family's name
table). `rename` pairs (subpath in the family tree, subpath under `prefix` in ours), '/'-joined, move
subtrees or single leaves; the longest matching pair wins; without pairs the family tree maps onto
`prefix` as is. The target scope is the subtree at `prefix` (no rename) or at prefix + each rename target.

Collections: load_into takes (and gives back) either a params tree or a system's variables
{"params": params, **model_state} (variables=None detects which: a mapping holding a "params" mapping). A
family with collections beyond params (Family.collections, e.g. ("params", "batch_stats") for the BatchNorm
ResNet front ends) is read through shared.weights.family_table (rows keyed by variables path, constant rows
such as num_batches_tracked accepted and not read) and fills every collection it has:
(collection, *family path) -> (collection, *prefix, *path), rename applied inside each collection; the
target scope is prefix (+ rename targets) in each of those collections. Report paths name the collection
when it is not params ("batch_stats/frontend/bn3d/mean"); a params-only family touches the params
collection only, as before. Given the params tree alone, a stateful family's other-collection tensors are
unexpected (their key; the note says to pass the variables). The trainer passes the variables on a fresh
start, so config entries load running statistics into TrainState.model_state.

Report (InitReport), per key:
  loaded      our '/'-joined path: the checkpoint value is now there.
  missing     a leaf in the target scope that nothing in the checkpoint provides (our path), or a tensor the
              family's name table expects and the file lacks (their checkpoint key; the leaf it would fill is
              in the note: a stacked leaf with any layer missing keeps its whole init).
  unexpected  a checkpoint tensor no row of the family's name table reads (their key), or a family
              parameter present in the file whose target is not in our tree or that no rename pair covers
              (their key; "{i}" marks a stacked row, all its layers).
  mis-shaped  both sides have it, shapes differ: our path when the family's parameter (per its config.json)
              and our leaf differ, their key when the file's tensor differs from what its config implies;
              both shapes listed (the checkpoint's in our layout, the file's own in the note).
strict (default): any missing, unexpected or mis-shaped key raises shared.errors.CheckpointError whose message
holds the table; nothing is read or modified. allow_missing=True lets missing leaves keep their init
(unexpected / mis-shaped still raise); strict=False loads whatever matches and reports the rest. The
table is logged at INFO; apply_init_entries writes {name: report.to_json()} to DIR/init_report.json.

Leaves keep their dtype, sharding and boxing (nn.with_logical_partitioning / any nn.meta.AxisMetadata): each
tensor is read in the leaf's dtype and put straight onto the existing leaf's sharding, one leaf at a time
(the host copy is freed before the next is read); numpy leaves stay numpy. The input tree is not changed:
a new tree is returned (replaced leaves are new arrays, every other leaf is the very same object).
Call on concrete params only -- after the (jitted) init, on a fresh start, never under jit or another
trace (tensors read under a trace would become constants of the program): tracers raise CheckpointError.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util
from flax.core import FrozenDict, freeze

from shared.errors import CheckpointError, ConfigError
from shared.weights import Family, families, family_for_config, family_table, io, table

log = logging.getLogger(__name__)

OURS = "params"                              # family name: keys already in our naming, no name table
WORKDIR = "workdir"                          # family name: a training workdir's newest checkpoint (our naming)
PARAMS = "params"                            # the params collection (report paths in it carry no collection)
KEY_PREFIXES = ("model.diffusion_model.",)   # wrapper prefixes stripped from checkpoint keys (ComfyUI Wan)
ENTRY_KEYS = ("path", "prefix", "family", "rename", "allow_missing", "strict")
REPORT_NAME = "init_report.json"
_STATUSES = ("missing", "unexpected", "mis-shaped")


# ---- the report ----

@dataclasses.dataclass(frozen=True)
class KeyStatus:
  """One key that did not load: see the module docstring for what `key` names per status."""
  key: str
  status: str                                # "missing" | "unexpected" | "mis-shaped"
  checkpoint_shape: tuple | None = None      # in our layout (after the name table's transform)
  model_shape: tuple | None = None           # our leaf's (a stacked leaf's per-layer shape for their keys)
  note: str = ""

  def to_json(self) -> dict:
    shape = lambda s: None if s is None else list(s)  # noqa: E731
    return {"key": self.key, "status": self.status, "checkpoint_shape": shape(self.checkpoint_shape),
            "model_shape": shape(self.model_shape), "note": self.note}


@dataclasses.dataclass
class InitReport:
  source: str                                # the checkpoint path
  family: str
  prefix: str = ""
  rename: tuple = ()
  name: str = ""                             # the config entry's name (source_name)
  loaded: list = dataclasses.field(default_factory=list)       # [our '/'-joined path]
  missing: list = dataclasses.field(default_factory=list)      # [KeyStatus]
  unexpected: list = dataclasses.field(default_factory=list)   # [KeyStatus]
  mis_shaped: list = dataclasses.field(default_factory=list)   # [KeyStatus]

  @property
  def ok(self) -> bool:
    return not (self.missing or self.unexpected or self.mis_shaped)

  def counts(self) -> dict[str, int]:
    return {"loaded": len(self.loaded), "missing": len(self.missing), "unexpected": len(self.unexpected),
            "mis-shaped": len(self.mis_shaped)}

  def summary(self) -> str:
    who = f"init {self.name!r}: " if self.name else "init: "
    counts = ", ".join(f"{n} {s}" for s, n in self.counts().items())
    ren = f" with rename {list(self.rename)}" if self.rename else ""
    return f"{who}{self.source} (family {self.family}) into prefix {self.prefix!r}{ren}: {counts}"

  def table(self, max_rows: int = 30) -> str:
    """Aligned columns status | key | checkpoint | model | note: every problem key up to `max_rows` per status
    (then a count of the rest); loaded keys listed, or grouped by subtree with counts when there are more."""
    lines = [("status", "key", "checkpoint", "model", "note")]
    for status, items in (("missing", self.missing), ("unexpected", self.unexpected),
                          ("mis-shaped", self.mis_shaped)):
      for e in items[:max_rows]:
        lines.append((status, e.key, _fmt(e.checkpoint_shape), _fmt(e.model_shape), e.note))
      if len(items) > max_rows:
        lines.append((status, f"... and {len(items) - max_rows} more {status} keys", "", "", ""))
    for group, n in _groups(self.loaded, max_rows):
      lines.append(("loaded", group, "", "", f"{n} keys" if n > 1 else ""))
    widths = [max(len(row[c]) for row in lines) for c in range(4)]
    body = ["  " + "  ".join(v.ljust(w) for v, w in zip(row[:4], widths)) + ("  " + row[4] if row[4] else "")
            for row in lines]
    return "\n".join([self.summary()] + [b.rstrip() for b in body])

  def to_json(self) -> dict:
    return {"name": self.name, "source": self.source, "family": self.family, "prefix": self.prefix,
            "rename": [list(p) for p in self.rename], "counts": self.counts(), "loaded": list(self.loaded),
            "missing": [e.to_json() for e in self.missing], "unexpected": [e.to_json() for e in self.unexpected],
            "mis_shaped": [e.to_json() for e in self.mis_shaped]}


def _fmt(shape) -> str:
  return "-" if shape is None else str(tuple(shape))


def _groups(paths: Sequence[str], max_rows: int) -> list[tuple[str, int]]:
  """[(path, 1) or ('subtree/*', count)]: every path when they fit in max_rows, else grouped at the deepest
  level that does."""
  if len(paths) <= max_rows:
    return [(p, 1) for p in sorted(paths)]
  split = [tuple(p.split("/")) for p in paths]
  depth, longest = 1, max(len(s) for s in split)
  while depth < longest and len({s[:depth + 1] for s in split}) <= max_rows:
    depth += 1
  members: dict[tuple, list] = {}
  for s in split:
    members.setdefault(s[:depth], []).append(s)
  return [("/".join(m[0]), 1) if len(m) == 1 else ("/".join(g) + "/*", len(m)) for g, m in sorted(members.items())]


# ---- the checkpoint ----

class _Stripped:
  """A reader whose keys lose a wrapper prefix (KEY_PREFIXES)."""

  def __init__(self, reader, prefix: str):
    self._r = reader
    self._map = {(k[len(prefix):] if k.startswith(prefix) else k): k for k in reader.keys()}

  def keys(self):
    return list(self._map)

  def __contains__(self, key):
    return key in self._map

  def shape(self, key):
    return self._r.shape(self._map[key])

  def get(self, key, dtype=None):
    return self._r.get(self._map[key], dtype)


def _strip_wrappers(reader):
  keys = reader.keys()
  for prefix in KEY_PREFIXES:
    if any(k.startswith(prefix) for k in keys):
      stripped = {(k[len(prefix):] if k.startswith(prefix) else k) for k in keys}
      if len(stripped) == len(keys):  # never merge two keys into one
        reader = _Stripped(reader, prefix)
        keys = reader.keys()
  return reader


def _family_named(name: str, source: str) -> Family:
  fams = families()
  if name in fams:
    return fams[name]
  for fam in fams.values():
    if name in fam.model_types:
      return fam
  raise CheckpointError(f"checkpoint {source}: family {name!r} is unknown; known families: "
                        f"{sorted(fams) + [OURS, WORKDIR]} (or one of their model types)")


def _detect(cfg: dict, cfg_path: str) -> Family:
  try:
    return family_for_config(cfg, cfg_path)
  except CheckpointError:
    # the original Wan layout's config.json may carry no model_type (as wan_dit_family.load_wan_dit reads it)
    original = families().get("wan_dit_original")
    if original is not None and "model_type" not in cfg and (
        cfg.get("_class_name") == "WanModel" or {"dim", "num_heads"} <= set(cfg)):
      return original
    raise


def _config_path(directory: str, fam: Family | None) -> str | None:
  names = ([fam.config_name] if fam else []) + ["config.json"] + [f.config_name for f in families().values()]
  for name in dict.fromkeys(names):
    if os.path.isfile(os.path.join(directory, name)):
      return os.path.join(directory, name)
  return None


@dataclasses.dataclass
class _Source:
  family: str
  rows: list                # the name table's leaf rows, keyed like `expected`
  expected: dict            # {family path tuple: shape}; variables paths ("batch_stats", ...) when stateful
  ignore: tuple             # regexes of keys accepted and not read (the family's ignore + its constant rows)
  reader: Any
  collections: tuple = (PARAMS,)   # the variables collections the family's checkpoints hold

  @property
  def stateful(self) -> bool:
    return tuple(self.collections) != (PARAMS,)

  def split(self, fp: tuple) -> tuple[str, tuple]:
    """A family path -> (its collection, its path inside that collection)."""
    return (fp[0], fp[1:]) if self.stateful else (PARAMS, fp)


def _open(path: str, family: str | None) -> _Source:
  """The checkpoint at `path` as (family, its name table, its param shapes, a lazy reader)."""
  if not os.path.exists(path):
    raise CheckpointError(f"checkpoint {path!r} does not exist (expected a checkpoint directory or a "
                          ".safetensors file)")
  is_file = os.path.isfile(path)
  if is_file and not path.endswith(".safetensors"):
    raise CheckpointError(f"checkpoint {path!r} is a file but not a .safetensors file")
  if family == WORKDIR or (not family and not is_file and is_workdir(path)):
    if not is_workdir(path):
      raise CheckpointError(f"checkpoint {path!r}: family {WORKDIR!r} needs a training workdir (with checkpoints/)")
    return _workdir(path)
  if not is_file and os.path.exists(os.path.join(path, "adapter_config.json")):
    raise CheckpointError(f"checkpoint {path!r} is a PEFT adapter directory; load_into reads full checkpoints "
                          "(use shared.weights.load_pretrained(path, base=...) for adapters)")
  if family == OURS:
    if not is_file:
      raise CheckpointError(f"checkpoint {path!r}: family {OURS!r} (keys in our naming) needs a .safetensors file")
    return _ours(io.SafetensorsReader(path))
  fam = _family_named(family, path) if family else None
  cfg_path = _config_path(os.path.dirname(path) if is_file else path, fam)
  if cfg_path is None:
    if is_file and fam is None:
      return _ours(io.SafetensorsReader(path))
    where = f"beside {path!r}" if is_file else f"in directory {path!r}"
    if not is_file and os.path.exists(os.path.join(path, "model_index.json")):
      where += " (a diffusers pipeline folder: point path at the component's subfolder, e.g. transformer/)"
    raise CheckpointError(f"checkpoint {path!r}: no config file {where} (expected config.json"
                          f"{' or ' + fam.config_name if fam and fam.config_name != 'config.json' else ''})")
  cfg = io.read_json(cfg_path)
  fam = fam or _detect(cfg, cfg_path)
  module = fam.from_config(cfg)
  rows, expected, ignore = family_table(module, fam)   # variables paths + constant rows ignored when stateful
  table.check_coverage(rows, expected)
  reader = (io.SafetensorsReader(path) if is_file else
            io.SafetensorsReader(path, index_name=f"{fam.weights_name}.safetensors.index.json",
                                 single_name=f"{fam.weights_name}.safetensors"))
  return _Source(fam.name, list(rows), expected, tuple(ignore), _strip_wrappers(reader), tuple(fam.collections))


def save_params(path: str, tree, *, dtype=None, metadata: dict | None = None):
  """Writes a (sub)tree of params as ONE safetensors file in our naming ('/'-joined paths, our layouts): the file
  family="params" (and any config-less .safetensors path) reads back. dtype: cast the leaves (None: as they are);
  metadata values that are not strings are JSON-encoded."""
  from safetensors.numpy import save_file
  flat = {}

  def walk(t, pre):
    for k, v in t.items():
      if _is_mapping(v):
        walk(v, f"{pre}{k}/")
      else:
        flat[f"{pre}{k}"] = np.ascontiguousarray(np.asarray(v if dtype is None else jnp.asarray(v, dtype)))
  walk(tree, "")
  meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
  save_file(flat, path, metadata=meta or None)


class _TreeReader:
  """A reader over host arrays already in memory ({key: array})."""

  def __init__(self, flat: dict):
    self._flat = flat

  def keys(self):
    return list(self._flat)

  def __contains__(self, key):
    return key in self._flat

  def shape(self, key):
    return tuple(np.shape(self._flat[key]))

  def get(self, key, dtype=None):
    v = np.asarray(self._flat[key])
    return v if dtype is None else v.astype(dtype)


def is_workdir(path: str) -> bool:
  """A training workdir of this stack (a checkpoints/ directory inside)."""
  return os.path.isdir(os.path.join(path, "checkpoints"))


def _workdir(path: str) -> _Source:
  """The newest restorable checkpoint of a training workdir (shared.checkpoint.restore): params and model state
  (BatchNorm statistics, ...) in our naming, every collection it holds."""
  from shared.checkpoint import restore
  r = restore(path)
  colls = {PARAMS: r.params, **{k: v for k, v in (r.model_state or {}).items() if v}}
  stateful = tuple(colls) != (PARAMS,)
  flat = {}
  for c, tree in colls.items():
    for k, v in traverse_util.flatten_dict(nn.meta.unbox(tree)).items():
      flat["/".join(((c,) if stateful else ()) + tuple(k))] = np.asarray(jax.device_get(v))
  log.info("init from workdir %s: step %d, %d tensors in %s", path, r.step, len(flat), sorted(colls))
  del r
  rows = [table.Row(k, k) for k in sorted(flat)]
  return _Source(WORKDIR, rows, {r.path: tuple(np.shape(flat[r.theirs])) for r in rows}, (), _TreeReader(flat),
                 tuple(colls))


def _ours(reader) -> _Source:
  rows = [table.Row(k, k) for k in sorted(reader.keys())]
  return _Source(OURS, rows, {r.path: tuple(reader.shape(r.theirs)) for r in rows}, (), reader)


# ---- placing leaves ----

def _parts(path: str) -> tuple[str, ...]:
  return tuple(p for p in str(path).split("/") if p)


def parse_rename(value, what: str = "rename") -> tuple[tuple[str, str], ...]:
  """Pairs (family subpath, our subpath) from a sequence of pairs, a {src: dst} mapping or a string
  "src:dst,src:dst" (command-line friendly)."""
  if value is None or value == "":
    return ()
  if isinstance(value, str):
    items = [p.split(":") for p in value.split(",") if p.strip()]
  elif isinstance(value, Mapping) or hasattr(value, "items"):
    items = list(value.items())
  else:
    items = list(value)
  out = []
  for item in items:
    item = tuple(item) if not isinstance(item, str) else (item,)
    if len(item) != 2 or not all(isinstance(s, str) for s in item):
      raise ConfigError(f"{what}: entry {item!r} is not a pair (family subpath, our subpath) of '/'-joined "
                        "strings; expected e.g. [('blocks', 'blocks/video')] or 'blocks:blocks/video'")
    out.append((item[0].strip(), item[1].strip()))
  return tuple(out)


def _is_tracer(x) -> bool:
  return isinstance(x, jax.core.Tracer)


def _place(arr: np.ndarray, old):
  """arr (host, already in old's dtype) as old's kind: a jax Array on old's sharding, or numpy."""
  if isinstance(old, jax.Array):
    sh = old.sharding
    if sh.is_fully_addressable:
      out = jax.device_put(arr, sh)
    else:  # multi-host: each process holds the whole host copy and gives its devices their slices
      out = jax.make_array_from_callback(arr.shape, sh, lambda idx: arr[idx])
    return out.block_until_ready()  # the host copy may go before the next leaf is read
  return arr


def _name(p: tuple) -> str:
  """Our '/'-joined report path of a (collection, *path) key: the collection is named unless it is params."""
  return "/".join(p[1:] if p[0] == PARAMS else p)


def _check_concrete(values: dict, paths, source: str):
  for p in paths:
    v = values[p]
    if _is_tracer(v):
      raise CheckpointError(f"load_into {source}: leaf {_name(p)} is a tracer; call it on concrete params "
                            "(after the jitted init), never under jit")
    if not isinstance(v, (jax.Array, np.ndarray, np.generic)):
      raise CheckpointError(f"load_into {source}: leaf {_name(p)} is a {type(v).__name__}, not an array "
                            "(pass concrete params, not ShapeDtypeStructs)")


def _is_mapping(x) -> bool:
  return isinstance(x, Mapping)   # dict, FrozenDict


def is_variables(tree) -> bool:
  """True when `tree` looks like a variables dict {"params": ..., <other collections>...} rather than a params
  tree: a mapping with a "params" entry that is itself a mapping (load_into's `variables=None`)."""
  return _is_mapping(tree) and PARAMS in tree and _is_mapping(tree[PARAMS])


# ---- entry points ----

def load_into(params, path: str, *, prefix: str = "", family: str | None = None, rename=(),
              allow_missing: bool = False, strict: bool = True, source_name: str = "",
              variables: bool | None = None):
  """-> (the tree with the checkpoint's values under `prefix`, InitReport). See the module docstring.

  params: a system's plain or boxed "params" tree, or its variables {"params": params, **model_state}
  (e.g. {"params": ..., "batch_stats": ...}); jax Arrays or numpy leaves; concrete, never under jit. The same
  kind of tree comes back. A family with collections beyond params (BatchNorm: Family.collections) fills every
  collection it has: (collection, *path) -> (collection, *prefix, *path) (rename inside each collection); given
  the params tree alone, its other collections' tensors are unexpected. variables: None = detect (a mapping
  with a "params" mapping in it is a variables dict), True / False = force.
  path: a checkpoint directory or .safetensors file; family: force a family (None / "": from the config).
  rename: (family subpath, our subpath under prefix) pairs. strict / allow_missing: what raises
  CheckpointError (then nothing is read or changed). source_name: the config entry's name, for the report."""
  path = os.fspath(path)
  rename = parse_rename(rename)
  is_vars = is_variables(params) if variables is None else bool(variables)
  if is_vars and not is_variables(params):
    raise ConfigError(f"load_into {path}: variables=True but the tree is not a variables dict with a "
                      f"{PARAMS!r} collection (top level: {sorted(params) if _is_mapping(params) else type(params)})")
  colls = dict(params.items()) if is_vars else {PARAMS: params}
  src = _open(path, family or None)
  pre = _parts(prefix)
  pairs = sorted(((_parts(a), _parts(b)) for a, b in rename), key=lambda ab: -len(ab[0]))

  flat = {(c,) + k: v for c, sub in colls.items() if _is_mapping(sub)
          for k, v in traverse_util.flatten_dict(sub).items()}
  boxes = {k: v for k, v in flat.items() if isinstance(v, nn.meta.AxisMetadata)}
  values = {k: (v.unbox() if k in boxes else v) for k, v in flat.items()}
  shapes = {k: tuple(np.shape(v)) for k, v in values.items()}

  def under(p: tuple, root: tuple) -> bool:
    return p[:len(root)] == root

  scopes = [pre + dst for _, dst in pairs] if pairs else [pre]
  ours_params = [k[1:] for k in values if k[0] == PARAMS]
  for root in scopes:  # a prefix / rename target that names nothing in params is a typo, not a load
    if not any(under(k, root) for k in ours_params):
      tops = sorted({"/".join(k[:len(root)]) for k in ours_params if k[:len(root) - 1] == root[:-1]})[:20]
      raise ConfigError(f"load_into {path}: {'/'.join(root)!r} (prefix {prefix!r}"
                        f"{' + rename target' if pairs else ''}) is not a subtree of the params; "
                        f"there: {tops}")
  fam_paths = [src.split(r.path)[1] for r in src.rows]
  for a, _ in pairs:
    if not any(under(fp, a) for fp in fam_paths):
      tops = sorted({fp[0] for fp in fam_paths})
      raise ConfigError(f"load_into {path}: rename source {'/'.join(a)!r} is not in the {src.family} "
                        f"family's tree (its top level: {tops})")

  def target(fp: tuple) -> tuple | None:
    """A family path -> (collection, *our path), or None when no rename pair covers it."""
    coll, sub = src.split(fp)
    if not pairs:
      return (coll,) + pre + sub
    for a, b in pairs:
      if under(sub, a):
        return (coll,) + pre + b + sub[len(a):]
    return None

  found = table.match_tensors(src.rows, src.reader, src.expected, src.ignore)
  missing_of: dict[str, list] = {}
  for key, row in found.missing:
    missing_of.setdefault(row.ours, []).append(key)
  bad_of: dict[str, list] = {}
  for m in found.mis_shaped:
    bad_of.setdefault(m[1].ours, []).append(m)
  present = set(src.reader.keys())

  report = InitReport(source=path, family=src.family, prefix=prefix, rename=rename, name=source_name)
  plan, claimed = [], {}
  for row in src.rows:
    fp, tgt = row.path, target(row.path)
    theirs = row.theirs + (f" ({row.count} layers)" if row.stacked else "")
    if tgt is None or tgt not in values:
      if any(k in present for k in row.their_keys()):
        if tgt is None:
          why = "no rename pair covers family path " + "/".join(src.split(fp)[1])
        elif tgt[0] not in colls:
          why = (f"-> {_name(tgt)}: the tree has no {tgt[0]} collection (pass the variables "
                 f"{{'params': ..., '{tgt[0]}': ...}})")
        else:
          why = f"-> {_name(tgt)}: not a leaf of the " + ("params" if tgt[0] == PARAMS else f"{tgt[0]} collection")
        report.unexpected.append(KeyStatus(theirs, "unexpected", tuple(src.expected[fp]), None, why))
      continue
    if tgt in claimed:
      raise ConfigError(f"load_into {path}: rename maps both {claimed[tgt]} and {row.ours} onto {_name(tgt)}")
    claimed[tgt] = row.ours
    ours = _name(tgt)
    if tuple(src.expected[fp]) != shapes[tgt]:
      report.mis_shaped.append(KeyStatus(ours, "mis-shaped", tuple(src.expected[fp]), shapes[tgt],
                                         f"from {theirs} (shape per the checkpoint's config)"))
      continue
    if row.ours in missing_of or row.ours in bad_of:
      layer = {k: i for i, k in enumerate(row.their_keys())}
      per = shapes[tgt][1:] if row.stacked else shapes[tgt]
      at = lambda k: f"-> {ours}" + (f" layer {layer[k]}" if row.stacked else "")  # noqa: E731
      for k in missing_of.get(row.ours, []):
        report.missing.append(KeyStatus(k, "missing", None, per, at(k)))
      for k, _, file_shape, got, _want in bad_of.get(row.ours, []):
        report.mis_shaped.append(KeyStatus(k, "mis-shaped", got if got is not None else file_shape, per,
                                           f"{at(k)}; file shape {file_shape}"
                                           + ("" if got is not None else ", does not convert")))
      continue
    plan.append((row, tgt))
  for k in found.unexpected:
    report.unexpected.append(KeyStatus(k, "unexpected", tuple(src.reader.shape(k)), None,
                                       f"no row of the {src.family} name table reads it (file shape)"))
  # the target scope: prefix (+ rename targets) inside every collection the family fills
  full_scopes = [(c,) + root for c in src.collections for root in scopes]
  for k in sorted(values):
    if k not in claimed and any(under(k, root) for root in full_scopes):
      report.missing.append(KeyStatus(_name(k), "missing", None, shapes[k],
                                      f"the {src.family} checkpoint has no parameter for it"))

  fatal = [s for s, items, ok in (("missing", report.missing, allow_missing or not strict),
                                  ("unexpected", report.unexpected, not strict),
                                  ("mis-shaped", report.mis_shaped, not strict)) if items and not ok]
  if fatal:
    hint = ("allow_missing=True keeps missing leaves at their init; " if "missing" in fatal else "") + \
        "strict=False loads what matches and reports the rest"
    raise CheckpointError(f"checkpoint {path} does not fit the params ({', '.join(fatal)} keys; "
                          f"strict={strict}, allow_missing={allow_missing}; {hint}); nothing was loaded "
                          f"({len(plan)} keys would load):\n" + report.table())
  _check_concrete(values, [t for _, t in plan], path)

  new = dict(flat)  # untouched leaves (boxed or not) stay the very same objects
  for row, tgt in plan:
    old = values[tgt]
    arr = table.read_row(row, src.reader, shapes[tgt], np.dtype(old.dtype))
    leaf = _place(arr, old)
    del arr
    new[tgt] = boxes[tgt].replace_boxed(leaf) if tgt in boxes else leaf
    report.loaded.append(_name(tgt))
  report.loaded.sort()
  log.info("%s", report.table())

  def rebuilt(c: str, sub):
    tree = traverse_util.unflatten_dict({k[1:]: v for k, v in new.items() if k[0] == c})
    return freeze(tree) if isinstance(sub, FrozenDict) else tree

  if not is_vars:
    return rebuilt(PARAMS, params), report
  touched = {tgt[0] for _, tgt in plan}
  out = {c: (rebuilt(c, sub) if c in touched else sub) for c, sub in colls.items()}  # untouched: same objects
  return (freeze(out) if isinstance(params, FrozenDict) else out), report


def init_entry(path: str = "", prefix: str = "", family: str = "", rename=(), allow_missing: bool = False,
               strict: bool = True) -> ml_collections.ConfigDict:
  """One initialisation for a config file: cfg.init.<name> = init_entry(...). family "" = from the config;
  an empty path skips the entry (set it with --config.init.<name>.path=DIR)."""
  return ml_collections.ConfigDict(dict(path=path, prefix=prefix, family=family,
                                        rename=tuple(tuple(p) for p in parse_rename(rename)),
                                        allow_missing=allow_missing, strict=strict))


def check_init_entries(entries, config_key: str = "init") -> list[tuple[str, dict]]:
  """Validates named entries without reading any checkpoint -> [(name, {path, prefix, family, rename,
  allow_missing, strict})] of the entries to apply (non-empty path), in order of name. ConfigError names the key
  (an unknown key, a wrong type, a path that does not exist): run before any data is built."""
  if entries is None:
    entries = {}
  if not (isinstance(entries, Mapping) or isinstance(entries, ml_collections.ConfigDict)):
    raise ConfigError(f"config key {config_key} is {type(entries).__name__}; expected named entries "
                      f"{{name: init_entry(...)}}")
  todo = []
  for name in sorted(entries.keys()):
    e = entries[name]
    where = f"{config_key}.{name}"
    if not (isinstance(e, Mapping) or isinstance(e, ml_collections.ConfigDict)):
      raise ConfigError(f"config key {where} is {e!r}; expected init_entry(path=..., prefix=..., ...)")
    unknown = sorted(set(e.keys()) - set(ENTRY_KEYS))
    if unknown:
      raise ConfigError(f"config key {where} has unknown keys {unknown}; expected {list(ENTRY_KEYS)}")
    path = e.get("path", "") or ""
    if not isinstance(path, str):
      raise ConfigError(f"config key {where}.path is {path!r}; expected a checkpoint path or ''")
    if not path:
      log.info("init %r: no path, skipped", name)
      continue
    path = os.path.expanduser(path)
    if not os.path.exists(path):
      raise ConfigError(f"config key {where}.path={path!r} does not exist (expected a checkpoint directory or "
                        ".safetensors file)")
    for k in ("prefix", "family"):
      if not isinstance(e.get(k, "") or "", str):
        raise ConfigError(f"config key {where}.{k} is {e.get(k)!r}; expected a string")
    todo.append((name, dict(path=path, prefix=e.get("prefix", "") or "", family=e.get("family", "") or None,
                            rename=parse_rename(e.get("rename", ()), f"config key {where}.rename"),
                            allow_missing=bool(e.get("allow_missing", False)), strict=bool(e.get("strict", True)))))
  return todo


def apply_init_entries(entries, params, *, workdir: str | None = None, config_key: str = "init",
                       variables: bool | None = None):
  """Applies named entries {name: {path, prefix, family, rename, allow_missing[, strict]}} in order of name
  -> (the same kind of tree, {name: InitReport}). `params`: the system's params tree, or its variables
  {"params": params, **model_state} (what the trainer passes: a family with BatchNorm statistics then fills
  batch_stats too); `variables` forces which (None: detect, see load_into). Entries with an empty path are
  skipped (and not reported; no entry: the very same tree comes back). With `workdir`, writes
  workdir/init_report.json = {name: report.to_json()} (process 0). config_key: where the entries live in the
  config, for error messages. Concrete params only, never under jit."""
  reports: dict[str, InitReport] = {}
  for name, e in check_init_entries(entries, config_key):
    params, reports[name] = load_into(params, e.pop("path"), source_name=name, variables=variables, **e)
  if workdir is not None and jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    io.write_json(os.path.join(workdir, REPORT_NAME), {n: r.to_json() for n, r in reports.items()})
  return params, reports
