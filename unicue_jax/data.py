"""UniCUE data: a cued-speech clip -> face-cropped frames, OpenPose-style pose maps, MBart target tokens and the
AudioLDM log-mel, one fixed-size batch for every source and stage.

Sources (config `data.source`):
  synthcue  SynthCue `cued` mode (lips + a cueing hand: the lips alone confuse 7 consonant groups, the hand's
            8 shapes / 5 positions decide them; the hand leads the lips by a few frames); `test` = held-out
            speakers (cuers), `validation` = unseen clips of the training speakers.
  cued      the Chinese cued-speech CSV layout (labels/<dataset>_<split>.csv: dataset,rel_path,n_frames,
            token_ids,hand_recog_path,hand_position_path; mp4 + wav beside), read by
            `shared.data.layouts.cued_reader` with skip=True (bad clips dropped and counted). Pose comes from
            the hand_position_path .npy: SynthCue's [T, 20, 3] (frame units) or OpenPose's BODY_25 + face +
            left hand + right hand concatenated [T, 137, 3] (pixels). Token units: `data.units` (one token per
            line; characters of the transcripts, or toneless pinyin syllables with data.tokens="syllables").

Example (host side, numpy; `prepare`), with F = data.frames and S = data.image_size:
  video      [T, S, S, 3] uint8   the face + cueing-hand region of every frame (`crop_box`), resized to S x S
  pose_maps  [T, S, S, 3] uint8   OpenPose-style skeleton images of the same region (shared.data.pose:
                                  synthcue_to_openpose + pose_maps, drawn at S x S in the crop's coordinates)
  tokens     [N] int32            transcript ids (characters or syllables), without specials
  syllables  [T] int32            (part "syllables", SynthCue only: the stage-2 oracle, model.oracle_units) the
                                  true syllable of every frame: 0 = none, 1 + its pinyin id (shared/text/pinyin_vocab)
  mel        [M, 64] float32      the AudioLDM log-mel of the clip's audio (shared.data.audioldm_mel: loudness-
                                  normalised wav, 16 kHz, hop 160, natural log; not normalised), padded with
                                  silence / cut to M = F * mel_per_frame frames (4 at 25 fps)
Clips longer than F frames (or with more tokens than the largest label bucket) are dropped with a warning; every
batch has the video / pose maps padded to F frames (masks `video_mask`), so one compiled program serves all.

Cue ablations (`data.cues`, SynthCue only): "lips+hand" (default); "lips": SynthCue's `speech` mode, the same
speakers and sentences with no cueing hand drawn or in the pose; "hand": cued mode with the mouth boxed out of
every frame and the lip keypoints dropped (`hide_mouth`). Table 2's "lips + hand vs either alone".

Pose maps are drawn at data.pose_supersample x S and averaged down to S (thin lines at small S).

Crop (`crop_box`): a square of side `data.crop_scale` face units whose centre is the nose + (0.45, 0.35) face
units (x right, y down), a face unit = half the inter-ocular distance / 0.4 (SynthCue: 0.15 of the frame): it
holds the face and the five cue positions (side, mouth, chin, cheek, throat). The box is the clip's mean over
frames where the eyes and nose are seen, so the crop does not jitter.

Tokens: MBart's special ids (SPECS § UniCUE): <s> bos 0, <pad> 1, </s> eos 2, <unk> 3, then the units. The
CSR decoder reads <decoder_start = eos> y_1..y_n and predicts y_1..y_n </s> (MBart's shift_tokens_right of the
labels "y </s>"); the semantic alignment pool's text encoder reads "y </s>" (task.py).
"""
from __future__ import annotations

import logging
import os

import numpy as np

from shared.data import audioldm_mel
from shared.data import pose as pose_lib
from shared.data.layouts import cued_reader
from shared.data.pipeline import collate_fn, make_iterator
from shared.data.synthcue import synthcue_source
from shared.errors import ConfigError, DataError
from shared.text.pinyin import Vocab

