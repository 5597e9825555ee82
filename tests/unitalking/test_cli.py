"""UniTalking's entry points refuse a person's mistakes in seconds with ONE stderr line, `error: <Type>: ...`
naming the flag / file / directory, and exit 2 (a traceback only with --verbose): each sample task's required
inputs (sample.REQUIRED_INPUTS), files that are missing or do not decode, flag errors, a workdir without
checkpoints. Every case fails before a checkpoint is read, so no trained workdir is needed."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from tests.xla_env import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(module: str, *args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(1))
  return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, cwd=ROOT,
                        timeout=300)


def one_error_line(p: subprocess.CompletedProcess) -> str:
  """The process exited 2 with exactly one non-empty stderr line, `error: ...`, and no traceback."""
  lines = [l for l in p.stderr.splitlines() if l.strip()]
  assert p.returncode == 2, (p.returncode, p.stderr[-3000:])
  assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr[-3000:]
  assert "Traceback" not in p.stderr
  return lines[0]


@pytest.fixture
def files(tmp_path):
  """An empty workdir and files that do not decode as what their names say."""
  (tmp_path / "wd").mkdir()
  for name in ("junk.png", "junk.mp4", "junk.wav"):
    (tmp_path / name).write_bytes(b"not media at all\n" * 8)
  return tmp_path


@pytest.mark.parametrize("args, kind, names", [
    (["--task", "ti2av"], "ConfigError", ["--task ti2av", "--image"]),
    (["--task", "tv2a"], "ConfigError", ["--task tv2a", "--video"]),
    (["--task", "tr2av"], "ConfigError", ["--task tr2av", "--ref_audio"]),
    (["--task", "t2av", "--image", "{d}/junk.png"], "ConfigError", ["--task t2av", "--image", "ti2av"]),
    (["--task", "ti2av", "--image", "{d}/no_such_face.png"], "DataError", ["--image", "{d}/no_such_face.png"]),
    (["--task", "ti2av", "--image", "{d}/junk.png"], "DataError", ["cannot decode image", "{d}/junk.png"]),
    (["--task", "tv2a", "--video", "{d}/junk.mp4"], "DataError", ["cannot decode video", "{d}/junk.mp4"]),
    (["--task", "tr2av", "--ref_audio", "{d}/junk.wav"], "DataError", ["cannot decode audio", "{d}/junk.wav"]),
    (["--task", "t2av", "--text", "  "], "ConfigError", ["--text"]),
    (["--task", "t2av", "--out", "{d}"], "ConfigError", ["--out", "is a directory"]),
])
def test_sample_refuses_missing_or_bad_inputs_before_the_checkpoint(files, args, kind, names):
  d = str(files)
  args = [a.format(d=d) for a in args]
  extra = (([] if "--text" in args else ["--text", "ma ba luo"])
           + ([] if "--out" in args else ["--out", f"{d}/out/clip.mp4"]))
  p = run("unitalking_jax.sample", "--workdir", f"{d}/wd", *args, *extra)
  line = one_error_line(p)
  assert line.startswith(f"error: {kind}: "), line
  for name in names:
    assert name.format(d=d) in line, (name, line)
  assert os.listdir(f"{d}/wd") == [] and not os.path.exists(f"{d}/out")   # nothing read, nothing written


def test_required_inputs_cover_every_task():
  from unitalking_jax.sample import INPUTS, REQUIRED_INPUTS
  from unitalking_jax.task import TASKS
  assert tuple(REQUIRED_INPUTS) == tuple(TASKS)
  assert {n for need in REQUIRED_INPUTS.values() for n in need} <= set(INPUTS)


@pytest.mark.parametrize("module, args, names", [
    ("unitalking_jax.sample", ["--task", "t2av", "--text", "ma"], ["FlagError", "--workdir is required"]),
    ("unitalking_jax.evaluate", [], ["FlagError", "--workdir is required"]),
    ("unitalking_jax.export", ["--workdir", "x"], ["FlagError", "--out is required"]),
    ("unitalking_jax.sample", ["--workdir", "x", "--task", "t2x"], ["FlagError", "--task t2x", "t2av|tv2a"]),
    ("unitalking_jax.sample", ["--workdir", "x", "--no_such_flag=1"], ["FlagError", "no_such_flag"]),
])
def test_flag_errors_are_one_line(module, args, names):
  line = one_error_line(run(module, *args))
  for name in names:
    assert name in line, (name, line)


def test_evaluate_sample_export_on_a_workdir_without_checkpoints(tmp_path):
  wd = tmp_path / "wd"
  wd.mkdir()
  ckpts = str(wd / "checkpoints")
  line = one_error_line(run("unitalking_jax.evaluate", "--workdir", str(wd)))
  assert line.startswith("error: CheckpointError: ") and ckpts in line, line
  line = one_error_line(run("unitalking_jax.sample", "--workdir", str(wd), "--text", "ma ba",
                            "--out", str(tmp_path / "out" / "clip.mp4")))
  assert line.startswith("error: CheckpointError: ") and ckpts in line, line
  assert not os.path.exists(tmp_path / "out")
  (wd / "checkpoints").mkdir()   # an empty checkpoints directory: no complete checkpoint
  line = one_error_line(run("unitalking_jax.export", "--workdir", str(wd), "--out", str(tmp_path / "rel")))
  assert line.startswith("error: CheckpointError: ") and ckpts in line, line
  assert not os.path.exists(tmp_path / "rel") and not os.path.exists(wd / "eval")
  # --verbose: the traceback, then the same line, still exit 2
  p = run("unitalking_jax.evaluate", "--workdir", str(wd), "--verbose")
  assert p.returncode == 2 and "Traceback (most recent call last)" in p.stderr, p.stderr[-3000:]
  assert p.stderr.strip().splitlines()[-1].startswith("error: CheckpointError: ")


def test_export_refuses_an_out_that_is_a_file_or_a_foreign_directory(tmp_path):
  (tmp_path / "wd").mkdir()
  (tmp_path / "release.txt").write_text("something else\n")
  line = one_error_line(run("unitalking_jax.export", "--workdir", str(tmp_path / "wd"),
                            "--out", str(tmp_path / "release.txt")))
  assert line.startswith("error: ConfigError: --out ") and "release.txt" in line and "file" in line, line
  (tmp_path / "notes").mkdir()
  (tmp_path / "notes" / "a.txt").write_text("mine\n")
  line = one_error_line(run("unitalking_jax.export", "--workdir", str(tmp_path / "wd"),
                            "--out", str(tmp_path / "notes")))
  assert line.startswith("error: ConfigError: --out ") and "non-empty directory" in line, line
  assert (tmp_path / "release.txt").read_text() == "something else\n"


def test_help_lists_the_flags():
  p = run("unitalking_jax.sample", "--help")
  assert p.returncode in (0, 1) and "Traceback" not in p.stderr   # absl's --help exits 1
  assert all(f"--{f}" in p.stdout for f in ("workdir", "task", "image", "ref_audio", "video", "text"))
  assert "verbose" in p.stdout
