"""Ahead-of-time memory and FLOPs of a config's REAL train step on hardware we do not have.

    python -m shared.scaling compile --config configs/<system>/<name>.py --topology v5p-64 [--config.key=value ...]

`compile_report(config_path, topology, overrides)` loads the config as every entry point does (ml_collections
config_flags: `path.py[:arg]`, then `key=value` overrides), builds the system's Task (`<system>_jax.task
.make_task(cfg)`) and the trainer's jitted step (`shared.train.build`, the config's mesh via
`shared.mesh.make_mesh(cfg.trainer.mesh, devices=...)` and its logical rules), lowers it on abstract shapes
(`setup.abstract_state` and `<system>_jax.task.batch_spec(cfg)`, the GLOBAL batch: no parameter or example is
ever materialised) and compiles it for the topology's devices:

  TPU (v5p-N, v6e-N)  libtpu's compile-only devices (jax.experimental.topologies; `pip install "jax[tpu]=="` the
                      installed jax version): XLA:TPU's own buffer assignment, exact for that slice.
  h200x8              the CUDA plugin's compile-only devices with an H200 target description (needs the
                      jax-cuda12-plugin / jax-cuda12-pjrt wheels of the installed jax version; no GPU needed):
                      XLA:GPU's buffer assignment. Without the plugin: the same program for 8 CPU devices with
                      the same mesh; argument / output / alias bytes are then exact for the sharding (they are
                      the sharded shapes), temp bytes are the CPU compiler's, not XLA:GPU's (report["exact"]).

Per device (compiled.memory_analysis()): argument, output, alias (outputs sharing an argument's buffer: the
donated TrainState) and temp (XLA's scratch: activations, gradients, collectives' buffers) bytes;
peak = argument + output - alias + temp (every live buffer of the step at once, as XLA allocates them; the
generated code is not counted), and fits = peak <= the device's HBM (HBM table below, with sources). XLA:TPU
refuses to compile a program over its HBM (RESOURCE_EXHAUSTED): the report then says fits False with temp from
XLA's error ("HLO temporaries (450.68G)") and argument / output / alias from the shardings (memory "source").
FLOPs: compiled.cost_analysis()["flops"] is the partitioned program's, i.e. per device; global = per device x
devices. lowered.cost_analysis() (the unpartitioned program, before XLA's passes) is reported where the backend
gives it. XLA counts a while loop's body ONCE (checked: a 10-step lax.scan of a matmul reports the flops of one
step on CPU and TPU alike), so for the scanned layer stacks here the figure is ~ the non-layer work + ONE layer,
not the step; the full analytic count is shared/scaling/flops.py's (`python -m shared.scaling flops`).

Known approximation: shared/kernels' "auto" attention picks by jax.default_backend(), which is "cpu" in the
compiling process, so attention compiles as XLA einsums (xla_chunked for long sequences), not splash / cuDNN.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import time
from typing import Sequence

import numpy as np

from shared.errors import ConfigError, StackError
from shared.scaling.flops import task_flops
from shared.scaling.systems import system_module

GiB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Topology:
  """A user-facing accelerator name. TPU fields as MaxText's accelerator_to_spec_map.py (AI-Hypercomputer/maxtext,
  src/MaxText/accelerator_to_spec_map.py): libtpu topology name, chip config, chips per host, wrap-around."""
  name: str
  platform: str                 # "tpu" | "cuda"
  devices: int                  # chips (TPU; a v5p megacore chip is one device) or GPUs
  hbm_bytes: int
  hbm_source: str
  device_kind: str
  topology: str = ""            # libtpu topology name (^name:AxB[xC]$)
  chip_config: str = "default"
  chips_per_host: tuple = (2, 2, 1)
  wrap: tuple = (False, False, False)


_V5P = "cloud.google.com/tpu/docs/v5p: 95 GiB HBM2e per chip"
_V6E = "cloud.google.com/tpu/docs/v6e: 32 GiB HBM per chip"
_H200 = "nvidia.com/en-us/data-center/h200: 141 GB HBM3e per GPU"

# v5p-N counts TensorCores (2 per chip, one megacore device): v5p-8 = 4 chips; v6e-N counts chips.
TOPOLOGIES: dict[str, Topology] = {t.name: t for t in (
    Topology("v5p-8", "tpu", 4, 95 * GiB, _V5P, "TPU v5", "v5:2x2x1", "megacore"),
    Topology("v5p-16", "tpu", 8, 95 * GiB, _V5P, "TPU v5", "v5:2x2x2", "megacore"),
    Topology("v5p-32", "tpu", 16, 95 * GiB, _V5P, "TPU v5", "v5:2x2x4", "megacore"),
    Topology("v5p-64", "tpu", 32, 95 * GiB, _V5P, "TPU v5", "v5:2x4x4", "megacore"),
    Topology("v5p-128", "tpu", 64, 95 * GiB, _V5P, "TPU v5", "v5:4x4x4", "megacore", wrap=(True, True, True)),
    Topology("v6e-8", "tpu", 8, 32 * GiB, _V6E, "TPU v6 lite", "v6e:2x4"),
    Topology("v6e-64", "tpu", 64, 32 * GiB, _V6E, "TPU v6 lite", "v6e:8x8"),
    Topology("v6e-256", "tpu", 256, 32 * GiB, _V6E, "TPU v6 lite", "v6e:16x16", wrap=(True, True, False)),
    Topology("h200x8", "cuda", 8, 141 * 10 ** 9, _H200, "NVIDIA H200"),
)}

# XLA:GPU target description of an H200 SXM (GH100: 132 SMs, sm_90, 4.8 TB/s, 141 GB), from XLA's
# xla/backends/gpu/target_config/specs/h100_sxm.txtpb (same die) with the H200's memory size and bandwidth.
H200_TARGET = """gpu_device_info {
  threads_per_block_limit: 1024 threads_per_warp: 32 shared_memory_per_block: 49152
  shared_memory_per_core: 233472 threads_per_core_limit: 2048 core_count: 132 fpus_per_core: 128
  block_dim_limit_x: 2147483647 block_dim_limit_y: 65535 block_dim_limit_z: 65535
  memory_bandwidth: 4800000000000 l2_cache_size: 52428800 clock_rate_ghz: 1.98 device_memory_size: 141000000000
  shared_memory_per_block_optin: 232448 cuda_compute_capability { major: 9 }
  registers_per_core_limit: 65536 registers_per_block_limit: 65536
}
platform_name: "CUDA"
dnn_version_info { major: 9 minor: 1 patch: 0 }
device_description_str: "NVIDIA H200"
"""


# Without a GPU nothing can be autotuned, and XLA:GPU's Triton GEMM tiling failed on the paper-size UniTalking
# step ("Couldn't find output tile sizes" for a [223200, 3072] dot): cuBLAS GEMMs, default algorithms.
GPU_COMPILER_OPTIONS = {"xla_gpu_enable_triton_gemm": False, "xla_gpu_autotune_level": 0}


# --------------------------------------------------------------------------- config and system

def load_config(config_path: str, overrides: Sequence[str] = ()):
  """`path.py[:arg]` + ["a.b=value", ...] -> the locked ConfigDict, read by ml_collections' config_flags exactly
  as the entry points' --config / --config.a.b=value (shared/cli.py), on a private flag set."""
  from absl import flags
  from ml_collections import config_flags
  for o in overrides:
    if "=" not in o or o.startswith("="):
      raise ConfigError(f"override {o!r}: expected key=value (e.g. trainer.batch_size=8)")
  path = config_path.split(":", 1)[0]
  if not os.path.isfile(path):
    raise ConfigError(f"--config {config_path}: no such file")
  argv = ["aot", f"--config={config_path}"] + [f"--config.{o}" for o in overrides]
  fv = flags.FlagValues()   # the overrides are read from sys_argv (else config_flags reads sys.argv)
  config_flags.DEFINE_config_file("config", None, "config file", flag_values=fv, lock_config=True, sys_argv=argv)
  try:
    fv(argv)
    return fv.config
  except StackError:
    raise
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    inner = e
    while inner is not None and not isinstance(inner, StackError):
      inner = inner.__cause__ or inner.__context__
    if inner is not None:
      raise inner from e
    raise ConfigError(f"--config {config_path} with overrides {list(overrides)}: {e}".splitlines()[0]) from e