log = logging.getLogger(__name__)
SOURCES = ("synthcue", "cued")
CUES = ("lips+hand", "lips", "hand")
TOKENS = ("chars", "syllables")
MBART_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
BOS, PAD, EOS, UNK = 0, 1, 2, 3
# crop geometry in face units (SynthCue: face centre (0, 0), half-width 1, y down; nose at (0, 0.25), eyes
# (+-0.4, -0.3)); the box holds the face and the cue positions
EYE_DISTANCE = 0.8
CROP_CENTRE = np.array([0.45, 0.35], np.float32)      # relative to the nose
OPENPOSE_137 = (("body", 25), ("face", 70), ("hand_left", 21), ("hand_right", 21))


# ----------------------------------------------------------------------------- vocabulary

def make_vocab(units) -> Vocab:
  """A Vocab with MBart's specials first (<s> 0, <pad> 1, </s> 2, <unk> 3), then `units`."""
  return Vocab(list(units), specials=MBART_SPECIALS)


def load_units(path: str) -> list[str]:
  """A units file: one token per line (blank lines and our specials skipped)."""
  if not path or not os.path.isfile(path):
    raise DataError("token unit file does not exist (one token per line)", path=path, key="data.units")
  with open(path, encoding="utf-8") as f:
    units = [line.strip() for line in f if line.strip() and line.strip() not in MBART_SPECIALS]
  if not units:
    raise DataError("no token units in the file", path=path, key="data.units")
  return units


def vocab(data) -> Vocab:
  """The target vocabulary a config's data section implies."""
  if data.tokens not in TOKENS:
    raise ConfigError(f"data.tokens={data.tokens!r}: expected one of {TOKENS}")
  if data.source == "synthcue":
    world = synthcue_source(data, "train", "cued").world
    return make_vocab(world.chars if data.tokens == "chars" else world.syllables)
  if data.source == "cued":
    return make_vocab(load_units(data.units))
  raise ConfigError(f"data.source={data.source!r}: expected one of {SOURCES}")


def encode_text(sample: dict, data, v: Vocab) -> np.ndarray:
  if data.tokens == "chars":
    units = [c for c in str(sample.get("text", "")) if not c.isspace()]
  else:
    units = str(sample.get("pinyin") or "").split()
  if not units:
    raise DataError("empty transcript", path=_where(sample), key="text" if data.tokens == "chars" else "pinyin")
  return v.encode(units)


def decode_tokens(v: Vocab, ids, tokens: str) -> str:
  """ids (stopping at the first </s>) -> text: characters joined, syllables space-separated."""
  ids = [int(i) for i in ids]
  if EOS in ids:
    ids = ids[:ids.index(EOS)]
  units = v.decode(ids)
  return ("" if tokens == "chars" else " ").join(units)


# ----------------------------------------------------------------------------- sources

def cues(data) -> str:
  """data.cues: which half of cued speech the inputs keep (module docstring, "Cue ablations")."""
  c = data.get("cues", "lips+hand")
  if c not in CUES:
    raise ConfigError(f"data.cues={c!r}: expected one of {CUES}")
  if c != "lips+hand" and data.source != "synthcue":
    raise ConfigError(f"data.cues={c!r} is a SynthCue ablation (its renderer can leave the hand out); "
                      f"data.source={data.source!r} needs cues='lips+hand'")
  return c


def source(data, split: str, *, video: bool = True, audio: bool = True):
  """A random-access source of DESIGN.md sample dicts (None for a bad real clip)."""
  c = cues(data)
  if data.source == "synthcue":
    mode = "speech" if c == "lips" else "cued"
    return synthcue_source(data, split, mode, render_video=video, render_audio=audio)
  if data.source == "cued":
    return cued_reader(data.root, split, dataset=data.dataset, skip=True, load_video=False)
  raise ConfigError(f"data.source={data.source!r}: expected one of {SOURCES}")


def _where(sample) -> str:
  return str(sample.get("path", f"SynthCue sample {sample.get('index', '?')}"))


# ----------------------------------------------------------------------------- pose and crop

