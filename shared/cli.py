"""Entry-point plumbing shared by every `python -m <system>.<entry>`: flags, logging, exit codes.

    --config configs/<system>/<name>.py[:arg]   ml_collections file (get_config(arg)); locked
    --config.a.b=value                          override; an unknown key fails naming it
    --workdir DIR                               checkpoints, events, samples; re-run to resume
    --jax_coordinator / --num_processes / --process_id   multi-host start (or JAX_* env vars)
    --verbose                                   (every entry point that uses `run`) tracebacks on errors

Exit codes of `run`: 0 done; 2 a person's input is wrong (a flag, the config, a data file, a checkpoint),
reported as ONE line on stderr, `error: <Type>: <message>` naming the flag, key, file, shape or step
(the traceback too with --verbose); 1 anything else (a bug: the traceback is always printed).
"""
from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from typing import Callable, NoReturn

from absl import app, flags
from ml_collections import config_flags

from shared.errors import ConfigError, StackError

FLAGS = flags.FLAGS


def define_flags(workdir_required: bool = True):
  config_flags.DEFINE_config_file("config", None, "Config file (get_config(arg) -> ConfigDict).",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Checkpoints, TensorBoard events and samples go here.")
  flags.DEFINE_string("jax_coordinator", None, "host:port of process 0 for jax.distributed.")
  flags.DEFINE_integer("num_processes", None, "Number of processes for jax.distributed.")
  flags.DEFINE_integer("process_id", None, "This process's id for jax.distributed.")
  flags.DEFINE_integer("resume_step", None, "Resume from exactly this checkpoint step (default: the newest "
                       "restorable one; = --config.trainer.checkpoint.resume_step).")
  flags.mark_flags_as_required(["config"] + (["workdir"] if workdir_required else []))


def one_line(message: str) -> str:
  """A (possibly multi-line) message as one line: an embedded traceback is cut to its last line, the lines
  of a listing are joined with "; " (a line ending in ":" is followed by its items)."""
  if "Traceback (most recent call last)" in message:
    head, tb = message.split("Traceback (most recent call last)", 1)
    message = head + (tb.strip().splitlines() or [""])[-1]
  out = ""
  for line in (l.strip() for l in message.splitlines()):
    if line:
      out += line if not out else (" " if out.endswith(":") else "; ") + line
  return out


def report(error: BaseException, verbose: bool = False, kind: str | None = None) -> None:
  """Prints `error: <Type>: <message>` as one line on stderr (after the traceback when verbose)."""
  if verbose:
    traceback.print_exception(error)
  print(f"error: {kind or type(error).__name__}: {one_line(str(error))}", file=sys.stderr, flush=True)


def call(main: Callable[[], int | None], verbose: bool = False) -> int:
  """main() -> its exit code, or 2 after `report` when it raised a StackError (for CLIs not built on `run`)."""
  try:
    return main() or 0
  except StackError as e:
    report(e, verbose)
    return 2


def _verbose_in(argv) -> bool:
  """--verbose before the flags are parsed (a flag error is reported before FLAGS.verbose exists)."""
  return any(a in ("--verbose", "--verbose=true", "--verbose=True", "--verbose=1") for a in argv[1:])


def _fail(kind: str, message: str, error: BaseException, argv) -> NoReturn:
  if _verbose_in(argv):
    traceback.print_exception(error)
  print(f"error: {kind}: {one_line(message)}", file=sys.stderr, flush=True)
  sys.exit(2)


def _stack_error_in(e: BaseException) -> StackError | None:
  while e is not None:
    if isinstance(e, StackError):
      return e
    e = e.__cause__ or e.__context__
  return None


def _parse_flags(argv):
  """FLAGS(argv), with every mistake on the command line (unknown flag, missing required flag, bad value,
  a config file that is missing or whose get_config raised, an override of a key the config lacks)
  reported as one line, exit 2. --help still prints the usage."""
  overrides = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
  try:
    rest = FLAGS(argv)
  except flags.Error as e:
    msg = str(e)
    m = re.match(r"flag (--[\w.]+)=None: Flag --[\w.]+ must have a value other than None", msg)
    if m:
      _fail("FlagError", f"{m.group(1)} is required (--help lists the flags)", e, argv)
    m = re.match(r"flag (--[\w.]+)=(\S*?): (.*)$", msg, re.S)   # "flag --task=foo: value should be ..."
    where, what = (f"{m.group(1)} {m.group(2)}", m.group(3)) if m else ("", msg)
    inner = _stack_error_in(e.__context__)      # a ConfigError raised by get_config(arg)
    if inner is not None:                       # (ml_collections re-raises it with its traceback as the text)
      _fail(type(inner).__name__, f"{where}: {one_line(str(inner)).rsplit(type(inner).__name__ + ': ', 1)[-1]}",
            e, argv)
    _fail("FlagError", f"{where}: {what}" if where else f"{what} (--help lists the flags)", e, argv)
  except (AttributeError, KeyError) as e:       # ml_collections: an override of a key the config lacks
    if not overrides or "ml_collections" not in traceback.extract_tb(e.__traceback__)[-1].filename:
      raise                                     # (not a lookup in the config: a bug, keep its traceback)
    inner = e.args[0] if e.args else ""
    text = str(inner.args[0] if isinstance(inner, BaseException) and inner.args else inner)
    key = (re.search(r"'([^']+)'", text) or re.search(r"(\S+)", text + " ?")).group(1)
    hint = re.search(r'Did you mean "([^"]+)"', text)
    named = [o for o in overrides if key in o[2:].split(".")] or overrides
    _fail("ConfigError", f"{named[0]}: the config has no key {key!r}"
          + (f" (did you mean {hint.group(1)!r}?)" if hint else ""), e, argv)
  except StackError as e:
    _fail(type(e).__name__, str(e), e, argv)
  if "config" in FLAGS and FLAGS["config"].present:   # the file is read lazily: a missing one fails here, not in main
    try:
      getattr(FLAGS.config, "keys", None)
    except OSError as e:
      path = FLAGS["config"].config_filename.split(":", 1)[0]
      why = "no such file" if not os.path.isfile(path) else one_line(str(e))
      _fail("ConfigError", f"--config {FLAGS['config'].config_filename}: {why}", e, argv)
  return rest


ARGV: list[str] = []   # set by run(): sys.argv less the flags


def run(main: Callable[[], int | None]):
  """absl.app.run with user errors (StackError, flag errors) printed as one line with exit 2; --verbose adds
  the traceback. Unexpected exceptions keep their traceback and exit 1."""
  if "verbose" not in FLAGS:
    flags.DEFINE_boolean("verbose", False, "On an error, print the traceback too (not only the one-line error).")
  for flag in FLAGS.flags_by_module_dict().get(__name__, []):   # --help lists the flags defined here too
    FLAGS.register_key_flag_for_module(sys.argv[0], flag)

  def _main(argv):
    ARGV[:] = list(argv)   # the program name, then positional arguments (e.g. infer's clip paths)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "orbax", "jax._src", "grain"):
      logging.getLogger(noisy).setLevel(logging.WARNING)
    return call(main, verbose=FLAGS.verbose)

  app.run(_main, flags_parser=_parse_flags)


def train_config():
  """The training entry points' config: --config with its overrides, and --resume_step folded in."""
  cfg = FLAGS.config
  step = FLAGS["resume_step"].value if "resume_step" in FLAGS else None
  if step is not None:
    cfg.trainer.checkpoint.resume_step = int(step)
  return cfg


def start_distributed():
  from shared import mesh
  mesh.initialize_distributed(FLAGS.jax_coordinator, FLAGS.num_processes, FLAGS.process_id)


def make_dir(path: str, flag: str = "--workdir") -> str:
  """Creates the directory a person named with `flag` (parents too); ConfigError naming the flag and path when
  it is a file or cannot be created. Returns the absolute path."""
  path = os.path.abspath(path)
  if os.path.exists(path) and not os.path.isdir(path):
    raise ConfigError(f"{flag} {path}: exists and is not a directory")
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise ConfigError(f"{flag} {path}: cannot create the directory: {e.strerror or e}") from e
  return path


def define_eval_flags(default_n: int = 32):
  """Flags every `python -m <system>.evaluate` takes: --workdir DIR [--split test] [--n N] [--step S] [--seed]."""
  flags.DEFINE_string("workdir", None, "Training workdir (checkpoints/).")
  flags.DEFINE_string("split", "test", "Data split to evaluate on (test: held-out speakers).")
  flags.DEFINE_integer("n", default_n, "Number of examples.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  flags.DEFINE_integer("seed", 0, "Noise seed (generators).")
  flags.mark_flags_as_required(["workdir"])


def write_eval(workdir: str, step: int, metrics: dict, *, name: str = "", **context) -> str:
  """Prints the metrics as one JSON line and writes DIR/eval/<step>.json (the same object; DIR/eval/<step>_<name>.json
  when `name` is given, so that evaluations of one step under other settings do not overwrite each other). Returns
  the path."""
  import json
  record = {"step": int(step), **context, **metrics}
  line = json.dumps(record, sort_keys=False, default=float, allow_nan=False)
  out_dir = os.path.join(workdir, "eval")
  os.makedirs(out_dir, exist_ok=True)
  if name and not all(ch.isalnum() or ch in "-_." for ch in name):
    raise ValueError(f"write_eval: name {name!r} must be letters, digits, '-', '_' or '.'")
  path = os.path.join(out_dir, f"{int(step)}_{name}.json" if name else f"{int(step)}.json")
  with open(path, "w") as f:
    f.write(line + "\n")
  print(line, flush=True)
  return path


def train_main(make_task: Callable, hooks: Callable | None = None):
  """The body of every `python -m <system>.train`: config (+ --resume_step), jax.distributed, the system's Task
  (hooks(cfg, task) may attach eval/sample hooks itself, or return (eval_fn, sample_fn) to attach), shared.train;
  prints how it ended. Returns the result."""
  import jax

  from shared import train as train_lib
  cfg = train_config()
  start_distributed()
  task = make_task(cfg)
  if hooks is not None:
    attached = hooks(cfg, task)
    if attached is not None:
      task.eval_fn, task.sample_fn = attached
  result = train_lib.train(cfg, task, FLAGS.workdir)
  if jax.process_index() == 0:
    print(f"{result.status} at step {result.step}", flush=True)
  return result


def define_export_flags():
  """The flags of every `python -m <system>.export` (--workdir and --out required); a system adds its own after."""
  flags.DEFINE_string("workdir", None, "Training workdir (checkpoints/).")
  flags.DEFINE_string("out", None, "Release directory to write.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Dtype of the written tensors.")
  flags.mark_flags_as_required(["workdir", "out"])


def export_main(export: Callable, **extra):
  """Body of an export entry point: export(workdir, out, step=, dtype=, **extra) -> the release directory, printed."""
  print(export(FLAGS.workdir, FLAGS.out, step=FLAGS.step, dtype=FLAGS.dtype, **extra), flush=True)
