"""shared.cli.run: a person's mistake (StackError, a flag, the config file, a config override) ends as ONE stderr
line `error: <Type>: <message>` with exit 2, the traceback only with --verbose; a bug keeps its traceback, exit 1.
Runs a small entry point in a subprocess (no JAX: each run takes a fraction of a second)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shared import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ENTRY = '''
from absl import flags
from shared import cli
from shared.errors import CheckpointError

flags.DEFINE_enum("what", "ok", ["ok", "user", "bug"], "What main does.")

def main():
  what = cli.FLAGS.what
  if what == "user":
    raise CheckpointError("checkpoint /w/checkpoints/8 does not match the model (1 shape mismatches, 0 missing):\\n"
                          "  params/w: checkpoint (2, 3) vs model (3, 3)")
  if what == "bug":
    raise RuntimeError("a bug")
  print("batch_size", cli.FLAGS.config.trainer.batch_size)

if __name__ == "__main__":
  cli.define_flags(workdir_required=False)
  cli.run(main)
'''

CONFIG = '''
import ml_collections
from shared.errors import ConfigError

def get_config(arg=None):
  if arg not in (None, "small"):
    raise ConfigError(f"config arg {arg!r}: expected 'small' or nothing")
  return ml_collections.ConfigDict({"trainer": {"batch_size": 8}})
'''


@pytest.fixture
def entry(tmp_path):
  (tmp_path / "entry.py").write_text(ENTRY)
  (tmp_path / "cfg.py").write_text(CONFIG)

  def run(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, str(tmp_path / "entry.py"), *args], capture_output=True, text=True,
                          env=env, cwd=str(tmp_path), timeout=120)
  return run


def error_line(p) -> str:
  lines = [l for l in p.stderr.splitlines() if l.strip()]
  assert p.returncode == 2 and len(lines) == 1 and "Traceback" not in p.stderr, (p.returncode, p.stderr)
  assert lines[0].startswith("error: ")
  return lines[0]


def test_ok_and_override(entry):
  p = entry("--config", "cfg.py", "--config.trainer.batch_size=4")
  assert p.returncode == 0 and "batch_size 4" in p.stdout, p.stderr


@pytest.mark.parametrize("args, line", [
    ([], "error: FlagError: --config is required (--help lists the flags)"),
    (["--config", "nope.py"], "error: ConfigError: --config nope.py: no such file"),
    (["--config", "cfg.py:huge"],
     "error: ConfigError: --config cfg.py:huge: config arg 'huge': expected 'small' or nothing"),
    (["--config", "cfg.py", "--config.trainer.batch_sise=4"],
     "error: ConfigError: --config.trainer.batch_sise: the config has no key 'batch_sise' "
     "(did you mean 'batch_size'?)"),
    (["--config", "cfg.py", "--config.trianer.batch_size=4"],
     "error: ConfigError: --config.trianer.batch_size: the config has no key 'trianer' (did you mean 'trainer'?)"),
    (["--config", "cfg.py", "--config.trainer.batch_size=many"],
     "error: FlagError: --config.trainer.batch_size many: invalid literal for int() with base 10: 'many'"),
    (["--config", "cfg.py", "--what", "everything"],
     "error: FlagError: --what everything: value should be one of <ok|user|bug>"),
    (["--config", "cfg.py", "--no_such_flag"],
     "error: FlagError: Unknown command line flag 'no_such_flag' (--help lists the flags)"),
    (["--config", "cfg.py", "--what", "user"],
     "error: CheckpointError: checkpoint /w/checkpoints/8 does not match the model (1 shape mismatches, 0 missing): "
     "params/w: checkpoint (2, 3) vs model (3, 3)"),
])
def test_user_errors_are_one_line_exit_2(entry, args, line):
  assert error_line(entry(*args)) == line


def test_verbose_adds_the_traceback(entry):
  for args in (["--what", "user"], ["--config.trainer.batch_sise=4"]):
    p = entry("--config", "cfg.py", *args, "--verbose")
    assert p.returncode == 2 and "Traceback (most recent call last)" in p.stderr, p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("error: ")


def test_a_bug_keeps_its_traceback_and_exit_1(entry):
  p = entry("--config", "cfg.py", "--what", "bug")
  assert p.returncode == 1 and "Traceback (most recent call last)" in p.stderr and "RuntimeError: a bug" in p.stderr


def test_help_still_works(entry):
  p = entry("--help")
  assert p.returncode in (0, 1) and "--config" in p.stdout and "--[no]verbose" in p.stdout and "--what" in p.stdout


def test_one_line():
  assert cli.one_line("bad shapes:\n  a: 1\n  b: 2\n") == "bad shapes: a: 1; b: 2"
  assert cli.one_line("head:\n\nTraceback (most recent call last):\n  File x\nValueError: v") == "head: ValueError: v"


def test_make_dir(tmp_path):
  from shared.errors import ConfigError
  assert cli.make_dir(str(tmp_path / "a" / "b")) == str(tmp_path / "a" / "b") and (tmp_path / "a" / "b").is_dir()
  (tmp_path / "f").write_text("x")
  with pytest.raises(ConfigError, match=r"--workdir .*/f: exists and is not a directory"):
    cli.make_dir(str(tmp_path / "f"))
  with pytest.raises(ConfigError, match=r"--out .*/f/sub: cannot create the directory"):
    cli.make_dir(str(tmp_path / "f" / "sub"), "--out")


def test_write_eval_names_its_file(tmp_path, capsys):
  import json
  a = cli.write_eval(str(tmp_path), 7, {"m": 1.5}, split="test")
  b = cli.write_eval(str(tmp_path), 7, {"m": 2.5}, name="oracle_seed1", split="test")
  assert a.endswith("eval/7.json") and b.endswith("eval/7_oracle_seed1.json")
  assert json.load(open(a))["m"] == 1.5 and json.load(open(b)) == {"step": 7, "split": "test", "m": 2.5}
  assert capsys.readouterr().out.splitlines()[-1] == json.dumps({"step": 7, "split": "test", "m": 2.5})
  with pytest.raises(ValueError, match="name"):
    cli.write_eval(str(tmp_path), 7, {}, name="../x")
