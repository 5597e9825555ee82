"""Prepared UniTalking latents on disk: ArrayRecord shards + index.json, and the grain source training reads.

Written by `python -m unitalking_jax.prepare` (unitalking_jax/prepare.py); read when `data.latents=DIR`:

  DIR/plan.json                         what the run covers: layout, root, split, clip count, clips per shard,
                                        shard names, config hash (a rerun with another plan is refused)
  DIR/shard-KKKKK-of-NNNNN.array_record one record per encoded clip (clips [K c, (K+1) c) of the listing, bad
                                        ones left out), written to a .tmp file and renamed when complete
  DIR/shard-KKKKK-of-NNNNN.json         written after the rename: records, names, bytes, sha256, skipped clips
                                        (kind, file, message), latent sums; a shard is finished when both
                                        files exist and the sizes agree (a rerun skips it)
  DIR/index.json                        written once every shard is finished: shard list, clip and record
                                        counts, skip counts per kind with the files, latent statistics
                                        (per-channel mean / std, min, max), shapes, the codec identity and
                                        config hash

A record (msgpack through flax.serialization) holds one clip's training example, the arrays
unitalking_jax/data.py's `prepare` returns:
  video [t, h, w, Cv] f32, audio [Ta, Ca] f32, ref [Ta / r, r Ca] f32 (data.latent_layout: PCA t = T, Ta = 4 T,
  r = 4; Wan / mel VAEs t = 1 + (T - 1) / 4, Ta = ceil(1.25 T)), mouth_open [T] f32 (zeros off SynthCue),
  text [L] int32 (pinyin ids) | [n, E] f32 (UMT5: only the n real rows; the zero rows are restored on read),
  text_mask [L] bool, plus "name" (the clip's file or synthcue/<split>/<i>) and "index" (the ref's seed key).
`LatentSource(DIR, cfg)[i]` returns the dict data.collate batches: training from latents and on the fly yield the
same batches for the same clips (tests/unitalking/test_prepare.py).
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
from grain import sources as grain_sources

from shared.errors import ConfigError, DataError
from shared.fingerprint import file_sha256
from unitalking_jax.codecs import ref_tokens

FORMAT = "unitalking-latents/1"
INDEX, PLAN = "index.json", "plan.json"
STAT_KEYS = ("video", "audio", "ref")
MEL_PER_FRAME = 4   # = unitalking_jax.data.MEL_PER_FRAME (not imported: readers need no SynthCue)


# ------------------------------------------------------------------------------------------ config identity

def codec_config(cfg) -> dict:
  """The data-config fields that decide the latents (codec fit, crop, clip length, text kind); training from
  latents refuses a config that differs in any of them."""
  d = cfg.data
  keys = ("seed", "lexicon_size", "n_speakers", "n_test_speakers", "clauses", "frame_size", "face_crop",
          "frames", "pixel_factor", "mel_mean", "mel_std", "video_pca", "audio_pca", "pca_fit_samples",
          "video_whiten", "text", "text_len", "text_encoder_dtype", "video_codec", "audio_codec")
  # (the UMT5 / VAE dirs' paths may differ between the preparing and the training machines: they are in the
  # codec identity, with their files' sha256, not compared)
  out = {k: d.get(k) for k in keys}
  for k in ("video_codec", "audio_codec"):
    out[k] = out[k] or "pca"
  out["clauses"] = list(out["clauses"]) if out["clauses"] is not None else None
  if d.get("ref_len"):   # only when set: latents prepared before the key existed keep their hash
    out["ref_len"] = int(d.ref_len)
  return out


def config_hash(cfg) -> str:
  return hashlib.sha256(json.dumps(codec_config(cfg), sort_keys=True).encode()).hexdigest()[:16]


def dir_identity(path: str) -> dict:
  """A trained codec directory: its path and the sha256 of every file in it (configs and weights)."""
  files = sorted(f for f in os.listdir(path) if os.path.isfile(os.path.join(path, f)))
  return {"path": os.path.abspath(path), "files": {f: file_sha256(os.path.join(path, f)) for f in files}}


def ref_patch(cfg) -> int:
  """= unitalking_jax.data.ref_patch: audio latents per reference token (pca: 4; VAE: model.audio_patch)."""
  return MEL_PER_FRAME if (cfg.data.get("video_codec") or "pca") == "pca" else int(cfg.model.audio_patch)


def codec_identity(cfg, arrays: dict | None = None, dirs: tuple[str, str] | None = None) -> dict:
  """What encoded the latents: codec kinds and settings, and the sha256 of the fitted codec's arrays (PCA) or
  of the trained codecs' files (dirs: the Wan VAE directory, the mel VAE codec directory)."""
  d = cfg.data
  if (d.get("video_codec") or "pca") != "pca":
    if dirs is None:
      raise ConfigError("codec_identity of VAE codecs needs their directories")
    video = {"codec": "wan_vae", "spatial_stride": int(d.pixel_factor), "temporal_stride": 4,
             "channels": int(d.video_pca), **dir_identity(dirs[0])}
    audio = {"codec": "mel_vae", "mel": "mmaudio_16k", "latent_rate": 31.25, "channels": int(d.audio_pca),
             **dir_identity(dirs[1])}
  else:
    video = {"codec": "pixel+pca", "pixel_factor": int(d.pixel_factor), "channels": int(d.video_pca),
             "whiten": bool(d.get("video_whiten", False))}
    audio = {"codec": "mel+pca", "mel": "audioldm", "mel_mean": float(d.mel_mean),
             "mel_std": float(d.mel_std), "channels": int(d.audio_pca)}
  ident = {"video": video, "audio": audio,
           "text": ({"codec": "pinyin", "length": int(d.text_len)} if d.text == "pinyin" else
                    {"codec": "umt5", "length": int(d.text_len), "tokenizer": d.text_tokenizer,
                     "encoder": d.text_encoder, "dtype": d.get("text_encoder_dtype", "float32")}),
           "ref": {"codec": f"own audio latents, {ref_patch(cfg)}-frame chunks permuted", "patch": ref_patch(cfg),
                   "seed": int(cfg.trainer.seed)},
           "config_hash": config_hash(cfg)}
  if arrays is not None:
    h = hashlib.sha256()
    for k in sorted(arrays):
      h.update(k.encode())
      h.update(np.ascontiguousarray(arrays[k]).tobytes())
    ident["arrays_sha256"] = h.hexdigest()
  return ident


