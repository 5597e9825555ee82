"""Damaged weight files are named, not reshape errors: truncated / corrupt safetensors, missing shards,
bad index or config JSON -> CheckpointError naming the file (and shard / key); the CLI turns them into one
line `error: CheckpointError: ...` with exit code 2 (the traceback only with --verbose)."""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

from shared.errors import CheckpointError
from shared.weights import io, load_pretrained
from shared.weights.__main__ import main as cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPECS = [(f"layer.{i}.weight", (4, 3), np.float32, lambda i=i: np.full((4, 3), i, np.float32)) for i in range(4)]


def _file(tmp_path, name="w.safetensors") -> tuple[str, bytes, int]:
  """A small valid safetensors file -> (path, its bytes, header length)."""
  path = str(tmp_path / name)
  io.write_safetensors(path, SPECS)
  raw = open(path, "rb").read()
  return path, raw, struct.unpack("<Q", raw[:8])[0]


def _write(path, data: bytes) -> str:
  with open(path, "wb") as f:
    f.write(data)
  return str(path)


def test_valid_file_still_reads(tmp_path):
  path, _, _ = _file(tmp_path)
  r = io.SafetensorsReader(path)
  assert r.keys() == [k for k, *_ in SPECS]
  np.testing.assert_array_equal(r.get("layer.2.weight"), np.full((4, 3), 2, np.float32))


@pytest.mark.parametrize("cut,what", [(5, "8-byte header length field"), (40, "header length field says"),
                                      (-10, "header says")])
def test_truncated_file_names_it(tmp_path, cut, what):
  """Cut in the length field, in the header JSON, in the data: each names the file, no reshape error."""
  _, raw, _ = _file(tmp_path)
  path = _write(tmp_path / "cut.safetensors", raw[:cut])
  with pytest.raises(CheckpointError, match="truncated") as e:
    io.SafetensorsReader(path)
  assert path in str(e.value) and what in str(e.value)
  if cut < 0:
    assert "'layer.3.weight'" in str(e.value)  # the tensor that lies past the end


def test_corrupt_header_names_file(tmp_path):
  _, raw, n = _file(tmp_path)
  path = _write(tmp_path / "bad.safetensors", raw[:8] + b"{oops" + raw[13:])
  with pytest.raises(CheckpointError, match="header is not valid JSON") as e:
    io.SafetensorsReader(path)
  assert path in str(e.value)


def _with_header(tmp_path, edit) -> str:
  _, raw, n = _file(tmp_path)
  header = json.loads(raw[8:8 + n])
  edit(header)
  hb = json.dumps(header).encode()
  hb += b" " * (-len(hb) % 8)
  return _write(tmp_path / "edited.safetensors", struct.pack("<Q", len(hb)) + hb + raw[8 + n:])


@pytest.mark.parametrize("edit,what", [
    (lambda h: h["layer.1.weight"].update(shape=[5, 3]), r"'layer\.1\.weight': F32 \(5, 3\) is 60 bytes"),
    (lambda h: h["layer.1.weight"].update(dtype="Q9"), r"'layer\.1\.weight': unsupported dtype 'Q9'"),
    (lambda h: h["layer.1.weight"].update(data_offsets=[40, 88]), "overlap"),
    (lambda h: h["layer.1.weight"].update(data_offsets=[96, 48]), r"'layer\.1\.weight': data_offsets"),
    (lambda h: h["layer.1.weight"].pop("shape"), r"'layer\.1\.weight': header entry"),
])
def test_inconsistent_header_names_file_and_key(tmp_path, edit, what):
  path = _with_header(tmp_path, edit)
  with pytest.raises(CheckpointError, match=what) as e:
    io.SafetensorsReader(path)
  assert path in str(e.value)


def test_missing_file_and_bad_json(tmp_path):
  with pytest.raises(CheckpointError, match="not found") as e:
    io.SafetensorsReader(str(tmp_path / "nope.safetensors"))
  assert "nope.safetensors" in str(e.value)
  with pytest.raises(CheckpointError, match=r"config\.json not found"):
    io.read_json(str(tmp_path / "config.json"))
  _write(tmp_path / "config.json", b'{"model_type": ')
  with pytest.raises(CheckpointError, match=r"config\.json is not valid JSON"):
    io.read_json(str(tmp_path / "config.json"))
  _write(tmp_path / "config.json", b'["a list"]')
  with pytest.raises(CheckpointError, match=r"config\.json is not a JSON object"):
    io.read_json(str(tmp_path / "config.json"))


def test_missing_shards_listed(tmp_path):
  io.write_checkpoint(str(tmp_path), SPECS, max_shard_size="40B")
  assert len(io.SafetensorsReader(str(tmp_path)).keys()) == 4
  for name in ("model-00002-of-00004.safetensors", "model-00004-of-00004.safetensors"):
    os.remove(tmp_path / name)
  with pytest.raises(CheckpointError) as e:
    io.SafetensorsReader(str(tmp_path))
  msg = str(e.value)
  assert io.INDEX in msg and "model-00002-of-00004.safetensors" in msg and "model-00004-of-00004.safetensors" in msg
  assert "model-00001-of-00004.safetensors" not in msg


