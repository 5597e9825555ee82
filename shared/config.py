"""Trainer / mesh / precision fields every system shares, their validation, and what they build.

A system's config file is `get_config(arg) -> ConfigDict` holding `trainer_config()` under `trainer`
plus its own `model` / `data` sections. Configs are locked: a misspelt key fails naming the key.

    cfg.trainer.seed, total_steps, batch_size (global), log_every, eval_every, sample_every
    cfg.trainer.optimizer   name (adamw|adam|sgd|adafactor), learning_rate, b1, b2, eps, weight_decay,
                            grad_clip_norm (0 = off), accumulate_steps
    cfg.trainer.schedule    name (constant|warmup_cosine|warmup_linear|tri_stage), warmup_steps,
                            hold_steps, decay_steps, init_ratio, final_ratio
    cfg.trainer.precision   param_dtype, compute_dtype
    cfg.trainer.checkpoint  every_steps, keep, async_save, resume_step (-1 = newest restorable)
    cfg.trainer.hooks       on_error (continue|stop: a failing sample / eval hook, after the save)
    cfg.trainer.mesh        data, fsdp, tensor, sequence (-1 = the rest of the devices)
    cfg.trainer.rules       logical-axis rule overrides: ((logical_name, mesh_axes), ...)
    cfg.trainer.remat       a model remat_policy name (shared.nn.remat: none|full|dots|save_residual|...)
    cfg.trainer.nan_guard   max_consecutive (stop after this many skipped non-finite steps in a row)
    cfg.trainer.profile     start_step (-1 = off), num_steps
    cfg.trainer.peak_tflops per-device peak for MFU (0 = look up the device kind)
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import jax.numpy as jnp
import ml_collections
import optax

from shared.errors import ConfigError
from shared.nn import remat as remat_lib

OPTIMIZERS = ("adamw", "adam", "sgd", "adafactor")
SCHEDULES = ("constant", "warmup_cosine", "warmup_linear", "tri_stage")
REMAT_POLICIES = tuple(remat_lib.POLICIES)   # the models' remat_policy names: one table
HOOK_ERROR_MODES = ("continue", "stop")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def trainer_config(**overrides) -> ml_collections.ConfigDict:
  """The trainer section with defaults, then `overrides`: field=value, or section=dict(field=value) for
  the nested sections, e.g.

      trainer_config(total_steps=3000, batch_size=8, optimizer=dict(learning_rate=1e-3),
                     checkpoint=dict(every_steps=500))

  An unknown key raises ConfigError naming it (`trainer.optimizer.lr`).
  """
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = 1000
  c.batch_size = 8
  c.log_every = 50
  c.eval_every = 0        # 0 = never
  c.sample_every = 0      # 0 = never
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
      grad_clip_norm=1.0, accumulate_steps=1))
  c.schedule = ml_collections.ConfigDict(dict(
      name="warmup_cosine", warmup_steps=100, hold_steps=0, decay_steps=0, init_ratio=0.0,
      final_ratio=0.0))
  c.precision = ml_collections.ConfigDict(dict(param_dtype="float32", compute_dtype="bfloat16"))
  # resume_step: -1 = the newest restorable checkpoint (a damaged newer one is skipped), N = exactly step N
  # best: an eval metric (a key the eval hook returns, e.g. "val_loss", "cer"): the best-scoring step is kept as
  # DIR/best (a workdir of its own, shared.checkpoint.keep_best), best_mode "min" | "max"; "" = off (and nothing
  # happens while eval_every = 0: no evaluations, no best)
  c.checkpoint = ml_collections.ConfigDict(dict(every_steps=500, keep=3, async_save=True, resume_step=-1, best="",
                                                best_mode="min"))
  # host-side hooks (samples, eval) run after that step's checkpoint is saved; a failing one is logged and
  # counted (metric hook_failures); on_error="stop" ends the run after the save (HookFailed)
  c.hooks = ml_collections.ConfigDict(dict(on_error="continue"))
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, sequence=1))
  c.rules = ()
  # parameter paths (regexes, re.match on "a/b/kernel", e.g. "sign_encoder/") kept whole on every device whatever
  # the rules say: frozen encoders data-parallel beside an FSDP-sharded LLM (shared.mesh.replicate_matching)
  c.replicate = ()
  c.remat = "none"
  c.nan_guard = ml_collections.ConfigDict(dict(max_consecutive=10))
  c.profile = ml_collections.ConfigDict(dict(start_step=-1, num_steps=5))
  c.peak_tflops = 0.0
  return update(c, overrides, "trainer")


def update(cfg: ml_collections.ConfigDict, values, prefix: str = "") -> ml_collections.ConfigDict:
  """Sets `values` (a dict) on `cfg` in place and returns it: key=value, or key=dict(...) to update a nested
  section field by field. Existing keys only: an unknown one raises ConfigError naming its dotted path."""
  for key, value in values.items():
    name = f"{prefix}.{key}" if prefix else key
    if key not in cfg:
      raise ConfigError(f"unknown config key {name!r}; the fields that exist: {sorted(cfg.keys())}")
    if isinstance(cfg[key], ml_collections.ConfigDict) and isinstance(value, (dict, ml_collections.ConfigDict)):
      update(cfg[key], value, name)
      continue
    try:
      cfg[key] = value
    except TypeError as e:
      raise ConfigError(f"config key {name} = {value!r}: {e}") from None
  return cfg


def _fail(key: str, value: Any, expected: str):
  raise ConfigError(f"config key trainer.{key} = {value!r}: expected {expected}")


def validate_trainer(t: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first bad key."""
  for key in ("total_steps", "batch_size"):
    if not isinstance(t[key], int) or t[key] <= 0:
      _fail(key, t[key], "a positive integer")
  for key in ("log_every", "eval_every", "sample_every"):
    if not isinstance(t[key], int) or t[key] < 0:
      _fail(key, t[key], "an integer >= 0")
  o = t.optimizer
  if o.name not in OPTIMIZERS:
    _fail("optimizer.name", o.name, f"one of {OPTIMIZERS}")
  if not o.learning_rate > 0:
    _fail("optimizer.learning_rate", o.learning_rate, "> 0")
  if o.grad_clip_norm < 0:
    _fail("optimizer.grad_clip_norm", o.grad_clip_norm, ">= 0 (0 = off)")
  if not isinstance(o.accumulate_steps, int) or o.accumulate_steps < 1:
    _fail("optimizer.accumulate_steps", o.accumulate_steps, "an integer >= 1")
  if t.batch_size % o.accumulate_steps:
    _fail("optimizer.accumulate_steps", o.accumulate_steps,
          f"a divisor of trainer.batch_size={t.batch_size}")
  s = t.schedule
  if s.name not in SCHEDULES:
    _fail("schedule.name", s.name, f"one of {SCHEDULES}")
  for key in ("warmup_steps", "hold_steps", "decay_steps"):
    if s[key] < 0:
      _fail(f"schedule.{key}", s[key], ">= 0")
  for key in ("param_dtype", "compute_dtype"):
    if t.precision[key] not in DTYPES:
      _fail(f"precision.{key}", t.precision[key], f"one of {tuple(DTYPES)}")
  for pattern in t.get("replicate", ()):
    try:
      re.compile(pattern)
    except (re.error, TypeError) as e:
      _fail("replicate", pattern, f"a regular expression over parameter paths ({e})")
  if t.checkpoint.every_steps < 0 or t.checkpoint.keep < 1:
    _fail("checkpoint", dict(t.checkpoint), "every_steps >= 0 and keep >= 1")
  if t.checkpoint.get("best_mode", "min") not in ("min", "max"):
    _fail("checkpoint.best_mode", t.checkpoint.best_mode, "'min' or 'max'")
  if not isinstance(t.checkpoint.resume_step, int) or t.checkpoint.resume_step < -1:
    _fail("checkpoint.resume_step", t.checkpoint.resume_step, "-1 (the newest restorable) or a step >= 0")
  if t.hooks.on_error not in HOOK_ERROR_MODES:
    _fail("hooks.on_error", t.hooks.on_error, f"one of {HOOK_ERROR_MODES}")
  sizes = [t.mesh[a] for a in ("data", "fsdp", "tensor", "sequence")]
  if sum(1 for x in sizes if x == -1) > 1 or any(x == 0 or x < -1 for x in sizes):
    _fail("mesh", dict(t.mesh), "positive sizes with at most one -1")
  if t.remat not in REMAT_POLICIES:
    _fail("remat", t.remat, f"one of {REMAT_POLICIES}")
  if t.nan_guard.max_consecutive < 1:
    _fail("nan_guard.max_consecutive", t.nan_guard.max_consecutive, ">= 1")
  for rule in t.rules:
    if len(rule) != 2 or not isinstance(rule[0], str):
      _fail("rules", rule, "pairs (logical_name, mesh_axis | tuple of mesh axes | None)")