# ------------------------------------------------------------------------------------------ records

def encode_record(example: dict, name: str, index: int) -> bytes:
  """One prepared example (data.prepare's dict) -> record bytes. UMT5 features keep only their real rows."""
  from flax import serialization
  rec = {k: np.asarray(example[k]) for k in ("video", "audio", "ref", "mouth_open", "text_mask")}
  text = np.asarray(example["text"])
  if text.ndim == 2:    # UMT5 features: rows past the mask are zeros by construction
    n = int(np.asarray(example["text_mask"]).sum())
    if np.any(text[n:]):
      raise DataError(f"UMT5 features of {name} have non-zero rows past the mask ({n} real rows)", key="text")
    text = text[:n]
  rec["text"] = text
  rec["name"], rec["index"] = str(name), int(index)
  return serialization.msgpack_serialize(rec)


def decode_record(data: bytes, text_len: int) -> dict:
  """Record bytes -> the example dict (UMT5 text zero-padded back to [text_len, E])."""
  from flax import serialization
  rec = serialization.msgpack_restore(data)
  text = np.asarray(rec["text"])
  if text.ndim == 2 and text.shape[0] < text_len:
    text = np.concatenate([text, np.zeros((text_len - text.shape[0], text.shape[1]), text.dtype)])
  rec["text"] = text
  return rec


