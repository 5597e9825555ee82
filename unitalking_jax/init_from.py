"""Initialise UniTalking's video stream from a Wan2.2 (TI2V-5B-compatible) checkpoint.

  params, report = init_from_wan(model_config, params, "Wan2.2-TI2V-5B-Diffusers/transformer",
                                 audio="copy_video")
  params = apply_init(cfg, params)      # reads cfg.model.init.wan_path / cfg.model.init.audio

The checkpoint directory is either a diffusers `WanTransformer3DModel` directory or the original Wan layout
(config.json `model_type` t2v / ti2v / i2v, keys `blocks.{i}.self_attn.q.weight`, ...); both are read through
`shared.weights.load_pretrained` (original checkpoints whose keys carry ComfyUI's "model.diffusion_model."
prefix go through `wan_dit_family.load_wan_dit`). Before any tensor is read the checkpoint's config is compared
with `model_config.video` (CHECKED_KEYS); every mismatch is listed with both values in one CheckpointError.

Placement: the WanDiT tree maps onto ours by `unitalking_jax.model.wan_params` (patch_embedding ->
video_patch_embedding, condition_embedder -> video_condition_embedder, blocks -> blocks/video (stacked
[num_layers, ...]), proj_out / scale_shift_table -> video_head/*). Every other leaf is left as it was.

audio="copy_video": the audio twin takes the video value of every module whose leaves (same names) all have
the same shapes as the video module at the mirrored path (blocks/audio/X <-> blocks/video/X,
audio_Y/X <-> video_Y/X). With audio_ffn_dim == ffn_dim that is the whole block except the reference-audio
K/V (attn2/add_k_proj, add_v_proj, norm_added_k), the time and text embedders and the head's
scale_shift_table; the audio patch embedding, head proj_out and reference-audio (image_*) embedder keep their
random init. audio="random": the audio twin is not touched.

Leaves keep their dtype and (for jax Arrays) their sharding: the checkpoint is read in the params' dtype and
each tensor is put straight onto the existing leaf's sharding (one host copy of the checkpoint at a time,
freed leaf by leaf). Call this on concrete params, after the jitted init and only on a fresh start (never
inside jit: tensors read under a trace become constants of the program). `report` lists '/'-joined paths:
{"video": loaded, "copied": audio leaves copied from video, "random": audio leaves left as initialised,
"untouched": every other leaf}.
"""
from __future__ import annotations

import logging
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from shared.errors import CheckpointError, ConfigError
from shared.models.wan_dit import WanDiTConfig
from shared.weights import io, load_pretrained
from shared.weights import wan_dit_family as wan_fam
from unitalking_jax.model import wan_params

log = logging.getLogger(__name__)

AUDIO_MODES = ("random", "copy_video")
# WanDiTConfig fields that must agree between the checkpoint and model_config.video.
CHECKED_KEYS = ("patch_size", "num_attention_heads", "attention_head_dim", "num_layers", "ffn_dim", "text_dim",
                "freq_dim", "in_channels", "out_channels", "cross_attn_norm", "eps", "image_dim",
                "added_kv_proj_dim", "pos_embed_seq_len")
# how the original Wan config.json spells them (for error messages)
_ORIGINAL_NAMES = {**{ours: theirs for theirs, ours in wan_fam._ORIGINAL_KEYS.items()},
                   "attention_head_dim": "dim / num_heads"}


# ---- the checkpoint ----

def read_wan_config(wan_dir: str) -> tuple[WanDiTConfig, str]:
  """-> (the checkpoint's WanDiTConfig, layout "diffusers" | "original"); reads config.json only."""
  if not os.path.isdir(wan_dir):
    raise CheckpointError(f"Wan checkpoint {wan_dir!r} is not a directory (expected a diffusers "
                          "WanTransformer3DModel directory or an original Wan directory)")
  cfg = io.read_json(os.path.join(wan_dir, "config.json"))
  original = cfg.get("_class_name") == wan_fam.ORIGINAL_CLASS_NAME or "dim" in cfg
  if original:
    return wan_fam.config_from_original(cfg), "original"
  return wan_fam.config_from_diffusers(cfg), "diffusers"


def _same(a, b) -> bool:
  if isinstance(a, float) or isinstance(b, float):
    return a is not None and b is not None and math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
  return a == b


def check_config(ckpt: WanDiTConfig, video: WanDiTConfig, source: str = "", layout: str = "diffusers"):
  """Raises CheckpointError naming every CHECKED_KEYS field whose values differ (checkpoint vs model)."""
  bad = []
  for k in CHECKED_KEYS:
    theirs, ours = getattr(ckpt, k), getattr(video, k)
    if not _same(theirs, ours):
      alias = f" (config.json {_ORIGINAL_NAMES[k]!r})" if layout == "original" and k in _ORIGINAL_NAMES else ""
      bad.append(f"{k}{alias}: checkpoint {theirs!r} vs model {ours!r}")
  if bad:
    raise CheckpointError(f"Wan checkpoint {source}/config.json does not match the model's video stream "
                          f"(model config video settings): " + "; ".join(bad))


