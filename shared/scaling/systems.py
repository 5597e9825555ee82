"""Which system a config belongs to, and what a system gives the scaling tools.

A config's system module is `cfg.task_module` when the config sets it (the demo: "examples.sort"), else the
config's directory: configs/<system>/<name>.py -> `<system>_jax.task`. The module provides
  make_task(cfg) -> shared.train.Task      (required; Task.val_loss_fn for a low-variance validation loss)
  scale_config(cfg, width) -> cfg          (sweeps: the size rule, in place; documented in the system)
  batch_spec(cfg) -> {name: ShapeDtypeStruct}   (ahead-of-time compiles: the global batch, no data read)
"""
from __future__ import annotations

import importlib
import os
import re
from types import ModuleType

from shared.errors import ConfigError

# leaf names of lookup tables (token / position embeddings): "non-embedding" parameter counts leave them out
EMBEDDING_LEAF = re.compile(r"(^|_)(embed|embedding|pos|pos_embed|pos_embedding)$")


def module_name(config_path: str, cfg=None) -> str:
  named = cfg.get("task_module") if cfg is not None and hasattr(cfg, "get") else None
  if named:
    return str(named)
  path = os.path.abspath(config_path.split(":", 1)[0])
  parent = os.path.basename(os.path.dirname(path))
  if os.path.basename(os.path.dirname(os.path.dirname(path))) != "configs":
    raise ConfigError(f"--config {config_path}: not under configs/<system>/ and the config sets no task_module: "
                      "cannot tell which system it belongs to")
  return f"{parent}_jax.task"


def system_module(config_path: str, cfg=None, need: tuple[str, ...] = ("make_task",)) -> ModuleType:
  """The system module of a config, checked to provide `need`; ConfigError naming what is missing."""
  name = module_name(config_path, cfg)
  try:
    mod = importlib.import_module(name)
  except ModuleNotFoundError as e:
    raise ConfigError(f"--config {config_path}: its system module {name} cannot be imported ({e})") from e
  missing = [n for n in need if not hasattr(mod, n)]
  if missing:
    raise ConfigError(f"--config {config_path}: the system module {name} has no {', '.join(missing)} "
                      f"(shared/scaling/systems.py says what a system provides)")
  return mod


def param_counts(params) -> tuple[int, int]:
  """-> (total, non-embedding) parameter counts of a param tree (abstract or real)."""
  import numpy as np
  from shared.train import flat
  total = emb = 0
  for path, x in flat(params).items():
    n = int(np.prod(x.shape))
    total += n
    if EMBEDDING_LEAF.search(path.rsplit("/", 1)[-1]):
      emb += n
  return total, total - emb