def dtype(name: str):
  """'bfloat16' -> jnp.bfloat16; ConfigError for an unknown name."""
  if name not in DTYPES:
    raise ConfigError(f"unknown dtype {name!r}: expected one of {tuple(DTYPES)}")
  return DTYPES[name]


def build_schedule(t: ml_collections.ConfigDict) -> optax.Schedule:
  """Learning-rate schedule from trainer.schedule (peak = trainer.optimizer.learning_rate).

  tri_stage (tri-modal paper): linear warm-up from init_ratio*peak over warmup_steps, hold the peak
  for hold_steps, then exponential decay to final_ratio*peak over decay_steps, constant after.
  """
  s, peak = t.schedule, t.optimizer.learning_rate
  if s.name == "constant":
    return optax.constant_schedule(peak)
  warm = max(int(s.warmup_steps), 0)
  if s.name == "warmup_cosine":
    decay = s.decay_steps or max(t.total_steps, warm + 1)
    return optax.warmup_cosine_decay_schedule(peak * s.init_ratio, peak, warm, decay,
                                              end_value=peak * s.final_ratio)
  if s.name == "warmup_linear":
    decay = s.decay_steps or max(t.total_steps - warm, 1)
    return optax.join_schedules(
        [optax.linear_schedule(peak * s.init_ratio, peak, max(warm, 1)),
         optax.linear_schedule(peak, peak * s.final_ratio, decay)], [warm])
  # tri_stage
  final = max(s.final_ratio, 1e-12)
  decay = max(int(s.decay_steps), 1)
  return optax.join_schedules(
      [optax.linear_schedule(peak * s.init_ratio, peak, max(warm, 1)),
       optax.constant_schedule(peak),
       optax.exponential_decay(peak, decay, final, end_value=peak * final)],
      [warm, warm + int(s.hold_steps)])