# --------------------------------------------------------------------------- devices

@contextlib.contextmanager
def _env(**values):
  old = {k: os.environ.get(k) for k in values}
  os.environ.update(values)
  try:
    yield
  finally:
    for k, v in old.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v


_DEVICES: dict = {}


def get_topology(name: str) -> Topology:
  """TOPOLOGIES[name]; ConfigError listing the known names otherwise."""
  if name not in TOPOLOGIES:
    raise ConfigError(f"unknown topology {name!r}; known: {', '.join(TOPOLOGIES)}")
  return TOPOLOGIES[name]


def topology_devices(name: str) -> tuple[list, str]:
  """-> (compile-only devices of the topology, backend: "tpu" | "cuda" | "cpu" (the h200x8 fallback))."""
  topo = get_topology(name)
  if name in _DEVICES:
    return _DEVICES[name]
  import jax
  from jax.experimental import topologies
  if topo.platform == "tpu":
    try:
      import libtpu  # noqa: F401
    except ImportError:
      raise ConfigError(f"topology {name} needs libtpu: pip install \"jax[tpu]=={jax.__version__}\" (compiles for "
                        f"a TPU slice on this CPU machine)") from None
    # libtpu reads these once, at its first use: without them it warns that it cannot find the TPU's
    # accelerator type / worker hostnames (there is no TPU). Set only around the call: TPU_WORKER_HOSTNAMES in the
    # environment would make shared.mesh.initialize_distributed start jax.distributed later in this process.
    with _env(TPU_ACCELERATOR_TYPE=name, TPU_WORKER_HOSTNAMES="localhost", TPU_WORKER_ID="0", TPU_SKIP_MDS_QUERY="1",
              ALLOW_MULTIPLE_LIBTPU_LOAD="1"):
      desc = topologies.get_topology_desc(topo.topology, "tpu", chip_config_name=topo.chip_config,
                                          chips_per_host_bounds=topo.chips_per_host, num_slices=1, wrap=topo.wrap)
    out = (list(desc.devices), "tpu")
  else:
    try:
      desc = topologies.get_topology_desc(platform="cuda", topology=f"1x1x{topo.devices}", target_config=H200_TARGET)
      out = (list(desc.devices), "cuda")
    except Exception:  # no CUDA plugin wheel (jax-cuda12-plugin / -pjrt): the CPU fallback
      try:   # a fresh process (the CLI): ask for the CPU devices before jax starts its backends
        from jax._src import xla_bridge
        if not xla_bridge.backends_are_initialized():
          jax.config.update("jax_num_cpu_devices", max(topo.devices, jax.config.jax_num_cpu_devices))
      except Exception:  # an older / newer jax without these: the XLA_FLAGS hint below
        pass
      cpus = jax.devices("cpu")
      if len(cpus) < topo.devices:
        raise ConfigError(f"topology {name}: no CUDA plugin (pip install jax-cuda12-plugin=={jax.__version__} "
                          f"jax-cuda12-pjrt=={jax.__version__}) and {len(cpus)} CPU device(s) for the fallback; set "
                          f"XLA_FLAGS=--xla_force_host_platform_device_count={topo.devices} before jax starts"
                          ) from None
      out = (cpus[:topo.devices], "cpu")
  if len(out[0]) != topo.devices:
    raise ConfigError(f"topology {name}: got {len(out[0])} devices, expected {topo.devices}")
  _DEVICES[name] = out
  return out