def keypoints(pose: np.ndarray, height: int, width: int, where: str = "pose") -> dict:
  """A sample's pose [T, K, 3] -> OpenPose `Keypoints` in pixels of its height x width frames.

  K = 20: SynthCue (frame units; shared.data.pose.synthcue_to_openpose); K = 137: OpenPose body 25 + face 70 +
  left hand 21 + right hand 21, in pixels (as OpenPose writes them, concatenated)."""
  pose = np.asarray(pose, np.float32)
  if pose.ndim != 3 or pose.shape[2] != 3:
    raise DataError(f"pose has shape {pose.shape}; expected [T, K, 3] (x, y, confidence)", path=where, key="pose")
  if pose.shape[1] == 20:
    return pose_lib.synthcue_to_openpose(pose, height, width)
  if pose.shape[1] == 137:
    out, k = {}, 0
    for part, n in OPENPOSE_137:
      out[part] = pose[:, k:k + n]
      k += n
    return out
  raise DataError(f"pose has {pose.shape[1]} keypoints per frame; expected 20 (SynthCue) or 137 (OpenPose "
                  "body 25 + face 70 + hands 21 + 21)", path=where, key="pose")


def crop_box(kp: dict, scale: float, where: str = "pose") -> tuple[float, float, float]:
  """(x0, y0, side) in pixels: the face + cue-position square of the module docstring, from the clip's eyes
  (BODY_25 15 / 16) and nose (BODY_25 0) over the frames where all three are seen."""
  body = np.asarray(kp["body"], np.float32)
  seen = (body[:, 15, 2] > 0) & (body[:, 16, 2] > 0) & (body[:, 0, 2] > 0)
  if not seen.any():
    raise DataError("no frame shows both eyes and the nose: cannot place the face crop", path=where, key="pose")
  eyes = np.linalg.norm(body[seen, 15, :2] - body[seen, 16, :2], axis=-1).mean()
  unit = max(float(eyes) / EYE_DISTANCE, 1e-3)
  nose = body[seen, 0, :2].mean(0)
  side = float(scale) * unit
  cx, cy = nose + CROP_CENTRE * unit
  return float(cx - side / 2), float(cy - side / 2), side


def crop_frames(frames: np.ndarray, box: tuple[float, float, float], size: int) -> np.ndarray:
  """frames [T, H, W, 3] uint8 -> [T, size, size, 3] uint8: the box (pixels; parts outside the frame are
  black) resampled bilinearly (PIL)."""
  from PIL import Image
  x0, y0, side = box
  t, h, w = frames.shape[:3]
  pad = int(np.ceil(max(0.0, -x0, -y0, x0 + side - w, y0 + side - h))) + 1
  src = np.pad(frames, ((0, 0), (pad, pad), (pad, pad), (0, 0))) if pad > 1 else frames
  off = pad if pad > 1 else 0
  bx = (x0 + off, y0 + off, x0 + off + side, y0 + off + side)
  out = np.empty((t, size, size, 3), np.uint8)
  for i in range(t):
    out[i] = np.asarray(Image.fromarray(np.ascontiguousarray(src[i])).resize((size, size), Image.BILINEAR,
                                                                                box=bx))
  return out


def render_pose_maps(kp: dict, box: tuple[float, float, float], size: int, supersample: int = 1) -> np.ndarray:
  """OpenPose keypoints (pixels of the source frame) -> pose maps [T, size, size, 3] uint8 of the crop box,
  drawn at size x supersample and averaged down (OpenPose's lines and dots are at least 2 px wide: at 32 px
  direct drawing merges the mouth points into one blob)."""
  x0, y0, side = box
  k = max(int(supersample), 1)
  s = size * k / side
  moved = {}
  for part, a in kp.items():
    a = np.asarray(a, np.float32).copy()
    on = a[..., 2] > 0
    # pixel centres: source pixel x covers [x - 0.5, x + 0.5]; the crop's pixel i covers box + [i, i+1] / s
    a[..., 0] = np.where(on, (a[..., 0] + 0.5 - x0) * s - 0.5, 0.0)
    a[..., 1] = np.where(on, (a[..., 1] + 0.5 - y0) * s - 0.5, 0.0)
    moved[part] = a
  maps = pose_lib.pose_maps(moved, size * k, size * k)
  if k == 1:
    return maps
  t = maps.shape[0]
  return maps.reshape(t, size, k, size, k, 3).mean((2, 4)).round().astype(np.uint8)


