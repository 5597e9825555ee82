"""Trains the BatchNorm contract task in its own process for the resume test (not collected by pytest).

python tests/shared/bn_worker.py WORKDIR TOTAL_STEPS MODE      MODE: plain | sigterm@N
Writes WORKDIR/final.npz: params/<path> and batch_stats/<path> of the final state.
"""
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from shared import train as train_lib  # noqa: E402
from tests.shared import contract_tasks as ct  # noqa: E402


def main():
  workdir, total, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
  cfg = ct.config(batch_size=8, total_steps=total)
  cfg.trainer.checkpoint.update(dict(every_steps=4, keep=10))
  hooks = []
  if mode.startswith("sigterm@"):
    at = int(mode.split("@")[1])
    hooks.append(lambda step, state: step == at and os.kill(os.getpid(), signal.SIGTERM))
  result = train_lib.train(cfg, ct.bn_task(cfg), workdir, hooks=hooks)
  state = jax.device_get(result.state)
  out = {f"params/{k}": v for k, v in train_lib.flat(state.params).items()}
  out.update(train_lib.flat(state.model_state))
  np.savez(os.path.join(workdir, "final.npz"), **out)
  print(f"STATUS {result.status} {result.step} resumed_from={result.resumed_from}", flush=True)


if __name__ == "__main__":
  main()
