"""`python -m shared.scaling <command>`: plan, run and read a scaling study of any system.

  sweep    --config C --budgets 1e12,3e12 --sizes 64,96,128 --workdir SWEEP [--launch local|print] [--cluster ...]
  cell     --config C --width W --budget B --workdir SWEEP/cells/NAME     (one cell: what `--launch print` runs)
  fit      SWEEP [--e_mode regularised|pinned|free] [--bootstrap 1000]  -> SWEEP/fit.json + plots
  compile  --config C --topology v5p-64|v5p-8|v6e-256|h200x8            (ahead-of-time per-device memory)
  flops    --config C                                                   (analytic FLOPs vs XLA's cost analysis)
--config.a.b=value overrides apply to every command that takes --config (and are repeated in printed commands).
"""
from __future__ import annotations

import json
import sys

from absl import flags
from ml_collections import config_flags

from shared import cli
from shared.errors import ConfigError

COMMANDS = ("sweep", "cell", "fit", "compile", "flops")
FLAGS = flags.FLAGS


def define_flags():
  config_flags.DEFINE_config_file("config", None, "Config file (get_config(arg) -> ConfigDict).", lock_config=True)
  flags.DEFINE_string("workdir", None, "sweep: the sweep directory; cell: the cell's directory; fit: SWEEP.")
  flags.DEFINE_string("budgets", None, "sweep: compute budgets in FLOPs, comma-separated (e.g. 1e12,3e12,1e13).")
  flags.DEFINE_string("sizes", None, "sweep: model widths, comma-separated (the system's scale_config rule).")
  flags.DEFINE_enum("launch", "local", ["local", "print"], "sweep: run cells here, or print one command per cell.")
  flags.DEFINE_enum("cluster", "local", ["local", "tpu", "slurm", "xpk"], "sweep --launch print: the launcher.")
  flags.DEFINE_integer("width", None, "cell: model width.")
  flags.DEFINE_float("budget", None, "cell: compute budget (FLOPs).")
  flags.DEFINE_string("topology", None, "compile: v5p-8, v5p-64, v6e-256, h200x8, ...")
  flags.DEFINE_enum("e_mode", "regularised", ["regularised", "pinned", "free"], "fit: how E is fitted.")
  flags.DEFINE_float("e_value", None, "fit: E when --e_mode=pinned.")
  flags.DEFINE_integer("bootstrap", 1000, "fit: bootstrap resamples for the intervals.")
  flags.DEFINE_string("jax_coordinator", None, "host:port of process 0 for jax.distributed.")
  flags.DEFINE_integer("num_processes", None, "Number of processes for jax.distributed.")
  flags.DEFINE_integer("process_id", None, "This process's id for jax.distributed.")


def _need(*names):
  for n in names:
    if FLAGS[n].value is None:
      raise ConfigError(f"--{n} is required for `{cli.ARGV[1]}` (python -m shared.scaling --help)")


def _config_arg() -> str:
  return FLAGS["config"].config_filename


def _overrides() -> list[str]:
  return [a for a in sys.argv[1:] if a.startswith("--config.")]


def flops_report(cfg, config_arg: str) -> dict:
  """Analytic FLOPs of the train step (shared/scaling/flops.py) beside XLA's cost analysis of the compiled
  step on one CPU device with remat off (no recomputation on either side). -> dict (ratio: analytic with loop
  bodies once / XLA, as XLA counts a while loop's body once)."""
  import jax

  from shared import mesh as mesh_lib, train as train_lib
  from shared.scaling.flops import task_flops
  from shared.scaling.systems import system_module
  mod = system_module(config_arg, cfg)
  cfg.trainer.remat = "none"
  task = mod.make_task(cfg)
  info = task_flops(cfg, task)
  example = task.example_batch if task.example_batch is not None else next(iter(task.make_train_iter()))
  mesh = mesh_lib.make_mesh(cfg.trainer.mesh, devices=jax.devices()[:1])
  setup = train_lib.build(cfg, task, mesh=mesh, example_batch=example)
  batch = mesh_lib.global_batch(example, setup.mesh, setup.rules)
  xla = train_lib.compiled_flops(setup.step_fn.lower(setup.abstract_state, batch).compile())
  once = info["flops_per_step_loops_once"]
  return {"config": config_arg, "analytic_flops_per_step": info["flops_per_step"],
          "analytic_loops_once": once, "xla_flops_per_step": xla,
          "ratio_analytic_to_xla": once / xla if xla else None, "params": info["params"],
          "uncounted": info["unknown"],
          "note": "XLA's cost analysis counts a while loop's (scanned layers') body once: the ratio compares it "
                  "with the analytic count taken the same way; XLA adds element-wise work (norms, softmax, Adam)"}