def hide_mouth(video: np.ndarray, kp: dict, margin: float = 0.3) -> tuple[np.ndarray, dict]:
  """The `hand` cue ablation: video [T, H, W, 3] uint8 with one fixed box over the mouth filled black in every
  frame (the clip's lip keypoints' extent, face 48-67, widened by `margin` of its size on each side: a fixed
  box, so its size tells nothing of the opening), and the lip keypoints dropped (confidence 0) from the pose.
  A hand at the mouth cue position is hidden with the lips."""
  lips = np.asarray(kp["face"][:, 48:68], np.float32)
  seen = lips[..., 2] > 0
  if not seen.any():
    return video, kp
  xy = lips[..., :2][seen]
  lo, hi = xy.min(0), xy.max(0)
  pad = margin * np.maximum(hi - lo, 1.0)
  (x0, y0), (x1, y1) = np.floor(lo - pad).astype(int), np.ceil(hi + pad).astype(int)
  video = video.copy()
  video[:, max(y0, 0):max(y1 + 1, 0), max(x0, 0):max(x1 + 1, 0)] = 0
  kp = dict(kp, face=np.asarray(kp["face"], np.float32).copy())
  kp["face"][:, 48:68, 2] = 0.0
  return video, kp


# ----------------------------------------------------------------------------- examples

def mel_frames(data) -> int:
  """M: log-mel frames per clip = data.frames x mel frames per video frame (16000 / 160 / fps)."""
  per = audioldm_mel.SAMPLE_RATE / audioldm_mel.HOP / float(data.fps)
  if abs(per - round(per)) > 1e-6:
    raise ConfigError(f"data.fps={data.fps}: {audioldm_mel.SAMPLE_RATE} / {audioldm_mel.HOP} / fps must be an "
                      "integer (mel frames per video frame)")
  return int(data.frames) * int(round(per))


def clip_mel(audio: np.ndarray, m: int) -> np.ndarray:
  """Audio [S] at 16 kHz -> AudioLDM log-mel [m, 64] float32 (loudness-normalised, zero-padded / cut)."""
  return audioldm_mel.log_mel(audioldm_mel.normalize_wav(audio), target_frames=m)


def prepare(sample, *, data, vocab: Vocab, parts: tuple[str, ...] = ("visual", "tokens")) -> dict | None:
  """sample -> example dict (module docstring); None drops the clip. parts: any of "visual" (video,
  pose_maps), "tokens", "mel", "syllables"."""
  if sample is None:
    return None
  out = {}
  where = _where(sample)
  if "visual" in parts:
    video = sample.get("video")
    if video is None or np.ndim(video) != 4 or video.shape[-1] != 3:
      raise DataError(f"expected colour frames 'video' [T, H, W, 3], got "
                      f"{None if video is None else np.shape(video)}", path=where, key="video")
    if sample.get("pose") is None:
      raise DataError("expected pose keypoints 'pose' [T, K, 3] (OpenPose-style; cued CSV: hand_position_path)",
                      path=where, key="pose")
    t, h, w = video.shape[:3]
    if t > int(data.frames):
      log.warning("dropping %s: %d frames exceed data.frames=%d", where, t, data.frames)
      return None
    kp = keypoints(sample["pose"], h, w, where)
    if next(iter(kp.values())).shape[0] != t:
      raise DataError(f"pose has {next(iter(kp.values())).shape[0]} frames, the video {t}", path=where, key="pose")
    box = crop_box(kp, data.crop_scale, where)
    if cues(data) == "hand":
      video, kp = hide_mouth(np.asarray(video, np.uint8), kp)
    out["video"] = crop_frames(np.asarray(video, np.uint8), box, int(data.image_size))
    out["pose_maps"] = render_pose_maps(kp, box, int(data.image_size), int(data.pose_supersample))
  if "tokens" in parts:
    ids = encode_text(sample, data, vocab)
    if len(ids) > max(data.label_buckets):
      log.warning("dropping %s: %d tokens exceed the largest label bucket %d", where, len(ids),
                  max(data.label_buckets))
      return None
    out["tokens"] = ids
  if "syllables" in parts:
    out["syllables"] = frame_syllables(sample)
  if "mel" in parts:
    audio = sample.get("audio")
    if audio is None or np.ndim(audio) != 1:
      raise DataError("expected 16 kHz audio 'audio' [S]", path=where, key="audio")
    out["mel"] = clip_mel(np.asarray(audio, np.float32), mel_frames(data))
  return out


