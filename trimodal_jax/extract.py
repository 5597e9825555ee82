"""`python -m trimodal_jax.extract (--workdir W [--step S] | --config CFG [--config.init.sign.path=SWIN] ...)
--modality sign --split train|validation|test --out FEAT [--limit N] [--dtype float16|float32]
[--process_index i --process_count n]`

Offline sign features: runs the configured sign encoder EXACTLY as the model does (TriModal._sign: one pooled
Video Swin clip of model.sign.clip_window frames per output frame, indices clamped to the clip; the frames
prepared as data.prepare does, data.sign_input, and normalised as the task does, task.normalise_sign) over each
SLT clip of the split (SynthCue `sign` mode, or How2Sign: data.source) and writes
  FEAT/<split>/<name>.npy    [T', Ds] (--dtype; T' = data.sign_steps(T): T at clip stride 1), <name> =
                             data.clip_name (the How2Sign clip's file stem, or the SynthCue index, 6 digits)
  FEAT/<split>/index.json    {"modality", "split", "source", "dim", "dtype", "count" (files present), "clips"
                             (in the split), "failed" (names), "encoder": {"family": "swin3d", "config" (the
                             model.sign section), "params_sha256" (of the encoder's weights as run), "init_path"
                             + "weights_sha256" (--config: the files of init.sign.path) | "workdir" + "step"}}
Training reads them with --config.data.sign_features=FEAT --config.model.precomputed='("sign",)' (data.py).

The encoder: --workdir W: the run's config and its checkpoint's params["sign_encoder"] (a run that trained or
loaded its sign encoder); --config CFG: model.sign of that config with init.sign (e.g. the ISLR Swin-T directory,
--config.init.sign.path=DIR); without a path the encoder is a fresh random init (seed --seed; warned). The
config's model.precomputed and data.sign_features are ignored here (the frames are read, the encoder built), so
a training config with them set extracts its own features.

Resumable: a clip whose file exists is skipped (files are written to a temporary name, then renamed); a rerun
against an index.json of another encoder (params sha256, config, width) or dtype is a ConfigError. One clip per
encoder call, padded to the smallest data.frame_buckets entry holding it (larger clips: a multiple of the
smallest bucket; padding never enters a real frame's clip). A clip that cannot be read is logged with its name,
counted, listed in index.json["failed"] and skipped; everything else stops the run. A progress line (done / total,
rate, ETA) every --log_every seconds; the summary is ONE JSON line on stdout. --process_index / --process_count
split the clips (clip i goes to process i mod n; each process writes its own files and refreshes index.json).
Memory: one clip = T' Swin clips in one call (600 frames x 16 = 9,600 224 x 224 frames at paper size).
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time

import numpy as np
from absl import flags
from ml_collections import config_flags

from shared import cli
from shared.errors import ConfigError
from shared.fingerprint import file_sha256
from trimodal_jax import data as data_lib

log = logging.getLogger(__name__)
MODALITIES = ("sign",)          # the data pipeline reads only sign features (data.sign_features)
DTYPES = ("float16", "float32")


# ----------------------------------------------------------------------------- the encoder

def frames_config(cfg):
  """cfg resolved, with data.sign_features "" (the sources render / decode the frames) and the data keys the
  frames need checked (ConfigError naming them)."""
  out = cfg.copy_and_resolve_references()
  if "sign_features" in out.data:
    out.data.sign_features = ""
  d = out.data
  if d.source not in data_lib.SOURCES:
    raise ConfigError(f"data.source={d.source!r}: expected one of {data_lib.SOURCES}")
  if d.source != "synthcue":
    from trimodal_jax import real_data
    real_data.check(d)
  if int(d.sign_frame_size) % int(d.sign_size):
    raise ConfigError(f"data.sign_frame_size={d.sign_frame_size} is not a multiple of data.sign_size={d.sign_size}")
  if not len(d.frame_buckets):
    raise ConfigError("data.frame_buckets is empty: the clips are padded to its entries")
  return out


def sign_model(cfg):
  """TriModal of cfg.model with its sign encoder built (model.precomputed less "sign")."""
  from shared import config as config_lib
  from trimodal_jax.model import TriModal, TriModalConfig
  c = config_lib.from_section(TriModalConfig, cfg.model, "model")
  return TriModal(c.replace(precomputed=tuple(m for m in c.precomputed if m != "sign")))


def params_sha256(tree) -> str:
  """sha256 over the leaves of a params tree (sorted '/'-paths, dtype, shape, bytes)."""
  from flax import traverse_util
  h = hashlib.sha256()
  for k, v in sorted(traverse_util.flatten_dict(tree).items()):
    a = np.ascontiguousarray(np.asarray(v))
    h.update(f"{'/'.join(k)}|{a.dtype}|{a.shape}|".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def weights_sha256(path: str) -> dict:
  """{file name: sha256} of a weights path: the file itself, or a directory's *.safetensors / *.json files."""
  if os.path.isfile(path):
    return {os.path.basename(path): file_sha256(path)}
  names = sorted(n for n in os.listdir(path) if n.endswith((".safetensors", ".json")))
  return {n: file_sha256(os.path.join(path, n)) for n in names if os.path.isfile(os.path.join(path, n))}