def own_ref(audio: np.ndarray, seed: int, index: int, patch: int = MEL_PER_FRAME, length: int = 0) -> np.ndarray:
  """data.prepare's reference: the clip's audio latents [Ta, Ca] in `patch`-frame chunks (ref_patch), permuted
  by default_rng([seed, index]), truncated / zero-padded to `length` tokens when > 0 (codecs.ref_tokens)."""
  perm = np.random.default_rng([seed, int(index)]).permutation(audio.shape[0] // patch)
  return ref_tokens(audio, patch, perm, length)


# ------------------------------------------------------------------------------------------ statistics

class Stats:
  """Per-channel running sums of the latents (float64): count, sum, sum of squares, min, max per key."""

  def __init__(self, state: dict | None = None):
    self.state = {k: {kk: (np.asarray(vv, np.float64) if isinstance(vv, list) else vv) for kk, vv in v.items()}
                  for k, v in (state or {}).items()}

  def add(self, example: dict):
    for k in STAT_KEYS:
      x = np.asarray(example[k], np.float64).reshape(-1, np.shape(example[k])[-1])
      self._merge(k, {"n": x.shape[0], "sum": x.sum(0), "sq": (x * x).sum(0), "min": x.min(0), "max": x.max(0)})

  def _merge(self, k: str, s: dict):
    if k not in self.state:
      self.state[k] = {kk: (np.array(v, np.float64) if kk != "n" else int(v)) for kk, v in s.items()}
      return
    a = self.state[k]
    a["n"] += int(s["n"])
    a["sum"], a["sq"] = a["sum"] + s["sum"], a["sq"] + s["sq"]
    a["min"], a["max"] = np.minimum(a["min"], s["min"]), np.maximum(a["max"], s["max"])

  def merge(self, other: "Stats") -> "Stats":
    for k, s in other.state.items():
      self._merge(k, s)
    return self

  def to_json(self) -> dict:
    return {k: {kk: (v.tolist() if isinstance(v, np.ndarray) else v) for kk, v in s.items()}
            for k, s in self.state.items()}

  def summary(self) -> dict:
    """Per key: channels, values counted, per-channel mean / std / min / max, and over all channels."""
    out = {}
    for k, s in self.state.items():
      n = max(int(s["n"]), 1)
      mean = s["sum"] / n
      std = np.sqrt(np.maximum(s["sq"] / n - mean ** 2, 0.0))
      all_mean = s["sum"].sum() / (n * mean.size)
      all_std = float(np.sqrt(max(s["sq"].sum() / (n * mean.size) - all_mean ** 2, 0.0)))
      out[k] = {"channels": int(mean.size), "rows": int(s["n"]), "mean": mean.round(6).tolist(),
                "std": std.round(6).tolist(), "min": float(s["min"].min()), "max": float(s["max"].max()),
                "mean_all": round(float(all_mean), 6), "std_all": round(all_std, 6)}
    return out


# ------------------------------------------------------------------------------------------ files

def shard_name(k: int, n: int) -> str:
  return f"shard-{k:05d}-of-{n:05d}"


def write_json(path: str, obj: dict):
  """Atomic: a .tmp file renamed over `path`."""
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=1, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)


def read_json(path: str) -> dict:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise DataError(f"cannot read: {e}", path=path) from e


def write_shard(path: str, records: list[bytes]) -> dict:
  """Writes the records as one ArrayRecord file (random access: group_size 1) via a .tmp file renamed when
  complete. Returns {"bytes", "sha256"} of the file."""
  from array_record.python.array_record_module import ArrayRecordWriter
  tmp = path + ".tmp"
  w = ArrayRecordWriter(tmp, "group_size:1")
  for r in records:
    w.write(r)
  w.close()
  os.replace(tmp, path)
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return {"bytes": os.path.getsize(path), "sha256": h.hexdigest()}