def frame_syllables(sample) -> np.ndarray:
  """SynthCue's truth -> [T] int32: 1 + the pinyin id of the syllable spoken at each video frame, 0 outside."""
  where = _where(sample)
  spans, ids = sample.get("syllable_frames"), sample.get("syllable_ids")
  if spans is None or ids is None:
    raise DataError("the oracle condition needs per-syllable truth 'syllable_frames' [N, 2] and 'syllable_ids' [N] "
                    "(SynthCue only)", path=where, key="syllable_frames")
  t = len(sample["mouth_open"]) if sample.get("mouth_open") is not None else int(np.max(spans)) + 1
  out = np.zeros(t, np.int32)
  for (start, end), sid in zip(np.asarray(spans), np.asarray(ids)):
    out[int(start):int(end)] = int(sid) + 1
  return out


def batch_fn(data, parts: tuple[str, ...]):
  """Padded batch: video / pose_maps [B, F, S, S, 3] uint8 (+ video_lengths / video_mask), syllables [B, F] (+
  syllables_lengths / syllables_mask; pad 0), tokens [B, L] (+
  tokens_lengths / tokens_mask; pad value <pad>), mel [B, M, 64] float32."""
  keys, buckets, fixed = [], {}, []
  if "visual" in parts:
    keys += ["video", "pose_maps"]
    buckets.update(video=[int(data.frames)], pose_maps=[int(data.frames)])
  if "syllables" in parts:
    keys.append("syllables")
    buckets["syllables"] = [int(data.frames)]
  if "tokens" in parts:
    keys.append("tokens")
    buckets["tokens"] = list(data.label_buckets)
  if "mel" in parts:
    keys.append("mel")
    fixed.append("mel")
  return collate_fn(keys=keys, buckets=buckets, fixed=fixed, pad_values={"tokens": PAD})


def train_iterator(data, v: Vocab, *, parts, batch_size: int, seed: int):
  """Checkpointable grain iterator of training batches (host-local batch_size)."""
  def prep(sample):
    return prepare(sample, data=data, vocab=v, parts=parts)
  src = source(data, "train", video="visual" in parts, audio="mel" in parts)
  return make_iterator(src, batch_fn(data, parts), batch_size=batch_size, seed=seed, map_fn=prep, skip_none=True)


def info(sample: dict) -> dict:
  """What scoring needs of a clip beside its batch row: text, pinyin, speaker and, from SynthCue's truth, the
  per-frame mouth opening and the syllable boundaries (video frames), when there."""
  out = {"text": "".join(str(sample.get("text", "")).split()), "pinyin": " ".join(str(sample.get("pinyin") or "")
                                                                                 .split()),
         "speaker": int(sample.get("speaker", -1)), "path": _where(sample)}
  for k in ("mouth_open", "syllable_frames", "audio"):
    if sample.get(k) is not None:
      out[k] = np.asarray(sample[k])
  return out


def eval_batches(data, v: Vocab, split: str, n: int, batch_size: int, parts):
  """Deterministic evaluation batches over the first n usable clips of `split`: yields (batch, infos) with one
  info per real clip; the last batch is padded with copies of its last clip (one compiled shape)."""
  src = source(data, split, video="visual" in parts, audio=True)
  collate = batch_fn(data, parts)
  examples, infos = [], []
  for i in range(len(src)):
    if len(infos) >= n:
      break
    s = src[i]
    ex = prepare(s, data=data, vocab=v, parts=parts)
    if ex is None:
      continue
    examples.append(ex)
    infos.append(info(s))
    if len(examples) == batch_size:
      yield collate(examples), infos[-batch_size:]
      examples = []
  if examples:
    k = len(examples)
    yield collate(examples + examples[-1:] * (batch_size - k)), infos[-k:]
