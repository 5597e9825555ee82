"""Training checkpoints: the orbax manager the trainer writes with, and `restore` for everything else.

  DIR/checkpoints/<step>/state    TrainState (step, params, model_state, opt_state, rng, counters)
  DIR/checkpoints/<step>/data     data-iterator state (grain), when the iterator has one
  DIR/checkpoints/<step>/config   the resolved config (JSON)

  DIR/best/                       (trainer.checkpoint.best = an eval metric) the step that scored best so far, as
                                  a workdir of its own: best/checkpoints/<step>/ (hard links to the files of
                                  checkpoints/<step>: no copy, and it survives keep-last-N) + best/best.json
                                  {metric, mode, value, step}: `--workdir DIR/best` works wherever a workdir does

`restore(workdir, step=None)` gives (config, step, params, model_state) without a data pipeline, an
optimizer or a trainer: it reads the shapes from the checkpoint's own metadata and restores only the
params and the model state (never the optimizer moments), so sample / export / evaluate entry points
need one copy of the weights. `model_fn(cfg)` (a system's `model_from_config`) adds the model.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from shared.errors import CheckpointError

log = logging.getLogger("shared.checkpoint")

# files every complete step holds (orbax layout); a missing one names the damage before orbax is asked
REQUIRED_FILES = ("_CHECKPOINT_METADATA", "state/_METADATA", "state/manifest.ocdbt", "state/commit_success.txt")
DAMAGED_DIR = "checkpoints_damaged"   # DIR/checkpoints_damaged/<step>-<time>: damaged steps moved aside, kept


class CheckpointMismatch(CheckpointError):
  """The checkpoint is intact but does not match the model (a config change): never a reason to fall back."""


def check_complete(step_dir: str) -> None:
  """CheckpointError naming the first required file a step lacks (before orbax is asked to read it)."""
  if any(not os.path.exists(os.path.join(step_dir, f)) for f in REQUIRED_FILES):
    raise CheckpointError(f"cannot restore checkpoint {step_dir}: {damage_of(step_dir)}")


def damage_of(step_dir: str, error: BaseException | None = None) -> str:
  """Which file of a checkpoint step is missing or unreadable: a required file that is absent, else the file an
  orbax / tensorstore error names, else the error itself."""
  import re
  missing = [f for f in REQUIRED_FILES if not os.path.exists(os.path.join(step_dir, f))]
  if missing:
    return f"missing file {os.path.join(step_dir, missing[0])}"
  if error is not None:
    text = f"{error} {error.__cause__ or ''}"
    files = [f for f in re.findall(r'(?:local file|file) "([^"]+)"', text) if f.startswith(step_dir)]
    if files:
      m = re.search(r"(Requested byte range[^\[]*|not valid[^\[]*|Error reading[^\[]*?)\s*\[", text)
      return f"unreadable file {max(files, key=len)}" + (f" ({m.group(1).strip()})" if m else "")
    return f"{type(error).__name__}: {str(error)[:300]}"
  return "unknown damage"


def path_str(path) -> str:
  """A tree path as 'a/b/0/c' whatever the container types (dicts, lists, namedtuples)."""
  parts = []
  for entry in path:
    for attr in ("key", "idx", "name"):
      if hasattr(entry, attr):
        parts.append(str(getattr(entry, attr)))
        break
  return "/".join(parts)


class _JsonStateIterator:
  """Adapts any iterator with JSON-able get_state()/set_state() to grain's checkpoint handler."""

  def __init__(self, it):
    self.it = it

  def get_state(self) -> bytes:
    return json.dumps(self.it.get_state()).encode()

  def set_state(self, state: bytes):
    self.it.set_state(json.loads(state.decode()))

  def start_prefetch(self):
    getattr(self.it, "start_prefetch", lambda: None)()


_ARRAY_HANDLER_SET = False


def _register_array_handler(ocp) -> None:
  """On CPU, save each array's shards from one replica: orbax's replica-parallel save slices every replicated
  array with a small jitted program per shape (a compile per distinct shape, ~17 s for a tiny model on 8 CPU
  devices) and buys nothing on one host. Accelerators keep orbax's default."""
  global _ARRAY_HANDLER_SET
  if jax.default_backend() == "cpu" and not _ARRAY_HANDLER_SET:
    from orbax.checkpoint._src.serialization import type_handler_registry as registry
    registry.GLOBAL_TYPE_HANDLER_REGISTRY.add(   # its public wrapper logs a warning on every override
        jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True, ignore_warnings=True)
    _ARRAY_HANDLER_SET = True