def build_optimizer(t: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Clipping + optimizer with the schedule. Gradient accumulation is done by the train step."""
  o = t.optimizer
  lr = build_schedule(t)
  if o.name == "adamw":
    opt = optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay)
  elif o.name == "adam":
    opt = optax.adam(lr, b1=o.b1, b2=o.b2, eps=o.eps)
  elif o.name == "sgd":
    opt = optax.sgd(lr, momentum=o.b1 or None)
  else:
    opt = optax.adafactor(lr)
  if o.grad_clip_norm > 0:
    opt = optax.chain(optax.clip_by_global_norm(o.grad_clip_norm), opt)
  return opt


def to_json(cfg: ml_collections.ConfigDict) -> str:
  """The resolved config as JSON (saved with every checkpoint)."""
  return json.dumps(cfg.to_dict(), indent=2, sort_keys=True, default=str)


def check_known_keys(cfg: ml_collections.ConfigDict, overrides: dict[str, Any]) -> None:
  """Raises ConfigError naming a dotted key that the config does not have."""
  for dotted in overrides:
    node = cfg
    for part in dotted.split("."):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        raise ConfigError(f"unknown config key {dotted!r} (no field {part!r}); "
                          f"see the config file for the fields that exist")
      node = node[part]


# --------------------------------------------------------------------------- config <-> model dataclasses

def _field_types(cls) -> dict[str, Any]:
  import typing
  try:
    return typing.get_type_hints(cls)
  except Exception:  # unresolvable annotations: no nested sections
    return {}


def _nested_class(cls, name: str):
  t = _field_types(cls).get(name)
  return t if isinstance(t, type) and dataclasses.is_dataclass(t) else None


def model_section(cls, **values) -> ml_collections.ConfigDict:
  """A config section holding every field of the dataclass `cls` (big_vision's `Model(**config.model)`):
  the dataclass's own defaults, overridden by `values`; dataclass-typed fields become nested sections
  (`video=dict(num_layers=4)` fills the rest of that field's class defaults). Defaults live in the
  dataclass only. Values may be ml_collections FieldReferences (e.g. `c.data.get_ref("video_pca")`)."""
  out = {}
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - names)
  if unknown:
    raise ConfigError(f"{cls.__name__} has no field(s) {unknown}; fields: {sorted(names)}")
  for f in dataclasses.fields(cls):
    nested = _nested_class(cls, f.name)
    if nested is not None:
      given = values.get(f.name, {})
      if dataclasses.is_dataclass(given):
        given = {k.name: getattr(given, k.name) for k in dataclasses.fields(given)}
      out[f.name] = model_section(nested, **dict(given))
    elif f.name in values:
      out[f.name] = values[f.name]
    elif f.default is not dataclasses.MISSING:
      out[f.name] = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
      out[f.name] = f.default_factory()  # type: ignore[misc]
    else:
      raise ConfigError(f"{cls.__name__}.{f.name} has no default: give it to model_section")
  return ml_collections.ConfigDict(out)


def from_section(cls, section, where: str = "model", **runtime):
  """The dataclass `cls` from a config section written by `model_section` (or a saved config's dict).

  Strict both ways: a field missing from the section fails naming it (a checkpoint's config from before the
  field existed must not silently take today's default), and a key the class does not have fails naming it.
  `runtime`: values not kept in the section (e.g. `video=dict(dtype=...)`), they win over the section."""
  d = section.to_dict() if isinstance(section, ml_collections.ConfigDict) else dict(section)
  names = [f.name for f in dataclasses.fields(cls)]
  unknown = sorted(set(d) - set(names))
  if unknown:
    raise ConfigError(f"config keys {[f'{where}.{k}' for k in unknown]} are not fields of {cls.__name__} "
                      f"(fields: {names})")
  kwargs = {}
  for f in dataclasses.fields(cls):
    nested = _nested_class(cls, f.name)
    if f.name not in d and f.name not in runtime:
      raise ConfigError(f"config key {where}.{f.name} is missing ({cls.__name__} needs it; a config saved "
                        f"before the field existed must say which value it trained with)")
    if nested is not None:
      kwargs[f.name] = from_section(nested, d.get(f.name, {}), f"{where}.{f.name}", **runtime.get(f.name, {}))
    else:
      v = runtime.get(f.name, d.get(f.name))
      kwargs[f.name] = tuple(v) if isinstance(v, list) else v
  try:
    return cls(**kwargs)
  except TypeError as e:
    raise ConfigError(f"config section {where}: {e}") from e