def test_bad_index_named(tmp_path):
  io.write_checkpoint(str(tmp_path), SPECS, max_shard_size="40B")
  _write(tmp_path / io.INDEX, b'{"weight_map": {"layer.0.weight": ')
  with pytest.raises(CheckpointError, match=r"model\.safetensors\.index\.json is not valid JSON"):
    io.SafetensorsReader(str(tmp_path))
  _write(tmp_path / io.INDEX, json.dumps({"metadata": {}}).encode())
  with pytest.raises(CheckpointError, match=r"index\.json: \"weight_map\" must be an object"):
    io.SafetensorsReader(str(tmp_path))
  # a key the index puts in a shard that does not hold it
  _write(tmp_path / io.INDEX, json.dumps({"weight_map": {"layer.0.weight": "model-00001-of-00004.safetensors",
                                                         "layer.9.weight": "model-00001-of-00004.safetensors"}}).encode())
  with pytest.raises(CheckpointError, match=r"model-00001-of-00004\.safetensors lacks 1 key.*'layer\.9\.weight'"):
    io.SafetensorsReader(str(tmp_path))


def test_file_cut_after_header_check_named_on_read(tmp_path):
  path, raw, _ = _file(tmp_path)
  r = io.SafetensorsReader(path)
  _write(path, raw[:-10])
  with pytest.raises(CheckpointError, match=r"truncated: tensor 'layer\.3\.weight'") as e:
    r.get("layer.3.weight")
  assert path in str(e.value)


# --- through load_pretrained and the CLI (a real tiny HF checkpoint) ---

@pytest.fixture(scope="module")
def truncated_dir(hf_dirs, tmp_path_factory):
  _, d = hf_dirs["qwen3_qknorm_untied"]
  out = tmp_path_factory.mktemp("truncated")
  shutil.copy(os.path.join(d, "config.json"), out / "config.json")
  raw = open(os.path.join(d, io.SINGLE), "rb").read()
  _write(out / io.SINGLE, raw[:len(raw) // 2])
  return str(out)


def test_load_pretrained_names_truncated_file(truncated_dir):
  with pytest.raises(CheckpointError, match="truncated") as e:
    load_pretrained(truncated_dir)
  assert os.path.join(truncated_dir, io.SINGLE) in str(e.value)


def test_load_pretrained_names_missing_shard(hf_dirs, tmp_path):
  from shared.weights import save_pretrained
  _, d = hf_dirs["qwen3_qknorm_untied"]
  module, params = load_pretrained(d)
  save_pretrained(module, params, str(tmp_path), max_shard_size="40KB")
  shards = sorted(set(json.load(open(tmp_path / io.INDEX))["weight_map"].values()))
  os.remove(tmp_path / shards[1])
  with pytest.raises(CheckpointError, match=shards[1]) as e:
    load_pretrained(str(tmp_path))
  assert io.INDEX in str(e.value)


def _cli_subprocess(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, "-m", "shared.weights", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def test_cli_one_line_exit_2_and_verbose_traceback(truncated_dir):
  r = _cli_subprocess("inspect", truncated_dir)
  assert r.returncode == 2, r.stderr
  lines = [l for l in r.stderr.splitlines() if l.strip()]
  assert len(lines) == 1, r.stderr
  assert lines[0].startswith("error: CheckpointError: safetensors file ") and "truncated" in lines[0]
  assert os.path.join(truncated_dir, io.SINGLE) in lines[0]
  assert "Traceback" not in r.stderr and r.stdout == ""
  r = _cli_subprocess("inspect", truncated_dir, "--verbose")
  assert r.returncode == 2
  assert "Traceback (most recent call last)" in r.stderr
  assert r.stderr.strip().splitlines()[-1] == lines[0]


def test_cli_user_errors_in_process(hf_dirs, tmp_path, capsys):
  def one_line(argv):
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: CheckpointError: "), err
    return err.strip()

  assert str(tmp_path / "absent") in one_line(["inspect", str(tmp_path / "absent")])
  assert str(tmp_path / "absent") in one_line(["import", str(tmp_path / "absent"), str(tmp_path / "o")])
  (tmp_path / "alien").mkdir()
  _write(tmp_path / "alien" / "config.json", b'{"model_type": "no_such_family"}')
  err = one_line(["inspect", str(tmp_path / "alien")])
  assert "model_type 'no_such_family'" in err and "is not supported" in err
  _write(tmp_path / "alien" / "config.json", b'{"model_type": ')
  assert "config.json is not valid JSON" in one_line(["import", str(tmp_path / "alien"), str(tmp_path / "o")])
  # export of a directory that is not the output of `import` (no params/ checkpoint)
  (tmp_path / "ours").mkdir()
  shutil.copy(os.path.join(hf_dirs["qwen3_qknorm_untied"][1], "config.json"), tmp_path / "ours" / "config.json")
  err = one_line(["export", str(tmp_path / "ours"), str(tmp_path / "hf")])
  assert "has no params/ directory" in err and str(tmp_path / "ours") in err
  # --verbose / -v before or after the subcommand: the traceback, then the same line
  for argv in (["-v", "export", str(tmp_path / "ours"), str(tmp_path / "hf")],
               ["export", str(tmp_path / "ours"), str(tmp_path / "hf"), "--verbose"]):
    assert cli(argv) == 2
    verbose = capsys.readouterr().err
    assert "Traceback (most recent call last)" in verbose and verbose.strip().splitlines()[-1] == err


@pytest.mark.parametrize("argv", [["import", "a", "b", "--dtype", "nope"], ["export", "a", "b", "--max-shard-size", "x"],
                                  ["inspect"], ["frobnicate", "a"]])
def test_cli_bad_arguments_exit_2(argv, capsys):
  with pytest.raises(SystemExit) as e:
    cli(argv)
  assert e.value.code == 2
  assert "usage:" in capsys.readouterr().err