class Checkpointer:
  """orbax CheckpointManager over DIR/checkpoints: state + data-iterator state + config JSON."""

  def __init__(self, workdir: str, keep: int = 1, async_save: bool = False, create: bool = True):
    import grain
    import orbax.checkpoint as ocp
    self._ocp = ocp
    _register_array_handler(ocp)
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self.manager = ocp.CheckpointManager(
        self.directory,
        item_handlers=dict(state=ocp.StandardCheckpointHandler(), config=ocp.JsonCheckpointHandler(),
                           data=grain.checkpoint.CheckpointHandler()),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=create, enable_async_checkpointing=async_save))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  @staticmethod
  def _data_item(it, save: bool):
    if not (hasattr(it, "get_state") and hasattr(it, "set_state")):
      return None
    import grain
    if not isinstance(it, grain.DatasetIterator):
      it = _JsonStateIterator(it)
    return grain.checkpoint.CheckpointSave(it) if save else grain.checkpoint.CheckpointRestore(it)

  def save(self, step: int, state, data_iter, cfg_json: str, *, force: bool = False):
    args = dict(state=self._ocp.args.StandardSave(state),
                config=self._ocp.args.JsonSave(json.loads(cfg_json)))
    data = self._data_item(data_iter, save=True)
    if data is not None:
      args["data"] = data
    self.manager.save(step, args=self._ocp.args.Composite(**args), force=force)

  def restore(self, step: int, abstract_state, shardings, data_iter):
    """The whole TrainState (and the data iterator's state, in place) onto `shardings`."""
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract_state, shardings)
    where = os.path.join(self.directory, str(step))
    check_complete(where)
    self.check_shapes(step, target, where)
    args = dict(state=self._ocp.args.StandardRestore(target))
    data = self._data_item(data_iter, save=False)
    if data is not None:
      args["data"] = data
    try:
      restored = self.manager.restore(step, args=self._ocp.args.Composite(**args))
    except Exception as e:  # orbax raises many types; name the checkpoint and the file
      raise CheckpointError(f"cannot restore checkpoint {where}: {damage_of(where, e)}") from e
    return restored["state"]

  def restore_newest(self, abstract_state, shardings, data_iter, *, step: int | None = None):
    """-> (step, state) of the newest restorable checkpoint (or exactly `step`), or (None, None) when there is
    none. A damaged step (a missing or truncated file) is logged naming the step and the file, moved aside to
    DIR/checkpoints_damaged/<step>-<time> (kept, never deleted; a later save of that step must not collide)
    and the next older step is tried. A checkpoint that does not match the model is not damage: it raises."""
    steps = sorted(self.manager.all_steps(), reverse=True)
    if step is not None:
      if step not in steps:
        raise CheckpointError(f"trainer.checkpoint.resume_step={step} (--resume_step {step}): no checkpoint for "
                              f"that step under {self.directory} "
                              f"(steps: {sorted(steps)})")
      state = self.restore(step, abstract_state, shardings, data_iter)
      for later in (s for s in steps if s > step):   # the run branches at `step`: later steps are kept aside
        self.move_aside(later, why="superseded")
      return step, state
    failures = []
    for s in steps:
      try:
        return s, self.restore(s, abstract_state, shardings, data_iter)
      except CheckpointMismatch:
        raise
      except CheckpointError as e:
        failures.append(f"step {s}: {e}")
        log.warning("checkpoint step %d is damaged (%s); trying the previous step", s, e)
        self.move_aside(s, why="damaged")
    if failures:
      raise CheckpointError(f"no restorable checkpoint under {self.directory} (damaged steps moved to "
                            f"{os.path.join(os.path.dirname(self.directory), DAMAGED_DIR)}):\n  "
                            + "\n  ".join(failures))
    return None, None

  def move_aside(self, step: int, why: str = "damaged"):
    """Moves a step to DIR/checkpoints_<why>/<step>-<unix time> (process 0; kept, never deleted) and reloads the
    manager: a damaged step, or (why="superseded") a step after an explicit resume_step."""
    src = os.path.join(self.directory, str(step))
    if jax.process_index() == 0 and os.path.isdir(src):
      dst_root = os.path.join(os.path.dirname(self.directory), f"checkpoints_{why}")
      os.makedirs(dst_root, exist_ok=True)
      dst = os.path.join(dst_root, f"{step}-{int(time.time())}")
      os.rename(src, dst)
      log.warning("moved %s checkpoint %s to %s (kept)", why, src, dst)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f"move_aside_{step}")
    self.manager.reload()

  def state_metadata(self, step: int) -> dict:
    """{'/'-joined path: (shape, dtype)} of the saved TrainState, from the checkpoint's metadata."""
    where = os.path.join(self.directory, str(step))
    try:
      meta = self.manager.item_metadata(step)["state"]
    except Exception as e:
      raise CheckpointError(f"cannot read the metadata of checkpoint {where}: {type(e).__name__}: {e}") from e
    if meta is None:
      raise CheckpointError(f"checkpoint {where} has no 'state' item")
    tree = getattr(meta, "tree", meta)
    return {path_str(p): (tuple(getattr(l, "shape", ()) or ()), getattr(l, "dtype", None))
            for p, l in jax.tree_util.tree_flatten_with_path(tree)[0]}

  def restore_parts(self, step: int, target: dict) -> dict:
    """Only the TrainState fields in `target` ({field: tree of ShapeDtypeStruct with shardings})."""
    where = os.path.join(self.directory, str(step))
    ocp = self._ocp
    try:
      with ocp.PyTreeCheckpointer() as reader:
        return reader.restore(os.path.join(where, "state"), args=ocp.args.PyTreeRestore(
            item=target, partial_restore=True,
            restore_args=jax.tree.map(lambda s: ocp.ArrayRestoreArgs(
                sharding=s.sharding, global_shape=s.shape, dtype=s.dtype), target)))
    except Exception as e:
      raise CheckpointError(f"cannot restore checkpoint {where}: {damage_of(where, e)}") from e

  def config(self, step: int) -> dict | None:
    try:
      return self.manager.restore(step, args=self._ocp.args.Composite(config=self._ocp.args.JsonRestore()))["config"]
    except Exception:  # older checkpoints: DIR/config.json is the fallback
      return None

  def check_shapes(self, step: int, target, where: str):
    """Mismatched checkpoint -> CheckpointError listing the keys whose shape differs or is missing."""
    try:
      have = {k: s for k, (s, _) in self.state_metadata(step).items()}
    except CheckpointError:  # metadata unreadable: let restore report
      return
    state_dict = {f.name: getattr(target, f.name) for f in dataclasses.fields(target)}
    want = {path_str(p): tuple(l.shape) for p, l in jax.tree_util.tree_flatten_with_path(state_dict)[0]}
    missing = sorted(k for k in want if k not in have)
    wrong = sorted(f"{k}: checkpoint {have[k]} vs model {want[k]}" for k in want
                   if k in have and have[k] != want[k])
    if wrong or (missing and len(missing) < len(want)):
      lines = wrong[:20] + [f"{k}: not in checkpoint" for k in missing[:20]]
      raise CheckpointMismatch(f"checkpoint {where} does not match the model "
                            f"({len(wrong)} shape mismatches, {len(missing)} missing):\n  "
                            + "\n  ".join(lines))

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


