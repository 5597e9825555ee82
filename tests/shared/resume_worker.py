"""Runs the demo job in its own process for the resume tests (not collected by pytest).

python tests/shared/resume_worker.py WORKDIR TOTAL_STEPS MODE
MODE: plain | sigterm@N (send ourselves SIGTERM after step N) | kill@N (SIGKILL after step N, once
the checkpoint at the last multiple of 4 is complete on disk) | killrand@SEED (SIGKILL from a timer at a random step and a
random delay: often inside an asynchronous checkpoint write or a metrics line). Writes
WORKDIR/final_params.npz when it finishes.
"""
import os
import signal
import sys
import time

import jax
import numpy as np

from configs.demo import tiny
from examples.sort import make_task
from shared import train as train_lib


def main():
  workdir, total, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
  cfg = tiny.get_config()
  cfg.trainer.total_steps = total
  cfg.trainer.log_every = 1
  cfg.trainer.checkpoint.every_steps = 4
  cfg.trainer.checkpoint.keep = 10
  cfg.model.update(dict(dim=32, mlp=64, layers=2, heads=2))
  hooks = []
  if mode.startswith("sigterm@"):
    at = int(mode.split("@")[1])
    hooks.append(lambda step, state: step == at and os.kill(os.getpid(), signal.SIGTERM))
  elif mode.startswith("kill@"):
    at = int(mode.split("@")[1])

    def kill(step, state):
      if step == at:
        done = os.path.join(workdir, "checkpoints", str(at // 4 * 4))
        for _ in range(600):  # the async save of step 4 finishes in the background
          if os.path.isdir(done) and not any("tmp" in f for f in os.listdir(os.path.dirname(done))):
            break
          time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGKILL)
    hooks.append(kill)
  elif mode.startswith("killrand@"):
    import random
    import threading
    rng = random.Random(int(mode.split("@")[1]))
    at, delay = rng.randint(3, total - 1), rng.uniform(0.0, 0.05)
    print(f"KILL at step {at} + {delay * 1e3:.0f} ms", flush=True)

    def kill_later(step, state):
      if step == at:
        threading.Timer(delay, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
    hooks.append(kill_later)
  result = train_lib.train(cfg, make_task(cfg), workdir, hooks=hooks)
  params = train_lib.flat(jax.device_get(result.state.params))
  np.savez(os.path.join(workdir, "final_params.npz"), **{k.replace("/", "."): v for k, v in params.items()})
  print(f"STATUS {result.status} {result.step} resumed_from={result.resumed_from}", flush=True)


if __name__ == "__main__":
  main()