def _load(wan_dir: str, layout: str, dtype, shardings) -> dict:
  """-> WanDiT param tree (jax arrays; on `shardings` when given)."""
  cfg = io.read_json(os.path.join(wan_dir, "config.json"))
  prefixed = False
  if layout == "original":
    reader = io.SafetensorsReader(wan_dir, index_name=f"{wan_fam.WEIGHTS_STEM}.safetensors.index.json",
                                  single_name=f"{wan_fam.WEIGHTS_STEM}.safetensors")
    prefixed = any(k.startswith(wan_fam.ORIGINAL_PREFIX) for k in reader.keys())
    del reader
  if layout == "original" and (prefixed or cfg.get("model_type") not in wan_fam.ORIGINAL_FAMILY.model_types):
    _, params = wan_fam.load_wan_dit(wan_dir, dtype=dtype)  # prefixed keys / no model_type: its own reader
    if shardings is not None:
      flat_sh = traverse_util.flatten_dict(shardings)
      params = traverse_util.unflatten_dict({k: jax.device_put(v, flat_sh[k])
                                             for k, v in traverse_util.flatten_dict(params).items()})
    return params
  _, params = load_pretrained(wan_dir, dtype=dtype, shardings=shardings)
  return params


# ---- leaves ----

def _is_tracer(x) -> bool:
  return isinstance(x, jax.core.Tracer)


def _like(x, old, *, copy: bool = False):
  """x converted to old's kind (jax Array on old's sharding / tracer / numpy) and dtype."""
  if _is_tracer(old):
    return jnp.asarray(x, old.dtype)
  if isinstance(old, jax.Array):
    if x.dtype != old.dtype:
      x = x.astype(old.dtype)
    return jax.device_put(x, old.sharding, may_alias=False if copy else None)
  if isinstance(old, np.ndarray) or np.isscalar(old):
    return np.array(jax.device_get(x), dtype=old.dtype)
  raise CheckpointError(f"init_from_wan: param leaf of type {type(old).__name__} is not an array "
                        "(pass concrete params, not ShapeDtypeStructs)")


def _audio_to_video(path: tuple) -> tuple | None:
  """The video path mirroring an audio-twin path (None: not an audio leaf)."""
  if path[:2] == ("blocks", "audio"):
    return ("blocks", "video") + path[2:]
  if path[0].startswith("audio_"):
    return ("video_" + path[0][len("audio_"):],) + path[1:]
  return None


def _copy_plan(shapes: dict[tuple, tuple]) -> list[tuple]:
  """-> audio leaves to copy from video. A module (leaves sharing a parent) is copied only if the mirrored
  video module has the same leaf names with the same shapes."""
  groups: dict[tuple, dict[str, tuple]] = {}
  for p, s in shapes.items():
    groups.setdefault(p[:-1], {})[p[-1]] = s
  copy = []
  for parent, leaves in groups.items():
    vp = _audio_to_video(parent + ("",)) if parent else None
    if vp is None:
      continue
    video_leaves = groups.get(vp[:-1], {})
    if set(video_leaves) == set(leaves) and all(video_leaves[n] == leaves[n] for n in leaves):
      copy.extend(parent + (n,) for n in leaves)
  return sorted(copy)


# ---- entry points ----