BEST_DIR = "best"
BEST_MODES = ("min", "max")


def best_record(workdir: str) -> dict | None:
  """DIR/best/best.json ({metric, mode, value, step}) or None."""
  path = os.path.join(workdir, BEST_DIR, "best.json")
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


def _link_tree(src: str, dst: str):
  """dst mirrors src: directories made, files hard-linked (copied where the filesystem cannot link)."""
  import shutil
  for root, _, files in os.walk(src):
    out = os.path.join(dst, os.path.relpath(root, src))
    os.makedirs(out, exist_ok=True)
    for name in files:
      a, b = os.path.join(root, name), os.path.join(out, name)
      try:
        os.link(a, b)
      except OSError:
        shutil.copy2(a, b)


def keep_best(workdir: str, step: int, metrics: dict, metric: str, mode: str = "min") -> bool:
  """After an evaluation: when metrics[metric] beats DIR/best/best.json (or there is none yet), DIR/best becomes
  step's checkpoint (DIR/checkpoints/<step> must be complete: wait for an async save first) -> True. The switch is
  safe against a kill at any point: the new step is linked into best/checkpoints/<step>.tmp and renamed, then
  best.json is replaced atomically, then older steps are removed; best.json always names a complete step.
  A metric the evaluation did not return raises KeyError naming the ones it did; a non-finite value never wins."""
  if mode not in BEST_MODES:
    raise ValueError(f"trainer.checkpoint.best_mode={mode!r}: expected one of {BEST_MODES}")
  if metric not in metrics:
    raise KeyError(f"trainer.checkpoint.best={metric!r}: the evaluation returned no such metric "
                   f"(it returned {sorted(metrics)})")
  value = float(metrics[metric])
  old = best_record(workdir)
  if not np.isfinite(value):
    return False
  if old is not None and old.get("metric") == metric and old.get("step") != step:
    if (value >= old["value"]) if mode == "min" else (value <= old["value"]):
      return False
  src = os.path.join(os.path.abspath(workdir), "checkpoints", str(step))
  check_complete(src)
  root = os.path.join(os.path.abspath(workdir), BEST_DIR)
  ck = os.path.join(root, "checkpoints")
  dst = os.path.join(ck, str(step))
  import shutil
  if not os.path.isdir(dst):
    tmp = dst + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    _link_tree(src, tmp)
    os.rename(tmp, dst)
  rec = {"metric": metric, "mode": mode, "value": value, "step": int(step)}
  tmp_json = os.path.join(root, "best.json.tmp")
  with open(tmp_json, "w") as f:
    json.dump(rec, f)
  os.replace(tmp_json, os.path.join(root, "best.json"))
  for name in os.listdir(ck):
    if name != str(step):
      shutil.rmtree(os.path.join(ck, name), ignore_errors=True)
  log.info("best %s = %.6g at step %d: %s", metric, value, step, dst)
  return True


