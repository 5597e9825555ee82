"""Two-way PyTorch/HF weight conversion: one name table per family drives import and export.

  module, params = load_pretrained("ckpt_dir")            # config.json + safetensors (sharded too)
  module, params = load_pretrained("adapter_dir", base="ckpt_dir")   # PEFT LoRA adapter on a base
  save_pretrained(module, params, "out_dir")              # from_pretrained(out_dir) gives the same outputs
  save_adapter(module, params, "adapter_out")             # PeftModel.from_pretrained(base, adapter_out)
  python -m shared.weights import|export|inspect ...      # CLI (see __main__.py)
  params, report = init.load_into(params, "ckpt_dir", prefix="encoder")   # into a subtree of a system's params,
                                                          # per-key report; config entries: init.apply_init_entries
`params` is the plain (unboxed) "params" collection: module.apply({"params": params}, ...).
A family with mutable state declares collections=("params", "batch_stats") (ResNet front ends with
BatchNorm): for it load_pretrained returns (module, variables) with variables = {"params": ...,
"batch_stats": ...} (module.apply(variables, ..., use_running_average=True) in eval; the trainer's
TrainState.variables), save_pretrained / abstract_params take / describe that whole variables dict, and its
rows say which collection each leaf is in (table.Row.collection; table.batchnorm_rows writes a torch
BatchNorm's weight, bias, running_mean, running_var and num_batches_tracked). Every params-only family
(the default) keeps (module, params) exactly as above.

Adding a family (MBart, Whisper, UMT5, Wan, VAEs, ...): write ONE file `shared/weights/<name>_family.py`
defining `FAMILY = Family(...)`; every `*_family.py` module in this package is discovered
automatically. A Family gives:
  name            short name ("llm", "mbart", ...)
  model_types     config.json "model_type" values it reads (e.g. ("llama", "qwen3")); diffusers
                  families list their "_class_name" (e.g. ("AutoencoderKLWan",))
  module_class    its Flax module class (save_pretrained picks the family by isinstance)
  from_config     (hf_config: dict, **overrides) -> module      (overrides: dtype, remat_policy, lora, ...)
  to_config       (module) -> dict written as config.json (with "architectures" and "model_type")
  rows            (module) -> list[table.Row]: the name table; stacked rows carry count=num_layers
  example_inputs  (module) -> tuple of args for module.init (to get the param shapes; eval_shape only)
  ignore          (module) -> regexes of checkpoint keys that may be present and are not read
  peft_task_type  "CAUSAL_LM" / "SEQ_2_SEQ_LM" / "FEATURE_EXTRACTION" (adapter_config.json)
  weights_name    file stem if not "model" (diffusers: "diffusion_pytorch_model"); config_name likewise
  collections     variables collections its checkpoints hold (default ("params",); BatchNorm families
                  ("params", "batch_stats"), their rows keyed by variables path via table.leaf_rows)
Conventions: a module with LoRA exposes `module.config.lora` (shared.nn.lora.LoraConfig) and
`module.config.replace(lora=...)`; LoRA rows are derived from table rows with the LINEAR transform
whose module name (path[-2]) is a LoRA target, so a family gets peft import/export for free.
Errors: mismatching names/shapes raise shared.errors.CheckpointError listing the offending keys.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import pkgutil
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
import flax.linen as nn

from shared.errors import CheckpointError
from shared.nn import lora as lora_lib
from shared.weights import io, table
from shared.weights.table import LINEAR, Row

__all__ = ["Family", "register", "families", "family_for_config", "family_for_module", "load_pretrained",
           "save_pretrained", "save_adapter", "load_adapter", "abstract_params", "family_table"]


@dataclasses.dataclass(frozen=True)
class Family:
  name: str
  model_types: tuple[str, ...]
  module_class: type
  from_config: Callable[..., Any]
  to_config: Callable[[Any], dict]
  rows: Callable[[Any], list]
  example_inputs: Callable[[Any], tuple]
  ignore: Callable[[Any], Sequence[str]] = lambda module: ()
  peft_task_type: str = "CAUSAL_LM"
  weights_name: str = "model"
  config_name: str = "config.json"
  collections: tuple[str, ...] = ("params",)

  @property
  def has_state(self) -> bool:
    """True when its checkpoints hold more than params: load/save/abstract_params work on whole variables."""
    return tuple(self.collections) != ("params",)


_REGISTRY: dict[str, Family] = {}
_BROKEN: dict[str, str] = {}   # family module -> why it failed to import (reported, never fatal for the others)
_DISCOVERED = False


def register(family: Family) -> Family:
  _REGISTRY[family.name] = family
  return family


def families() -> dict[str, Family]:
  global _DISCOVERED
  if not _DISCOVERED:
    _DISCOVERED = True
    pkg = os.path.dirname(__file__)
    for m in pkgutil.iter_modules([pkg]):
      if m.name.endswith("_family"):
        try:
          mod = importlib.import_module(f"shared.weights.{m.name}")
        except Exception as e:  # one broken family must not take the others down
          _BROKEN[m.name] = f"{type(e).__name__}: {e}"
          logging.getLogger(__name__).warning("weight family %s failed to import: %s", m.name, e)
          continue
        if hasattr(mod, "FAMILY"):
          register(mod.FAMILY)
  return dict(_REGISTRY)


def family_for_config(cfg: dict, source: str = "") -> Family:
  """By config.json "model_type" (transformers), else "_class_name" (diffusers), else "architectures"."""
  names = [cfg.get("model_type"), cfg.get("_class_name"), *(cfg.get("architectures") or [])]
  for name in names:
    for fam in families().values():
      if name is not None and name in fam.model_types:
        return fam
  known = sorted(t for f in families().values() for t in f.model_types)
  broken = f"; families that failed to import: {_BROKEN}" if _BROKEN else ""
  raise CheckpointError(f"config {source}: model_type {cfg.get('model_type')!r} / _class_name "
                        f"{cfg.get('_class_name')!r} is not supported; supported: {known}{broken}")


def family_for_module(module) -> Family:
  for fam in families().values():
    if isinstance(module, fam.module_class):
      return fam
  raise CheckpointError(f"no weight family for module class {type(module).__name__}")


def abstract_params(module, family: Family | None = None) -> dict[tuple, tuple]:
  """{path tuple: shape} of the module's params (no memory, via eval_shape); for a family with
  collections beyond params, of its whole variables dict (paths start with the collection name)."""
  family = family or family_for_module(module)
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *family.example_inputs(module)))
  if family.has_state:
    flat = traverse_util.flatten_dict(nn.meta.unbox({c: shapes[c] for c in family.collections if c in shapes}))
    return {k: tuple(v.shape) for k, v in flat.items()}
  flat = traverse_util.flatten_dict(nn.meta.unbox(shapes["params"]))
  return {k: tuple(v.shape) for k, v in flat.items()}


def family_table(module, family: Family | None = None) -> tuple[list[Row], dict[tuple, tuple], tuple[str, ...]]:
  """(rows, expected, ignore) ready for shared.weights.table's functions: the family's rows that name a leaf,
  keyed like abstract_params (variables paths for a family with collections beyond params); {path: shape};
  the family's ignore regexes plus the keys of its constant rows (num_batches_tracked: accepted, not read)."""
  family = family or family_for_module(module)
  rows = list(family.rows(module))
  return (table.leaf_rows(rows, variables=family.has_state), abstract_params(module, family),
          tuple(family.ignore(module)) + tuple(table.constant_ignore(rows)))