# --------------------------------------------------------------------------- the report

def _shard_bytes(tree, shardings) -> int:
  """Bytes of one device's shards of an abstract tree under its shardings (the largest shard of each leaf)."""
  import jax
  leaves, sh = jax.tree.leaves(tree), jax.tree.leaves(shardings)
  return int(sum(int(np.prod(s.shard_shape(x.shape))) * np.dtype(x.dtype).itemsize for x, s in zip(leaves, sh)))


def _flops(cost) -> float | None:
  cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
  if not cost:
    return None
  f = float(cost.get("flops", 0.0))
  return f if f > 0 else None


_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_OOM = re.compile(r"required for HLO temporaries \(([\d.]+)([KMGT]?)\) exceeds available HBM \(([\d.]+)([KMGT]?)\)")


def _out_of_memory(message: str) -> dict | None:
  """XLA:TPU's "RESOURCE_EXHAUSTED: Ran out of memory ... HLO temporaries (450.68G) exceeds available HBM (95.74G)"
  -> {"temp_bytes", "available_bytes", "message"} (its G = GiB); None for any other error."""
  if "RESOURCE_EXHAUSTED" not in message:
    return None
  m = _OOM.search(message)
  line = next((l for l in message.splitlines() if "RESOURCE_EXHAUSTED" in l), message)[:500]
  if m is None:
    return None
  return {"temp_bytes": int(float(m.group(1)) * _UNITS[m.group(2)]),
          "available_bytes": int(float(m.group(3)) * _UNITS[m.group(4)]), "message": line}