def init_from_wan(model_config, params, wan_dir: str, *, audio: str = "random", donate: bool = False):
  """(UniTalkingConfig, params, checkpoint dir) -> (params with the Wan video stream, report).

  params: the plain or boxed (nn.with_logical_partitioning) "params" tree of UniTalking(model_config);
  leaves keep their dtype, sharding and boxing. audio: "random" | "copy_video" (module docstring).
  Memory: one host copy of the checkpoint (in the params' dtype, freed tensor by tensor as it goes to the
  devices, straight onto the leaves' shardings). donate=True deletes each replaced jax Array (the random
  video leaves after the load, each copied audio leaf as its copy lands), so after the call only one copy is
  live (peak during the load: params + the video stream); the input tree is unusable after."""
  if audio not in AUDIO_MODES:
    raise ConfigError(f"audio={audio!r}; expected one of {AUDIO_MODES}")
  ckpt_cfg, layout = read_wan_config(wan_dir)
  check_config(ckpt_cfg, model_config.video, wan_dir, layout)

  flat = traverse_util.flatten_dict(params)
  boxes = {k: v for k, v in flat.items() if isinstance(v, nn.meta.AxisMetadata)}
  values = {k: (v.unbox() if k in boxes else v) for k, v in flat.items()}
  # WanDiT path -> our path, derived from the model's own mapping
  paths = traverse_util.unflatten_dict({k: k for k in values})
  try:
    to_ours = traverse_util.flatten_dict(wan_params(paths))
  except KeyError as e:
    raise CheckpointError(f"init_from_wan: params have no video stream entry {e} (not a UniTalking tree)") from None
  video_leaves = {ours: values[ours] for ours in to_ours.values()}
  dts = {np.dtype(v.dtype) for v in video_leaves.values()}
  load_dtype = dts.pop() if len(dts) == 1 else np.dtype(np.float32)
  concrete = all(isinstance(v, jax.Array) and not _is_tracer(v) for v in video_leaves.values())
  shardings = (traverse_util.unflatten_dict({w: values[o].sharding for w, o in to_ours.items()})
               if concrete else None)

  loaded = traverse_util.flatten_dict(_load(wan_dir, layout, load_dtype, shardings))
  if set(loaded) != set(to_ours):
    odd = sorted("/".join(k) for k in set(loaded) ^ set(to_ours))
    raise CheckpointError(f"Wan checkpoint {wan_dir}: parameters {odd[:12]} are in only one of the checkpoint "
                          "and the model's video stream")
  bad = [f"{'/'.join(o)}: checkpoint {tuple(loaded[w].shape)} vs model {tuple(values[o].shape)}"
         for w, o in to_ours.items() if tuple(loaded[w].shape) != tuple(values[o].shape)]
  if bad:
    raise CheckpointError(f"Wan checkpoint {wan_dir}: shapes differ from the params: {bad[:12]}")

  new = dict(values)
  for w, o in to_ours.items():
    new[o] = _like(loaded.pop(w), values[o])
    if donate and isinstance(values[o], jax.Array) and not _is_tracer(values[o]) and new[o] is not values[o]:
      values[o].delete()

  shapes = {k: tuple(v.shape) for k, v in values.items()}
  copy = _copy_plan(shapes) if audio == "copy_video" else []
  copy_set = set(copy)
  keep = sorted(k for k in values if _audio_to_video(k) is not None and k not in copy_set)
  for a in copy:
    new[a] = _like(new[_audio_to_video(a)], values[a], copy=True)
    if donate and isinstance(values[a], jax.Array) and not _is_tracer(values[a]):
      values[a].delete()

  out = {k: (boxes[k].replace_boxed(v) if k in boxes else v) for k, v in new.items()}
  video_set, audio_set = set(to_ours.values()), copy_set | set(keep)
  j = "/".join
  report = {"video": sorted(j(k) for k in video_set), "copied": [j(k) for k in copy],
            "random": [j(k) for k in keep],
            "untouched": sorted(j(k) for k in values if k not in video_set and k not in audio_set)}
  log.info("init_from_wan %s (%s layout): %d video leaves loaded; audio=%s: %d leaves copied from video, "
           "%d kept random (%s)", wan_dir, layout, len(report["video"]), audio, len(copy), len(keep),
           ", ".join(report["random"]) if audio == "copy_video" else "all")
  return traverse_util.unflatten_dict(out), report


def apply_init(cfg, params, *, model_config=None, donate: bool = False):
  """Applies cfg.model.init {wan_path: "" (none) | DIR, audio: "random" | "copy_video"} to fresh params.

  model_config: the UniTalkingConfig (default: unitalking_jax.task.model_config(cfg)). No `init` section or
  an empty wan_path returns params unchanged. Call on a fresh start only (never after restoring)."""
  init = cfg.model.get("init", None) if hasattr(cfg.model, "get") else getattr(cfg.model, "init", None)
  if init is None:
    return params
  get = init.get if hasattr(init, "get") else (lambda k, d=None: getattr(init, k, d))
  audio, wan_path = get("audio", "random"), get("wan_path", "") or ""
  if audio not in AUDIO_MODES:
    raise ConfigError(f"config key model.init.audio is {audio!r}; expected one of {AUDIO_MODES}")
  if not isinstance(wan_path, str):
    raise ConfigError(f"config key model.init.wan_path is {wan_path!r}; expected a directory path or ''")
  if not wan_path:
    if audio == "copy_video":
      raise ConfigError("config key model.init.audio='copy_video' needs model.init.wan_path (a Wan checkpoint "
                        "directory); with no checkpoint use 'random'")
    return params
  wan_path = os.path.expanduser(wan_path)
  if not os.path.isdir(wan_path):
    raise ConfigError(f"config key model.init.wan_path={wan_path!r} is not a directory (expected a diffusers "
                      "WanTransformer3DModel directory or an original Wan directory)")
  if model_config is None:
    from unitalking_jax.task import model_config as make_config  # late: task imports this module
    model_config = make_config(cfg)
  params, _ = init_from_wan(model_config, params, wan_path, audio=audio, donate=donate)
  return params