def _lora_of(module):
  return getattr(getattr(module, "config", None), "lora", None)


def lora_rows(rows: Sequence[Row], lora: lora_lib.LoraConfig, prefix: str = "base_model.model.") -> list[Row]:
  """peft rows derived from LINEAR kernel rows of LoRA-targeted modules."""
  out = []
  for r in rows:
    p = r.path
    if r.transform is LINEAR and p[-1] == "kernel" and lora.applies_to(p[-2]) and r.theirs.endswith(".weight"):
      stem = prefix + r.theirs[:-len(".weight")]
      base = "/".join(p[:-1])
      out.append(Row(base + "/lora_a", stem + ".lora_A.weight", LINEAR, r.count))
      out.append(Row(base + "/lora_b", stem + ".lora_B.weight", LINEAR, r.count))
  return out


class _MergedKernel:
  """kernel + lora_a @ lora_b * scale, computed per layer when exported (never the whole tree at once)."""

  def __init__(self, kernel, a, b, scale):
    self.kernel, self.a, self.b, self.scale = kernel, a, b, scale
    self.shape, self.dtype = kernel.shape, kernel.dtype

  def __getitem__(self, i):
    k, a, b = self.kernel[i], self.a[i], self.b[i]
    return (k.astype(jnp.float32) + lora_lib._delta(a, b, self.scale)).astype(k.dtype)


