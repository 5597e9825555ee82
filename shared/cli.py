"""Entry-point plumbing shared by every `python -m <system>.train`: flags, logging, exit codes.

    --config configs/<system>/<name>.py[:arg]   ml_collections file (get_config(arg)); locked
    --config.a.b=value                          override; an unknown key fails naming it
    --workdir DIR                               checkpoints, events, samples; re-run to resume
    --jax_coordinator / --num_processes / --process_id   multi-host start (or JAX_* env vars)
"""
from __future__ import annotations

import logging
import sys
from typing import Callable

from absl import app, flags
from ml_collections import config_flags

from shared.errors import StackError

FLAGS = flags.FLAGS


def define_flags(workdir_required: bool = True):
  config_flags.DEFINE_config_file("config", None, "Config file (get_config(arg) -> ConfigDict).",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Checkpoints, TensorBoard events and samples go here.")
  flags.DEFINE_string("jax_coordinator", None, "host:port of process 0 for jax.distributed.")
  flags.DEFINE_integer("num_processes", None, "Number of processes for jax.distributed.")
  flags.DEFINE_integer("process_id", None, "This process's id for jax.distributed.")
  flags.mark_flags_as_required(["config"] + (["workdir"] if workdir_required else []))


def run(main: Callable[[], int | None]):
  """absl.app.run with user errors printed as one clear line (exit 2) instead of a traceback."""
  def _main(argv):
    del argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "orbax", "jax._src", "grain"):
      logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
      return main() or 0
    except StackError as e:
      print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
      return 2
  try:
    app.run(_main)
  except flags.Error as e:  # pragma: no cover - absl reports flag errors itself
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def start_distributed():
  from shared import mesh
  mesh.initialize_distributed(FLAGS.jax_coordinator, FLAGS.num_processes, FLAGS.process_id)


def define_eval_flags(default_n: int = 32):
  """Flags every `python -m <system>.evaluate` takes: --workdir DIR [--split test] [--n N] [--step S] [--seed]."""
  flags.DEFINE_string("workdir", None, "Training workdir (checkpoints/).")
  flags.DEFINE_string("split", "test", "Data split to evaluate on (test: held-out speakers).")
  flags.DEFINE_integer("n", default_n, "Number of examples.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  flags.DEFINE_integer("seed", 0, "Noise seed (generators).")
  flags.mark_flags_as_required(["workdir"])


def write_eval(workdir: str, step: int, metrics: dict, **context) -> str:
  """Prints the metrics as one JSON line and writes DIR/eval/<step>.json (the same object). Returns the path."""
  import json
  import os
  record = {"step": int(step), **context, **metrics}
  line = json.dumps(record, sort_keys=False, default=float, allow_nan=False)
  out_dir = os.path.join(workdir, "eval")
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, f"{int(step)}.json")
  with open(path, "w") as f:
    f.write(line + "\n")
  print(line, flush=True)
  return path