def encoder_from_config(cfg, seed: int = 0) -> tuple[dict, dict]:
  """-> (params {"sign_encoder": ...}, identity): model.sign initialised (seed), then init.sign applied."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from shared.weights.init import apply_init_entries
  from trimodal_jax.model import TriModal
  model = sign_model(cfg)
  c, s = model.config.sign, int(cfg.data.sign_size)
  dummy = jnp.zeros((1, int(c.clip_window), s, s, 3), jnp.float32)
  init = lambda r: model.init({"params": r}, dummy, jnp.asarray([c.clip_window], jnp.int32), False,  # noqa: E731
                              method=TriModal._sign)["params"]
  entry = cfg.init.sign if "init" in cfg and "sign" in cfg.init else None
  path = os.path.expanduser(str(entry.get("path", "") or "")) if entry is not None else ""
  identity = {"init_path": path or None}
  rng = jax.random.PRNGKey(int(seed))
  if path and bool(entry.get("strict", True)) and not bool(entry.get("allow_missing", False)):
    # a strict entry replaces every leaf (or raises): zeros of the init's shapes, no init compiled
    params = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), nn.meta.unbox(jax.eval_shape(init, rng)))
  else:
    params = nn.meta.unbox(jax.jit(init)(rng))
  if path:
    params, _ = apply_init_entries({"sign": entry}, params, config_key="init", variables=False)
    identity["weights_sha256"] = weights_sha256(path)
  else:
    log.warning("init.sign.path is empty: the features come from a FRESH RANDOM sign encoder (seed %d)", seed)
    identity["seed"] = int(seed)
  return jax.tree.map(np.asarray, params), identity


def encoder_from_workdir(workdir: str, step: int | None = None):
  """-> (the run's config, params {"sign_encoder": ...}, identity) from a training workdir's checkpoint."""
  import jax

  from shared.checkpoint import restore
  r = restore(workdir, step)
  if "sign_encoder" not in r.params:
    raise ConfigError(f"--workdir {workdir}: the checkpoint (step {r.step}) has no sign_encoder (trained with "
                      "precomputed sign features?): use --config with init.sign.path")
  params = {"sign_encoder": jax.tree.map(np.asarray, r.params["sign_encoder"])}
  return r.config, params, {"workdir": os.path.abspath(workdir), "step": int(r.step)}


@functools.lru_cache(maxsize=4)
def make_encode(model):
  """jitted (params, frames [1, T, s, s, 3] uint8, lengths [1]) -> (features [1, T', Ds] float32, lengths [1]);
  one per model (a rerun in the same process compiles nothing new)."""
  import jax
  import jax.numpy as jnp

  from trimodal_jax.model import TriModal
  from trimodal_jax.task import normalise_sign

  @jax.jit
  def encode(params, frames, lengths):
    f, n = model.apply({"params": params}, normalise_sign(frames), lengths, False, method=TriModal._sign)
    return f.astype(jnp.float32), n

  return encode


def padded_length(t: int, buckets) -> int:
  """The smallest bucket >= t, else t rounded up to a multiple of the smallest bucket (few compiles)."""
  fits = [int(b) for b in buckets if int(b) >= t]
  if fits:
    return min(fits)
  m = int(min(buckets))
  return -(-t // m) * m


# ----------------------------------------------------------------------------- the index

def identity_of(index: dict) -> tuple:
  e = index.get("encoder", {})
  return (index.get("modality"), index.get("dim"), index.get("dtype"), e.get("params_sha256"),
          json.dumps(e.get("config"), sort_keys=True))


def write_json(path: str, obj: dict):
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1, sort_keys=True)
  os.replace(tmp, path)


def _present(directory: str) -> set:
  return {n[:-4] for n in os.listdir(directory) if n.endswith(".npy")}


def update_index(directory: str, header: dict, failed: dict) -> dict:
  """Writes directory/index.json: header + count (files present) + failed (this run's, and earlier runs' still
  without a file)."""
  path = os.path.join(directory, data_lib.FEATURE_INDEX)
  present = _present(directory)
  old = {}
  if os.path.isfile(path):
    with open(path) as f:
      old = json.load(f)
  names = sorted((set(old.get("failed", [])) | set(failed)) - present)
  index = {**header, "count": len(present), "failed": names}
  write_json(path, index)
  return index


# ----------------------------------------------------------------------------- extraction

def _eta(seconds: float) -> str:
  s = int(max(seconds, 0))
  return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s"


def extract(cfg, params: dict, identity: dict, split: str, out: str, *, modality: str = "sign",
            limit: int | None = None, dtype: str = "float16", process_index: int = 0, process_count: int = 1,
            log_every: float = 30.0) -> dict:
  """Writes out/<split>/<name>.npy for this process's clips + out/<split>/index.json (module docstring) ->
  the summary {"split", "out", "clips", "written", "skipped", "failed", "failed_clips", "seconds"}."""
  import jax
  if modality not in MODALITIES:
    raise ConfigError(f"--modality {modality!r}: only {MODALITIES} features are read by the data pipeline")
  if dtype not in DTYPES:
    raise ConfigError(f"--dtype {dtype!r}: expected one of {DTYPES}")
  if split not in ("train", "validation", "test"):
    raise ConfigError(f"--split {split!r}: expected train, validation or test")
  if not (process_count >= 1 and 0 <= process_index < process_count):
    raise ConfigError(f"--process_index {process_index} / --process_count {process_count}: expected 0 <= i < n")
  if limit is not None and int(limit) < 0:
    raise ConfigError(f"--limit {limit}: expected >= 0")
  cfg = frames_config(cfg)
  model = sign_model(cfg)
  dim = int(model.config.widths()["sign"])
  directory = cli.make_dir(os.path.join(out, split), "--out")
  header = {"modality": modality, "split": split, "source": str(cfg.data.source), "dim": dim, "dtype": dtype,
            "fps": float(cfg.data.fps), "layout": "<name>.npy [T', dim] (T' = sign feature frames of a T-frame clip)",
            "encoder": {"family": "swin3d", "config": cfg.model.sign.to_dict(),
                        "params_sha256": params_sha256(params), **identity}}
  header = json.loads(json.dumps(header))       # tuples -> lists, as read back
  path = os.path.join(directory, data_lib.FEATURE_INDEX)
  if os.path.isfile(path):
    with open(path) as f:
      old = json.load(f)
    if identity_of(old) != identity_of(header):
      raise ConfigError(f"--out {out}: {path} holds {old.get('dtype')} features of width {old.get('dim')} from "
                        f"another encoder or setting (params sha256 {old.get('encoder', {}).get('params_sha256')}, "
                        f"this run {header['encoder']['params_sha256']}, dtype {dtype}): use another --out")

  src = data_lib.sign_source(cfg.data, split)
  n_all = int(getattr(src, "n_clips", len(src)))
  n = n_all if limit is None else min(n_all, int(limit))
  mine = [i for i in range(n) if i % process_count == process_index]
  header["clips"] = n_all
  update_index(directory, header, {})
  encode = make_encode(model)
  params = jax.device_put({"sign_encoder": params["sign_encoder"]})
  size, buckets = int(cfg.data.sign_size), tuple(cfg.data.frame_buckets)
  np_dtype = np.dtype(dtype)
  written = skipped = 0
  failed: dict[str, str] = {}
  start = last = time.time()
  for k, i in enumerate(mine):
    name = data_lib.clip_name(src, i)
    target = os.path.join(directory, name + ".npy")
    if os.path.isfile(target):
      skipped += 1
    else:
      try:
        frames = data_lib.sign_input(src[i], size)
      except Exception as e:     # an unreadable clip: named, counted, skipped (bugs below still stop the run)
        failed[name] = f"{type(e).__name__}: {cli.one_line(str(e))}"
        log.warning("clip %s (index %d) failed: %s", name, i, failed[name])
      else:
        t = int(frames.shape[0])
        x = np.zeros((1, padded_length(t, buckets)) + frames.shape[1:], np.uint8)
        x[0, :t] = frames
        f, steps = encode(params, x, np.asarray([t], np.int32))
        steps = int(np.asarray(steps)[0])
        feats = np.asarray(f)[0, :steps]
        if not np.isfinite(feats.astype(np_dtype)).all():
          raise ConfigError(f"clip {name}: the encoder's features are not finite"
                            + (" in float16 (max |x| {:.3g}): use --dtype float32".format(np.abs(feats).max())
                               if np.isfinite(feats).all() else " (check the weights / compute dtype)"))
        feats = feats.astype(np_dtype)
        tmp = f"{target}.tmp{os.getpid()}"
        with open(tmp, "wb") as fh:
          np.save(fh, feats, allow_pickle=False)
        os.replace(tmp, target)
        written += 1
    now = time.time()
    if now - last >= log_every or k + 1 == len(mine):
      last = now
      done = k + 1
      rate = written / max(now - start, 1e-9)
      left = len(mine) - done
      eta = _eta(left / rate) if rate > 0 else "?"
      log.info("extract %s %s: %d / %d clips (%.1f %%): %d written, %d skipped, %d failed; %.2f clips/s; ETA %s",
               modality, split, done, len(mine), 100.0 * done / max(len(mine), 1), written, skipped, len(failed),
               rate, eta)
  index = update_index(directory, header, failed)
  return {"split": split, "out": directory, "clips": len(mine), "written": written, "skipped": skipped,
          "failed": len(failed), "failed_clips": sorted(failed), "count": index["count"],
          "seconds": round(time.time() - start, 3)}


# ----------------------------------------------------------------------------- CLI

def define_flags():
  config_flags.DEFINE_config_file("config", None, "Config file (get_config(arg) -> ConfigDict); or --workdir.",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "A training workdir: its config and checkpoint's sign encoder.")
  flags.DEFINE_integer("step", None, "--workdir: the checkpoint step (default: the latest).")
  flags.DEFINE_enum("modality", "sign", list(MODALITIES), "Which encoder's features.")
  flags.DEFINE_enum("split", None, ["train", "validation", "test"], "The split whose SLT clips are encoded.")
  flags.DEFINE_string("out", None, "Feature directory FEAT (FEAT/<split>/ is written).")
  flags.DEFINE_integer("limit", None, "Only the first N clips of the split.")
  flags.DEFINE_enum("dtype", "float16", list(DTYPES), "Dtype of the written features.")
  flags.DEFINE_integer("process_index", 0, "This process's share: clips i with i mod process_count == it.")
  flags.DEFINE_integer("process_count", 1, "Number of extraction processes.")
  flags.DEFINE_integer("seed", 0, "--config without init.sign.path: the random encoder's seed.")
  flags.DEFINE_float("log_every", 30.0, "Seconds between progress lines.")
  flags.mark_flags_as_required(["split", "out"])


def main():
  f = cli.FLAGS
  has_config = f["config"].present
  if bool(f.workdir) == bool(has_config):
    raise ConfigError("give exactly one of --workdir (a training run) and --config (a config file)")
  if f.workdir:
    cfg, params, identity = encoder_from_workdir(f.workdir, f.step)
  else:
    cfg = f.config
    params, identity = encoder_from_config(cfg, f.seed)
  summary = extract(cfg, params, identity, f.split, f.out, modality=f.modality, limit=f.limit, dtype=f.dtype,
                    process_index=f.process_index, process_count=f.process_count, log_every=f.log_every)
  print(json.dumps(summary), flush=True)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