def _merged_lazily(flat: dict, lcfg) -> dict:
  out = {}
  for k, v in flat.items():
    if lora_lib.is_lora_path(k):
      continue
    if k[-1] == "kernel" and k[:-1] + ("lora_a",) in flat:
      v = _MergedKernel(v, flat[k[:-1] + ("lora_a",)], flat[k[:-1] + ("lora_b",)], lcfg.scale)
    out[k] = v
  return out


def _to_device(flat: dict[tuple, np.ndarray], shardings=None):
  """numpy leaves -> jax arrays one at a time (freeing each numpy leaf as it goes)."""
  flat_sh = traverse_util.flatten_dict(shardings) if isinstance(shardings, dict) else None
  out = {}
  for k in list(flat):
    x = flat.pop(k)
    out[k] = jax.device_put(x, flat_sh[k]) if flat_sh is not None else jnp.asarray(x)
    del x
  return traverse_util.unflatten_dict(out)


def load_pretrained(path: str, *, dtype=jnp.float32, base: str | None = None, shardings=None, **overrides):
  """-> (module, params). `path`: HF directory (config.json + safetensors) or a PEFT adapter directory
  (adapter_config.json; base from `base=` or its local base_model_name_or_path). `dtype`: dtype of the
  loaded params (bfloat16 halves host memory); `overrides` go to the family's config (e.g. dtype of
  compute as compute_dtype=..., remat_policy=...). `shardings`: optional tree of jax.sharding for params.
  A family with collections beyond params (BatchNorm) -> (module, variables): {"params": ..., "batch_stats":
  ...}, every collection in `dtype`; `shardings` is then a tree of that variables dict."""
  if os.path.exists(os.path.join(path, "adapter_config.json")):
    acfg = io.read_json(os.path.join(path, "adapter_config.json"))
    base = base or acfg.get("base_model_name_or_path")
    if not base or not os.path.isdir(base):
      raise CheckpointError(f"adapter {path}: base model {base!r} is not a local directory; pass base=DIR")
    module, params = load_pretrained(base, dtype=dtype, **overrides)
    return load_adapter(module, params, path, dtype=dtype, shardings=shardings)
  cfg_path = os.path.join(path, "config.json")
  if not os.path.exists(cfg_path):
    for fam in families().values():  # families with another config name (diffusers)
      if os.path.exists(os.path.join(path, fam.config_name)):
        cfg_path = os.path.join(path, fam.config_name)
        break
  cfg = io.read_json(cfg_path)
  family = family_for_config(cfg, cfg_path)
  module = family.from_config(cfg, **overrides)
  rows, expected, ignore = family_table(module, family)
  table.check_coverage(rows, expected)
  reader = io.SafetensorsReader(path, index_name=f"{family.weights_name}.safetensors.index.json",
                                single_name=f"{family.weights_name}.safetensors")
  flat = table.import_tensors(rows, reader, expected, np.dtype(dtype), ignore, source=path)
  return module, _to_device(flat, shardings)


def load_adapter(module, params, path: str, *, dtype=jnp.float32, shardings=None):
  """Adds a PEFT LoRA adapter directory to (module, params) -> (module with LoRA, params with LoRA)."""
  acfg = io.read_json(os.path.join(path, "adapter_config.json"))
  if acfg.get("peft_type", "LORA") != "LORA":
    raise CheckpointError(f"adapter {path}: peft_type {acfg.get('peft_type')!r}; only LORA is supported")
  targets = acfg.get("target_modules")
  if not isinstance(targets, (list, tuple)):
    raise CheckpointError(f"adapter {path}: target_modules {targets!r} must be a list of module names")
  for key in ("modules_to_save", "layers_to_transform", "rank_pattern", "alpha_pattern", "use_dora",
              "target_parameters", "trainable_token_indices"):
    if acfg.get(key):
      raise CheckpointError(f"adapter {path}: {key}={acfg[key]!r} is not supported")
  if acfg.get("bias", "none") != "none":
    raise CheckpointError(f"adapter {path}: bias={acfg['bias']!r} is not supported (expected 'none')")
  lcfg = lora_lib.LoraConfig(rank=int(acfg["r"]), alpha=float(acfg["lora_alpha"]),
                             dropout=float(acfg.get("lora_dropout", 0.0)), targets=tuple(sorted(targets)),
                             use_rslora=bool(acfg.get("use_rslora", False)))
  family = family_for_module(module)
  module = module.clone(config=module.config.replace(lora=lcfg))
  expected = abstract_params(module, family)
  rows = lora_rows(family.rows(module), lcfg)
  if not rows:
    raise CheckpointError(f"adapter {path}: target_modules {targets} match no Dense of the model")
  reader = io.SafetensorsReader(path, single_name="adapter_model.safetensors",
                                index_name="adapter_model.safetensors.index.json")
  flat = table.import_tensors(rows, reader, expected, np.dtype(dtype), source=path)
  new = traverse_util.flatten_dict(_to_device(flat, shardings))
  merged = dict(traverse_util.flatten_dict(nn.meta.unbox(params)))
  merged.update(new)
  return module, traverse_util.unflatten_dict(merged)