def shard_done(out: str, name: str) -> dict | None:
  """The shard's sidecar when the shard is finished (both files, sizes agree), else None."""
  side, data = os.path.join(out, name + ".json"), os.path.join(out, name + ".array_record")
  if not (os.path.isfile(side) and os.path.isfile(data)):
    return None
  try:
    meta = read_json(side)
  except DataError:
    return None
  return meta if meta.get("bytes") == os.path.getsize(data) else None


def read_index(path: str) -> dict:
  """DIR/index.json (path = DIR or the file). ConfigError naming the path when prepare has not finished."""
  f = path if path.endswith(".json") else os.path.join(path, INDEX)
  if not os.path.isfile(f):
    plan = os.path.join(os.path.dirname(f), PLAN)
    why = ("prepare has not finished every shard (rerun `python -m unitalking_jax.prepare` with the same "
           "arguments: finished shards are skipped)" if os.path.isfile(plan) else
           "no prepared latents there (`python -m unitalking_jax.prepare ... --out DIR` writes them)")
    raise ConfigError(f"data.latents={path}: {f} does not exist: {why}")
  index = read_json(f)
  if index.get("format") != FORMAT:
    raise ConfigError(f"data.latents={path}: {f} has format {index.get('format')!r}, expected {FORMAT!r}")
  return index


def check_index(index: dict, cfg, where: str):
  """ConfigError when the latents were made for another codec / data config than cfg."""
  want = codec_config(cfg)
  have = dict(index.get("codec_config", {}))
  for k in ("video_codec", "audio_codec"):   # indexes written before the codec switch: PCA
    have.setdefault(k, "pca")
  diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
  if diff:
    k = diff[0]
    raise ConfigError(f"data.latents={where}: prepared with data.{k}={have.get(k)!r}, the config has "
                      f"data.{k}={want.get(k)!r} (differing keys: {diff}); prepare again for this config")


# ------------------------------------------------------------------------------------------ reading

class LatentSource(grain_sources.RandomAccessDataSource):
  """grain random-access source over prepared shards: `src[i]` -> the example dict of record i (records in
  shard order; data.collate batches them). The reference tokens are recomputed from the audio latents when
  cfg.trainer.seed differs from the seed prepare used (data.prepare keys them on the training seed)."""

  def __init__(self, path: str, cfg):
    self.path = os.path.abspath(path)
    self.index = read_index(self.path)
    check_index(self.index, cfg, path)
    files = [os.path.join(self.path, s["file"]) for s in self.index["shards"] if s["records"] > 0]
    for f, s in zip(files, [s for s in self.index["shards"] if s["records"] > 0]):
      if not os.path.isfile(f) or os.path.getsize(f) != s["bytes"]:
        raise DataError(f"shard listed in {INDEX} is missing or has another size than recorded ({s['bytes']} "
                        "bytes)", path=f)
    if not files:
      raise DataError(f"no records: every clip was skipped ({self.index.get('skipped')})",
                      path=os.path.join(self.path, INDEX))
    self.text_len = int(cfg.data.text_len)
    self.seed = int(cfg.trainer.seed)
    self.patch = ref_patch(cfg)
    self.ref_len = int(cfg.data.get("ref_len", 0) or 0)
    self.reseed = self.seed != int(self.index["codec"]["ref"]["seed"])
    self._src = grain_sources.ArrayRecordDataSource(files)
    if len(self._src) != int(self.index["records"]):
      raise DataError(f"shards hold {len(self._src)} records, {INDEX} says {self.index['records']}",
                      path=os.path.join(self.path, INDEX))

  def __len__(self) -> int:
    return len(self._src)

  def __repr__(self) -> str:
    return f"LatentSource({self.path}, {len(self)} records)"

  def record(self, i: int) -> dict:
    """Record i with its name and index."""
    return decode_record(self._src[int(i)], self.text_len)

  def __getitem__(self, i: int) -> dict:
    rec = self.record(i)
    if self.reseed:
      rec["ref"] = own_ref(rec["audio"], self.seed, rec["index"], self.patch, self.ref_len)
    rec.pop("name")
    rec.pop("index")
    return rec
