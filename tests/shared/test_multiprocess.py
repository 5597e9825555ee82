"""Two processes on localhost joined by jax.distributed run sharded steps and save/restore a checkpoint."""
import os
import re
import socket
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.multiprocess
def test_two_processes_train_checkpoint_and_resume(tmp_path):
  port = free_port()
  env = dict(os.environ, PYTHONPATH=ROOT)
  env.pop("XLA_FLAGS", None)
  procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, "tests/shared/multiprocess_worker.py"),
                             str(port), str(i), str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT) for i in range(2)]
  outs = []
  for p in procs:
    try:
      out, err = p.communicate(timeout=400)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    assert p.returncode == 0, err[-4000:]
    outs.append(out)
  results = [re.search(r"RESULT pid=(\d) first=(\S+) second=(\S+) resumed_from=(\d+) param_sum=(\S+)", o)
             for o in outs]
  assert all(results), outs
  for r in results:
    assert r.group(2) == "done:2" and r.group(3) == "done:3" and r.group(4) == "2"
  assert results[0].group(5) == results[1].group(5)  # one global state, seen alike by both processes
  # one checkpoint directory written jointly; the data-iterator state of each process is in it
  data = os.listdir(tmp_path / "checkpoints" / "3" / "data")
  assert {"process_0-of-2.json", "process_1-of-2.json"} <= set(data)