def compile_report(config_path: str, topology: str, overrides: Sequence[str] = ()) -> dict:
  """Lowers and compiles the config's train step for `topology` (a key of TOPOLOGIES) on abstract shapes.
  Returns a JSON-serialisable dict (see the module docstring; format_report prints it)."""
  import jax
  from shared import mesh as mesh_lib
  from shared import train as train_lib
  topo = get_topology(topology)
  cfg = load_config(config_path, overrides)
  module = system_module(config_path, cfg, need=("make_task", "batch_spec"))
  batch = module.batch_spec(cfg)
  devices, backend = topology_devices(topology)
  mesh = mesh_lib.make_mesh(cfg.trainer.mesh, devices=devices)
  task = module.make_task(cfg)
  # init only needs the shapes past the batch axis: one example (init_params may call jnp.asarray on it)
  example = {k: np.zeros((1,) + tuple(s.shape[1:]), s.dtype) for k, s in batch.items()}
  analytic = task_flops(cfg, task, batch_spec=batch)
  t0 = time.perf_counter()
  setup = train_lib.build(cfg, task, mesh=mesh, example_batch=example)
  lowered = setup.step_fn.lower(setup.abstract_state, batch)
  t1 = time.perf_counter()
  st, sh = setup.abstract_state, setup.state_shardings
  state_dev = _shard_bytes(st, sh)
  compiled, refused = None, None
  try:
    compiled = lowered.compile(GPU_COMPILER_OPTIONS if backend == "cuda" else None)
  except Exception as e:  # XLA:TPU refuses a program that cannot fit its HBM (RESOURCE_EXHAUSTED)
    refused = _out_of_memory(str(e))
    if refused is None:
      raise
  t2 = time.perf_counter()
  if compiled is not None:
    mem = compiled.memory_analysis()
    arg, out, alias, temp = (int(getattr(mem, f"{k}_size_in_bytes")) for k in ("argument", "output", "alias", "temp"))
    code, source = int(mem.generated_code_size_in_bytes), "compiled.memory_analysis()"
    flops_dev = _flops(compiled.cost_analysis())
  else:  # the shards from the shardings, XLA's temporaries from its error
    arg, out, alias = state_dev + _shard_bytes(batch, setup.batch_shardings), state_dev, state_dev
    temp, code, flops_dev = refused["temp_bytes"], 0, None
    source = ("XLA refused to compile (out of HBM): temp_bytes from its error message, argument / output / alias "
              "from the TrainState and batch shardings")
  peak = arg + out - alias + temp
  n = len(devices)
  try:
    flops_lowered = _flops(lowered.cost_analysis())
  except Exception:  # not every backend analyses the unpartitioned module
    flops_lowered = None
  params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(st.params))
  trainable = sum(int(np.prod(x.shape)) for k, x in train_lib.flat(st.params).items() if k in setup.trainable_keys)
  divisor = mesh_lib.batch_divisor(setup.mesh, setup.rules)
  acc = int(cfg.trainer.optimizer.accumulate_steps)
  exact = {"tpu": "exact: XLA:TPU (libtpu) buffer assignment for this slice",
           "cuda": "exact: XLA:GPU buffer assignment for the H200 target (CUDA plugin, compile-only devices)",
           "cpu": ("argument / output / alias bytes are exact for the sharding (the sharded shapes); temp bytes "
                   "are the CPU compiler's, not XLA:GPU's (no CUDA plugin installed)")}[backend]
  return {
      "config": config_path, "overrides": list(overrides), "topology": topo.name, "platform": topo.platform,
      "compiled_for": backend, "device_kind": str(getattr(devices[0], "device_kind", topo.device_kind)),
      "num_devices": n, "mesh": {k: int(v) for k, v in setup.mesh.shape.items()},
      "batch": {k: {"shape": list(s.shape), "dtype": np.dtype(s.dtype).name} for k, s in batch.items()},
      "batch_size": int(cfg.trainer.batch_size), "batch_shards": divisor,
      "per_device_batch": int(cfg.trainer.batch_size) / divisor, "accumulate_steps": acc,
      "remat": str(cfg.trainer.remat), "compute_dtype": str(cfg.trainer.precision.compute_dtype),
      "param_dtype": str(cfg.trainer.precision.param_dtype),
      "params": params, "trainable_params": trainable,
      # the TrainState's shards per device, from the shardings alone (a cross-check of argument_bytes)
      "state_bytes_per_device": {"params": _shard_bytes(st.params, sh.params),
                                 "opt_state": _shard_bytes(st.opt_state, sh.opt_state),
                                 "total": state_dev},
      "memory_per_device": {"argument_bytes": arg, "output_bytes": out, "alias_bytes": alias, "temp_bytes": temp,
                            "generated_code_bytes": code, "peak_bytes": peak,
                            "peak_formula": "argument + output - alias + temp", "source": source},
      "compile_error": refused["message"] if refused else None,
      "xla_available_hbm_bytes": refused["available_bytes"] if refused else None,
      "hbm_bytes": topo.hbm_bytes, "hbm_source": topo.hbm_source, "fits": bool(peak <= topo.hbm_bytes),
      "hbm_used_fraction": peak / topo.hbm_bytes,
      "flops_per_device": flops_dev, "flops_global": flops_dev * n if flops_dev else None,
      "flops_lowered_global": flops_lowered,
      "flops_note": "XLA's cost analysis: a scan / while body counted once (not x its trip count)",
      # shared/scaling/flops.py on the same task and batch: every layer, and scan bodies once (XLA's way)
      "analytic_flops_per_step": analytic["flops_per_step"], "analytic_loops_once": analytic["flops_per_step_loops_once"],
      "ratio_analytic_to_xla": (analytic["flops_per_step_loops_once"] / (flops_dev * n)) if flops_dev else None,
      "exact": exact, "attention_note": ("shared.kernels 'auto' attention chose by the compiling process's backend "
                                         f"({jax.default_backend()}): XLA einsum attention, not splash / cuDNN"),
      "lower_seconds": round(t1 - t0, 2), "compile_seconds": round(t2 - t1, 2), "jax_version": jax.__version__,
  }


