"""One of two processes joined by jax.distributed on localhost (not collected by pytest).

python tests/shared/multiprocess_worker.py PORT PROCESS_ID WORKDIR
Each process has 2 CPU devices; the 4-device mesh is (data 2, fsdp 2). Trains 2 steps (checkpoint at
2), then resumes in a fresh trainer call to step 3. Prints the losses it saw.
"""
import os
import sys

from tests.xla_env import xla_flags

port, pid, workdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
os.environ["XLA_FLAGS"] = xla_flags(2)
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402

from configs.demo import tiny  # noqa: E402
from examples.sort import make_task  # noqa: E402
from shared import mesh as mesh_lib, train as train_lib  # noqa: E402


def main():
  assert mesh_lib.initialize_distributed(f"localhost:{port}", 2, pid)
  assert jax.process_count() == 2 and jax.device_count() == 4, (jax.process_count(), jax.device_count())
  cfg = tiny.get_config()
  cfg.model.update(dict(dim=32, mlp=64, heads=2, layers=1))
  cfg.trainer.update(dict(total_steps=2, batch_size=8, log_every=1))
  cfg.trainer.mesh.update(dict(data=2, fsdp=2))
  cfg.trainer.checkpoint.every_steps = 2
  first = train_lib.train(cfg, make_task(cfg), workdir)
  cfg.trainer.total_steps = 3
  second = train_lib.train(cfg, make_task(cfg), workdir)
  w = first.state.params["blocks"]["fc1"]
  assert len(w.addressable_shards) == 2 and w.sharding.spec[1] == "fsdp"
  norm = float(jax.jit(lambda p: sum(jnp_sum(x) for x in jax.tree.leaves(p)))(second.state.params))
  print(f"RESULT pid={pid} first={first.status}:{first.step} second={second.status}:{second.step} "
        f"resumed_from={second.resumed_from} param_sum={norm:.6f}", flush=True)
  jax.distributed.shutdown()


def jnp_sum(x):
  import jax.numpy as jnp
  return jnp.sum(x.astype(jnp.float32))


if __name__ == "__main__":
  main()