def save_pretrained(module, params, path: str, *, lora: str = "merge", dtype=None, max_shard_size="5GB"):
  """Writes config.json + safetensors that the matching PyTorch library loads with from_pretrained.

  lora: "merge" folds LoRA into the kernels (an ordinary checkpoint), "drop" writes the base weights
  only (pair with save_adapter). dtype: dtype of the written tensors (default: the params' dtype).
  A family with collections beyond params takes the variables dict as `params` ({"params": ...,
  "batch_stats": ...}; other collections in it are not written) and also writes running_mean / running_var
  and num_batches_tracked (0-d int64, see table.batchnorm_rows)."""
  family = family_for_module(module)
  if family.has_state:
    params = nn.meta.unbox(params)
    absent = [c for c in family.collections if not hasattr(params, "keys") or c not in params]
    if absent:
      raise CheckpointError(f"save_pretrained: family {family.name} writes collections {list(family.collections)}; "
                            f"pass the variables dict {{'params': ..., 'batch_stats': ...}} (missing {absent})")
    params = {c: params[c] for c in family.collections}
  flat = traverse_util.flatten_dict(nn.meta.unbox(params))
  lcfg = _lora_of(module)
  if lcfg is not None:
    if lora == "merge":
      flat = _merged_lazily(flat, lcfg)
    elif lora == "drop":
      flat = {k: v for k, v in flat.items() if not lora_lib.is_lora_path(k)}
    else:
      raise CheckpointError(f"lora={lora!r}; expected 'merge' or 'drop'")
    module = module.clone(config=module.config.replace(lora=None))
  all_rows = family.rows(module)
  rows = table.leaf_rows(all_rows, variables=family.has_state)
  table.check_coverage(rows, {k: v.shape for k, v in flat.items()})
  specs = table.export_specs(rows, flat, dtype) + table.constant_specs(all_rows)
  os.makedirs(path, exist_ok=True)
  cfg = family.to_config(module)
  if dtype is not None:
    cfg["dtype"] = str(np.dtype(dtype))
  io.write_json(os.path.join(path, family.config_name), cfg)
  io.write_checkpoint(path, specs, max_shard_size, single_name=f"{family.weights_name}.safetensors",
                      index_name=f"{family.weights_name}.safetensors.index.json")


def save_adapter(module, params, path: str, *, base_model_name_or_path: str | None = None, dtype=None):
  """Writes a PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors)."""
  family = family_for_module(module)
  lcfg = _lora_of(module)
  if lcfg is None:
    raise CheckpointError("save_adapter: the module has no LoRA (module.config.lora is None)")
  flat = traverse_util.flatten_dict(nn.meta.unbox(params))
  rows = lora_rows(family.rows(module), lcfg)
  specs = table.export_specs(rows, flat, dtype)
  os.makedirs(path, exist_ok=True)
  io.write_json(os.path.join(path, "adapter_config.json"), {
      "peft_type": "LORA", "task_type": family.peft_task_type, "r": lcfg.rank, "lora_alpha": lcfg.alpha,
      "lora_dropout": lcfg.dropout, "target_modules": sorted(lcfg.targets), "use_rslora": lcfg.use_rslora,
      "bias": "none", "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
      "modules_to_save": None, "base_model_name_or_path": base_model_name_or_path})
  io.write_safetensors(os.path.join(path, "adapter_model.safetensors"), specs)