def fit_summary(fit: dict) -> str:
  """The fit in a few lines: optimal size per budget, the exponent and the frontier with their intervals."""
  lines = [f"{b['budget']:.3g} FLOPs: N_opt {b['n_opt']:.4g}, L_opt {b['l_opt']:.4g}"
           + (f" ({', '.join(b['flags'])})" if b["flags"] else "") for b in fit["budgets"]]
  o = fit["optimal_size"]
  iv = o.get("interval")
  lines.append(f"N_opt ~ C^{o['exponent']:.3f}" + (f" [{iv[0]:.3f}, {iv[1]:.3f}]" if iv else ""))
  fr = fit.get("frontier")
  if fr:
    ivs = fr.get("intervals", {})
    lines.append("L(C) = E + A (C/C0)^-b: " + ", ".join(
        f"{k} {fr[k]:.4g}" + (f" [{ivs[k][0]:.4g}, {ivs[k][1]:.4g}]" if ivs.get(k) else "") for k in ("E", "A", "b"))
        + f" (C0 {fr['C0']:.3g}; E {fit['options']['e_mode']})")
  lines += [f"warning: {w}" for w in fit.get("warnings", [])]
  lines.append(f"-> {fit['sweep']}/fit.json, plots: {', '.join(fit.get('plots', []))}")
  return "\n".join(lines)


def main():
  args = cli.ARGV[1:]
  if not args or args[0] not in COMMANDS:
    raise ConfigError(f"python -m shared.scaling COMMAND: one of {', '.join(COMMANDS)} (got {args[:1] or 'none'})")
  cmd = args[0]
  if cmd == "fit":
    from shared.scaling.fit import fit_sweep
    sweep_dir = args[1] if len(args) > 1 else FLAGS.workdir
    if not sweep_dir:
      raise ConfigError("python -m shared.scaling fit SWEEP: the sweep directory is required")
    options = dict(e_mode=FLAGS.e_mode, n_boot=FLAGS.bootstrap)
    if FLAGS.e_value is not None:
      options["E"] = FLAGS.e_value
    out = fit_sweep(sweep_dir, **options)
    print(fit_summary(out), flush=True)
    return 0
  _need("config")
  cfg = FLAGS.config
  if cmd == "compile":
    from shared.scaling import aot
    _need("topology")
    overrides = [o[len("--config."):] for o in _overrides()]
    report = aot.compile_report(_config_arg(), FLAGS.topology, overrides)
    print(aot.format_report(report), flush=True)
    print(json.dumps(report, default=float), flush=True)
    return 0
  if cmd == "flops":
    print(json.dumps(flops_report(cfg, _config_arg()), default=float), flush=True)
    return 0
  from shared.scaling import sweep as sweep_lib
  from shared.scaling.systems import system_module
  if cmd == "sweep":
    _need("budgets", "sizes", "workdir")
    budgets = sweep_lib.parse_list(FLAGS.budgets, float, "--budgets")
    widths = sweep_lib.parse_list(FLAGS.sizes, int, "--sizes")
    if FLAGS.launch == "local":
      cli.start_distributed()
    rows = sweep_lib.sweep(cfg, _config_arg(), _overrides(), budgets, widths, cli.make_dir(FLAGS.workdir),
                           launch=FLAGS.launch, cluster=FLAGS.cluster)
    print(f"[sweep] {len(rows)} of {len(budgets) * len(widths)} cells done; rows in {FLAGS.workdir}/summary.jsonl",
          flush=True)
    return 0
  if cmd == "cell":
    _need("width", "budget", "workdir")
    cli.start_distributed()
    mod = system_module(_config_arg(), cfg, need=("make_task", "scale_config"))
    row = sweep_lib.run_cell(cfg, mod, sweep_lib.Cell(float(FLAGS.budget), int(FLAGS.width)),
                             cli.make_dir(FLAGS.workdir))
    print(json.dumps(row, default=float) if row else "preempted: rerun the same command to resume", flush=True)
    return 0


if __name__ == "__main__":
  define_flags()
  cli.run(main)