@dataclasses.dataclass
class Restored:
  """What `restore` gives: the run's config, the step, and the weights (host numpy or device arrays)."""
  config: ml_collections.ConfigDict
  step: int
  params: Any
  model_state: dict
  model: Any = None

  @property
  def variables(self) -> dict:
    """{"params": params, **model_state}: what module.apply takes (running statistics in eval)."""
    return {"params": self.params, **self.model_state}


def _unflatten(flat: dict[str, Any]) -> dict:
  out: dict = {}
  for k, v in flat.items():
    node = out
    parts = k.split("/")
    for p in parts[:-1]:
      node = node.setdefault(p, {})
    node[parts[-1]] = v
  return out


def restore(workdir: str, step: int | None = None, *, model_fn: Callable | None = None,
            sharding=None) -> Restored:
  """(config, step, params, model_state[, model]) of a training workdir, without building a trainer.

  step: None = the newest restorable checkpoint (a damaged newer one is named in a warning and skipped; nothing
  is moved or deleted). model_fn(cfg) -> model (e.g. a system's model_from_config). sharding: where the arrays
  go (default: this process's first device) - any device count reads a checkpoint written on another. Only
  params and model_state are read (no optimizer moments, no data pipeline)."""
  ckpt_dir = os.path.join(os.path.abspath(workdir), "checkpoints")
  if not os.path.isdir(ckpt_dir):
    raise CheckpointError(f"{ckpt_dir} not found: --workdir must be a training directory")
  ckpt = Checkpointer(workdir, keep=1, async_save=False, create=False)
  try:
    steps = sorted(ckpt.manager.all_steps(), reverse=True)
    if not steps:
      raise CheckpointError(f"no complete checkpoint under {ckpt.directory}")
    if step is not None and step not in steps:
      raise CheckpointError(f"no checkpoint for step {step} under {ckpt.directory} (steps: {sorted(steps)})")
    failures = []
    for s in ([step] if step is not None else steps):
      try:
        got = _restore_step(ckpt, workdir, s, sharding)
        break
      except CheckpointError as e:
        if step is not None:
          raise
        failures.append(f"step {s}: {e}")
        log.warning("checkpoint step %d cannot be read (%s); trying the previous step", s, e)
    else:
      raise CheckpointError(f"no restorable checkpoint under {ckpt.directory}:\n  " + "\n  ".join(failures))
  finally:
    ckpt.close()
  cfg_dict, params, model_state, s = got
  cfg = ml_collections.ConfigDict(cfg_dict)
  model = model_fn(cfg) if model_fn is not None else None
  return Restored(config=cfg, step=int(s), params=params, model_state=model_state, model=model)


def _restore_step(ckpt: Checkpointer, workdir: str, step: int, sharding):
  """-> (config dict, params, model_state, step) of one step; CheckpointError naming the damage."""
  where = os.path.join(ckpt.directory, str(step))
  check_complete(where)
  cfg_dict = ckpt.config(step)
  if cfg_dict is None:
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
      raise CheckpointError(f"checkpoint {where} has no config and {path} is missing")
    with open(path) as f:
      cfg_dict = json.load(f)
  meta = ckpt.state_metadata(step)
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  parts = {}
  for part in ("params", "model_state"):
    leaves = {k[len(part) + 1:]: jax.ShapeDtypeStruct(s, np.dtype(d) if d is not None else np.float32,
                                                      sharding=sharding)
              for k, (s, d) in meta.items() if k.startswith(part + "/")}
    parts[part] = _unflatten(leaves)
  if not parts["params"]:
    raise CheckpointError(f"checkpoint {where} holds no params")
  got = ckpt.restore_parts(step, {k: v for k, v in parts.items() if v})
  return cfg_dict, got["params"], got.get("model_state", {}), step
