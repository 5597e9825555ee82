"""Device mesh from config, logical-axis rules -> shardings, multi-host start, global batches.

Mesh axes: ("data", "fsdp", "tensor", "sequence"). A config gives their sizes; -1 takes the rest.
Every parameter is annotated with logical names (nn.with_logical_partitioning); LOGICAL_RULES maps
those names to mesh axes, so the same model runs data-parallel, FSDP, tensor-parallel or mixed by
changing the rules, never the model.

Logical names used across the project:
  parameters   embed, mlp, heads, kv_heads, kv (head_dim), vocab, layers (scan axis), norm,
               conv_in, conv_out, conv_kernel, lora_rank
  activations  batch, length, act_embed, act_heads, act_kv, act_mlp, act_vocab
"""
from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from shared.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor", "sequence")

# Default logical -> mesh rules: batch over data+fsdp, weights' embed dim over fsdp (ZeRO-3 style),
# heads/mlp/vocab over tensor (Megatron style), sequence over sequence. Anything absent is replicated.
LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", "sequence"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("vocab", "tensor"),
    ("conv_out", "fsdp"),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    ("kv", None),
    ("layers", None),
    ("norm", None),
    ("conv_in", None),
    ("conv_kernel", None),
    ("lora_rank", None),
    ("act_embed", None),
    ("act_kv", None),
)

log = logging.getLogger(__name__)


def rules_from_config(trainer_cfg=None) -> tuple[tuple[str, Any], ...]:
  """LOGICAL_RULES with the config's overrides (trainer.rules) taking precedence."""
  overrides = tuple((str(name), _as_axes(axes)) for name, axes in (trainer_cfg.rules if trainer_cfg else ()))
  names = {name for name, _ in overrides}
  return overrides + tuple(r for r in LOGICAL_RULES if r[0] not in names)


def _as_axes(axes):
  if axes is None or isinstance(axes, str):
    return axes
  return tuple(axes)


def mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, ...]:
  """Sizes of MESH_AXES from the config; -1 takes what the other axes leave."""
  sizes = [int(mesh_cfg[a]) for a in MESH_AXES]
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if num_devices % known:
      raise ConfigError(f"mesh {dict(zip(MESH_AXES, sizes))}: {num_devices} devices are not "
                        f"divisible by the fixed axes' product {known}")
    sizes[sizes.index(-1)] = num_devices // known
  if int(np.prod(sizes)) != num_devices:
    raise ConfigError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices, "
                      f"but {num_devices} are available (set one axis to -1 to take the rest)")
  return tuple(sizes)


def make_mesh(mesh_cfg, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A Mesh over MESH_AXES from trainer.mesh (all devices of all processes by default)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(mesh_cfg, len(devices))
  # Auto axes: shardings come from the logical rules and jit's in/out shardings, not from types.
  auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
  if devices == list(jax.devices()):
    return jax.make_mesh(shape, MESH_AXES, axis_types=auto, devices=devices)
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=auto)


def logical_shardings(mesh: Mesh, rules, logical_specs):
  """Tree of logical PartitionSpecs (nn.get_partition_spec) -> tree of NamedShardings."""
  import flax.linen as nn
  return nn.logical_to_mesh_sharding(logical_specs, mesh, rules)


def batch_sharding(mesh: Mesh, rules, ndim: int = 1) -> NamedSharding:
  """Sharding of a batch array: leading axis over the mesh axes of logical 'batch', rest replicated."""
  axes = dict(rules).get("batch", ("data", "fsdp"))
  return NamedSharding(mesh, P(axes, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def replicate_matching(mesh: Mesh, shardings, patterns: Sequence[str]):
  """Tree of NamedShardings -> the same tree with every leaf whose "/"-joined path matches one of `patterns`
  (re.match, e.g. "sign_encoder/") replicated: data parallel for those weights whatever the logical rules say
  (frozen encoders beside an FSDP-sharded LLM: no ZeRO gather of them per step). trainer.replicate in configs."""
  if not patterns:
    return shardings
  import re

  from flax import traverse_util
  regs = [re.compile(p) for p in patterns]
  flat = traverse_util.flatten_dict(shardings, sep="/")
  out = {k: replicated(mesh) if any(r.match(k) for r in regs) else v for k, v in flat.items()}
  return traverse_util.unflatten_dict(out, sep="/")


def batch_divisor(mesh: Mesh, rules) -> int:
  """The number of shards of the batch axis: the global batch size must be a multiple of it."""
  axes = dict(rules).get("batch", ("data", "fsdp"))
  axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
  return int(np.prod([mesh.shape[a] for a in axes]))


def global_batch(local_batch: dict, mesh: Mesh, rules) -> dict:
  """Assembles each process's local numpy batch into global jax.Arrays sharded over 'batch'.

  Every process passes its own [B / process_count, ...] slice; the result is [B, ...].
  """
  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_process_local_data(batch_sharding(mesh, rules, x.ndim), x)
  return jax.tree.map(put, local_batch)


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
  """Multi-host start. Arguments, else the environment (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
  JAX_PROCESS_ID), else the cluster auto-detection jax does on Cloud TPU / SLURM. Single process when
  nothing says otherwise. Returns True when jax.distributed was initialised.
  """
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
    num_processes = int(os.environ["JAX_NUM_PROCESSES"])
  if process_id is None and os.environ.get("JAX_PROCESS_ID"):
    process_id = int(os.environ["JAX_PROCESS_ID"])
  auto = any(k in os.environ for k in ("TPU_WORKER_HOSTNAMES", "SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE"))
  if coordinator_address is None and not auto:
    return False
  if jax.config.jax_platforms in (None, "", "cpu") and coordinator_address is not None:
    try:  # CPU collectives across processes (tests, CPU clusters)
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except Exception:  # pragma: no cover - option renamed in some jax versions
      pass
  jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                             process_id=process_id)
  log.info("jax.distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
           jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


def local_batch_size(global_batch_size: int) -> int:
  """This process's share of a global batch (every host feeds [B / process_count, ...])."""
  n = jax.process_count()
  if global_batch_size % n:
    raise ConfigError(f"trainer.batch_size={global_batch_size} must be a multiple of the number of processes ({n})")
  return global_batch_size // n
