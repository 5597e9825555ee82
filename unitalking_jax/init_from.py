"""UniTalking's own initialisation step: the audio twin copies the video stream (after a Wan checkpoint was
read into the video stream by the config's `init.video` entry, shared/weights/init.py, rename
unitalking_jax.model.WAN_VIDEO_RENAME).

  params, report = copy_video_to_audio(params)        # init_audio = "copy_video" (Task.post_init)

The audio twin takes the video value of every module whose leaves (same names) all have the same shapes as the
video module at the mirrored path (blocks/audio/X <-> blocks/video/X, audio_Y/X <-> video_Y/X). With
audio_ffn_dim == ffn_dim that is the whole block except the reference-audio K/V (attn2/add_k_proj, add_v_proj,
norm_added_k), the time and text embedders and the head's scale_shift_table; the audio patch embedding, head
proj_out and reference-audio (image_*) embedder keep their random init. init_audio = "random": nothing is copied.
Leaves keep their dtype, sharding and boxing. `report`: {"copied": [...], "random": [...]} ('/'-joined paths).
"""
from __future__ import annotations

import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from shared.errors import CheckpointError

log = logging.getLogger(__name__)

AUDIO_MODES = ("random", "copy_video")


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
  raise CheckpointError(f"copy_video_to_audio: param leaf of type {type(old).__name__} is not an array "
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


# ---- entry point ----

def copy_video_to_audio(params, *, donate: bool = False):
  """-> (params with the audio twin's same-shaped modules copied from the video stream, report)."""
  flat = traverse_util.flatten_dict(params)
  boxes = {k: v for k, v in flat.items() if isinstance(v, nn.meta.AxisMetadata)}
  values = {k: (v.unbox() if k in boxes else v) for k, v in flat.items()}
  copy = _copy_plan({k: tuple(v.shape) for k, v in values.items()})
  copy_set = set(copy)
  new = dict(values)
  for a in copy:
    new[a] = _like(values[_audio_to_video(a)], values[a], copy=True)
    if donate and isinstance(values[a], jax.Array) and not _is_tracer(values[a]):
      values[a].delete()
  keep = sorted(k for k in values if _audio_to_video(k) is not None and k not in copy_set)
  j = "/".join
  report = {"copied": [j(k) for k in copy], "random": [j(k) for k in keep]}
  log.info("init_audio=copy_video: %d audio leaves copied from the video stream, %d kept random (%s)",
           len(copy), len(keep), ", ".join(report["random"]))
  out = {k: (boxes[k].replace_boxed(v) if k in boxes else v) for k, v in new.items()}
  return traverse_util.unflatten_dict(out), report