def _gb(x: float) -> str:
  return f"{x / GiB:8.2f} GiB"


def format_report(report: dict) -> str:
  """A few readable lines of compile_report's dict."""
  r, m = report, report["memory_per_device"]
  mesh = " ".join(f"{k}={v}" for k, v in r["mesh"].items() if v != 1) or "1 device"
  lines = [
      f"{r['config']} on {r['topology']} ({r['num_devices']} x {r['device_kind']}, compiled for {r['compiled_for']})",
      f"  mesh {mesh}; global batch {r['batch_size']} over {r['batch_shards']} shards "
      f"({r['per_device_batch']:g} per device: micro-batches of {r['per_device_batch'] / r['accumulate_steps']:g} x "
      f"accumulate_steps {r['accumulate_steps']}); remat {r['remat']}, "
      f"compute {r['compute_dtype']}, params {r['param_dtype']}",
      f"  params {r['params'] / 1e9:.3f} B ({r['trainable_params'] / 1e9:.3f} B trainable); TrainState per device "
      f"{r['state_bytes_per_device']['total'] / GiB:.2f} GiB (params {r['state_bytes_per_device']['params'] / GiB:.2f}"
      f", optimizer {r['state_bytes_per_device']['opt_state'] / GiB:.2f})",
      "  per device:",
      f"    argument {_gb(m['argument_bytes'])}   output {_gb(m['output_bytes'])}   alias {_gb(m['alias_bytes'])}"
      f"   temp {_gb(m['temp_bytes'])}",
      f"    peak {_gb(m['peak_bytes'])} (argument + output - alias + temp) of {_gb(r['hbm_bytes'])} HBM "
      f"({100 * r['hbm_used_fraction']:.0f} %): {'fits' if r['fits'] else 'DOES NOT FIT'}",
  ]
  if r.get("compile_error"):
    lines.append(f"  XLA refused the program: {r['compile_error']}")
    lines.append(f"  ({m['source']})")
  if r["flops_per_device"]:
    lines.append(f"  FLOPs per step: {r['flops_per_device']:.3e} per device, {r['flops_global']:.3e} global (XLA: "
                 f"scanned layers counted once)")
  elif r.get("flops_lowered_global"):
    lines.append(f"  FLOPs per step: {r['flops_lowered_global']:.3e} global (unpartitioned module; the compiled "
                 f"program reports none)")
  ratio = f"; / XLA {r['ratio_analytic_to_xla']:.3f}" if r.get("ratio_analytic_to_xla") else ""
  lines.append(f"  analytic FLOPs per step {r['analytic_flops_per_step']:.4g} global (scan bodies once: "
               f"{r['analytic_loops_once']:.4g}{ratio})")
  lines.append(f"  {r['exact']}; {r['attention_note']}")
  lines.append(f"  lower {r['lower_seconds']} s, compile {r['compile_seconds']} s (jax {r['jax_version']})")
  return "\n".join(lines)
