"""Resume is exact: interrupted (SIGTERM, or kill -9 after a checkpoint) and resumed runs end with
bitwise the same parameters and loss history as an uninterrupted one (CPU)."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from tests.xla_env import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOTAL = 12


def run(workdir, mode):
  env = dict(os.environ, XLA_FLAGS=xla_flags(1), PYTHONPATH=ROOT)
  p = subprocess.run([sys.executable, os.path.join(ROOT, "tests/shared/resume_worker.py"), str(workdir),
                      str(TOTAL), mode], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
  return p


def history(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(l) for l in f if l.strip()]
  return [(r["step"], r["loss"]) for r in rows]


def params(workdir):
  with np.load(os.path.join(workdir, "final_params.npz")) as z:
    return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  d = tmp_path_factory.mktemp("plain")
  p = run(d, "plain")
  assert p.returncode == 0, p.stderr[-3000:]
  assert f"STATUS done {TOTAL} resumed_from=None" in p.stdout
  return d


def assert_same_run(a, b):
  ha, hb = history(a), history(b)
  assert [s for s, _ in ha] == list(range(1, TOTAL + 1))
  assert ha == hb  # bitwise: the floats' JSON text round-trips exactly
  pa, pb = params(a), params(b)
  assert pa.keys() == pb.keys()
  for k in pa:
    np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)


def test_sigterm_then_resume_is_exact(reference, tmp_path):
  p = run(tmp_path, "sigterm@6")
  assert p.returncode == 0, p.stderr[-3000:]  # preemption exits cleanly
  assert "STATUS preempted 6" in p.stdout
  assert sorted(os.listdir(tmp_path / "checkpoints"))[-1] == "6" or "6" in os.listdir(tmp_path / "checkpoints")
  p = run(tmp_path, "plain")
  assert p.returncode == 0, p.stderr[-3000:]
  assert f"STATUS done {TOTAL} resumed_from=6" in p.stdout
  assert_same_run(reference, tmp_path)


def test_kill9_after_checkpoint_then_resume_is_exact(reference, tmp_path):
  p = run(tmp_path, "kill@7")
  assert p.returncode == -signal.SIGKILL
  p = run(tmp_path, "plain")
  assert p.returncode == 0, p.stderr[-3000:]
  assert f"STATUS done {TOTAL} resumed_from=4" in p.stdout
  assert_same_run(reference, tmp_path)
