"""Media I/O: mp4 (h264 video + aac audio, one file) with PyAV, wav with soundfile, images with PIL, resampling.

Every failure to read a person's file (missing, truncated, undecodable, wrong content) raises
`shared.errors.DataError` naming the file. Shapes:
  video frames  [T, H, W, 3] uint8 RGB (or [T, H, W] uint8 when read with gray=True)
  audio         [S] float32 mono in [-1, 1]
"""
from __future__ import annotations

import dataclasses
import math
import os
from fractions import Fraction
from typing import Any

import numpy as np

from shared.errors import DataError


@dataclasses.dataclass
class Media:
  """What `read_mp4` returns. frames [T,H,W,3] (or [T,H,W]) uint8; audio [S] float32 or None."""
  frames: np.ndarray
  fps: float
  audio: np.ndarray | None
  sample_rate: int | None


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
  """Polyphase resampling (scipy.signal.resample_poly, exact rational ratio). [S] -> [S'] float32."""
  audio = np.asarray(audio, np.float32)
  orig_sr, target_sr = int(orig_sr), int(target_sr)
  if orig_sr == target_sr:
    return audio
  from scipy.signal import resample_poly
  g = math.gcd(orig_sr, target_sr)
  out = resample_poly(audio.astype(np.float64), target_sr // g, orig_sr // g, axis=-1)
  return out.astype(np.float32)


def _fps_fraction(fps: float) -> Fraction:
  return Fraction(fps).limit_denominator(1001)


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float = 25.0,
              audio: np.ndarray | None = None, sample_rate: int = 16000, *, crf: int = 18,
              pix_fmt: str = "yuv420p", audio_bitrate: int = 128_000, preset: str = "medium") -> None:
  """Write frames [T,H,W,3] or [T,H,W] (gray) uint8 as h264, plus optional mono audio [S] as aac.

  yuv420p (the player-compatible default) needs even H and W; odd sizes switch to yuv444p.
  """
  import av
  frames = np.asarray(frames)
  if frames.dtype != np.uint8:
    raise DataError(f"video frames must be uint8, got {frames.dtype}", path=str(path), key="video")
  if frames.ndim == 3:
    frames = np.repeat(frames[..., None], 3, axis=-1)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
    raise DataError(f"video frames must be [T>0,H,W,3] or [T,H,W], got {frames.shape}",
                    path=str(path), key="video")
  t, h, w, _ = frames.shape
  if pix_fmt == "yuv420p" and (h % 2 or w % 2):
    pix_fmt = "yuv444p"
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  rate = _fps_fraction(fps)
  with av.open(str(path), mode="w", format="mp4") as container:
    vs = container.add_stream("libx264", rate=rate)
    vs.width, vs.height, vs.pix_fmt = w, h, pix_fmt
    vs.time_base = Fraction(1, 1) / rate
    vs.options = {"crf": str(crf), "preset": preset}
    astream = None
    if audio is not None:
      astream = container.add_stream("aac", rate=int(sample_rate))
      astream.layout = "mono"
      astream.bit_rate = int(audio_bitrate)
    for i in range(t):
      vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
      vf.pts = i
      for packet in vs.encode(vf):
        container.mux(packet)
    for packet in vs.encode():
      container.mux(packet)
    if astream is not None:
      a = np.clip(np.asarray(audio, np.float32).reshape(1, -1), -1.0, 1.0)
      af = av.AudioFrame.from_ndarray(np.ascontiguousarray(a), format="flt", layout="mono")
      af.sample_rate = int(sample_rate)
      af.pts = 0
      for packet in astream.encode(af):
        container.mux(packet)
      for packet in astream.encode(None):
        container.mux(packet)


def _mono(frame) -> np.ndarray:
  """A decoded audio frame (planar or packed, int16 / int32 / float) -> [S] float32, channels averaged."""
  x = frame.to_ndarray()
  if frame.format.is_planar:
    x = x.reshape(len(frame.layout.channels), -1)
  else:
    x = x.reshape(-1, len(frame.layout.channels)).T
  if x.dtype == np.int16:
    x = x.astype(np.float32) / 32768.0
  elif x.dtype == np.int32:
    x = x.astype(np.float32) / 2147483648.0
  return x.astype(np.float32).mean(axis=0)


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int] | None:
  """The audio track of a media file alone, no video frame decoded -> ([S] float32 mono, sample rate), or None
  when it has no audio track. DataError naming the file when it is missing or not decodable."""
  import av
  path = str(path)
  if not os.path.isfile(path):
    raise DataError("media file does not exist", path=path)
  chunks: list[np.ndarray] = []
  try:
    with av.open(path, mode="r") as container:
      if not container.streams.audio:
        return None
      ast = container.streams.audio[0]
      sr = int(ast.codec_context.sample_rate)
      n = int(round(float(ast.duration * ast.time_base) * sr)) if ast.duration and ast.time_base else None
      for frame in container.decode(ast):
        chunks.append(_mono(frame))
  except (av.error.FFmpegError, OSError, ValueError, EOFError, IndexError) as e:
    raise DataError(f"cannot decode the audio track: {type(e).__name__}: {e}", path=path, key="audio") from e
  audio = np.concatenate(chunks) if chunks else np.zeros((0,), np.float32)
  return (audio[:n] if n is not None else audio), sr


def read_mp4(path: str | os.PathLike, *, gray: bool = False, with_audio: bool = True,
             sample_rate: int | None = None, per_frame=None) -> Media:
  """Decode a video file. Returns Media(frames [T,H,W,3] uint8 (or [T,H,W] if gray), fps, audio [S]
  float32 mono or None when the file has no audio track, sample_rate).

  sample_rate: resample the audio track to this rate (None keeps the file's rate).
  per_frame: applied to each decoded frame [H, W(, 3)] as it comes, before stacking (crop / resize a large video
  without holding its full frames): frames = [T, *per_frame's output shape].
  Raises DataError naming the file when it is missing, truncated or not decodable.
  """
  import av
  path = str(path)
  if not os.path.isfile(path):
    raise DataError("video file does not exist", path=path)
  frames: list[np.ndarray] = []
  chunks: list[np.ndarray] = []
  sr = None
  fps = None
  try:
    with av.open(path, mode="r") as container:
      if not container.streams.video:
        raise DataError("file has no video stream", path=path)
      vs = container.streams.video[0]
      rate = vs.average_rate or vs.guessed_rate or vs.base_rate
      fps = float(rate) if rate else float("nan")
      streams: list[Any] = [vs]
      has_audio = with_audio and bool(container.streams.audio)
      n_audio = None
      if has_audio:
        ast = container.streams.audio[0]
        streams.append(ast)
        sr = int(ast.codec_context.sample_rate)
        if ast.duration and ast.time_base:  # drop the encoder's padding of the last frame
          n_audio = int(round(float(ast.duration * ast.time_base) * sr))
      for frame in container.decode(*streams):
        if isinstance(frame, av.VideoFrame):
          x = frame.to_ndarray(format="gray" if gray else "rgb24")
          frames.append(per_frame(x) if per_frame is not None else x)
        else:
          chunks.append(_mono(frame))
  except DataError:
    raise
  except (av.error.FFmpegError, OSError, ValueError, EOFError, IndexError) as e:
    raise DataError(f"cannot decode video: {type(e).__name__}: {e}", path=path) from e
  if not frames:
    raise DataError("video decodes to zero frames (truncated or empty file)", path=path)
  audio = None
  if sr is not None:
    audio = np.concatenate(chunks) if chunks else np.zeros((0,), np.float32)
    if n_audio is not None:
      audio = audio[:n_audio]
    if sample_rate is not None and sample_rate != sr:
      audio, sr = resample(audio, sr, sample_rate), int(sample_rate)
  return Media(frames=np.stack(frames), fps=fps, audio=audio, sample_rate=sr)


def probe_mp4(path: str | os.PathLike) -> dict:
  """Cheap header read: {'n_frames', 'fps', 'width', 'height', 'has_audio'}; DataError if unreadable."""
  import av
  path = str(path)
  if not os.path.isfile(path):
    raise DataError("video file does not exist", path=path)
  try:
    with av.open(path) as c:
      vs = c.streams.video[0]
      rate = vs.average_rate or vs.guessed_rate
      return {"n_frames": int(vs.frames), "fps": float(rate) if rate else float("nan"),
              "width": vs.codec_context.width, "height": vs.codec_context.height,
              "has_audio": bool(c.streams.audio)}
  except (av.error.FFmpegError, OSError, ValueError, IndexError) as e:
    raise DataError(f"cannot read video header: {type(e).__name__}: {e}", path=path) from e


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int = 16000, *,
              subtype: str = "FLOAT") -> None:
  """Write mono audio [S] float32. subtype "FLOAT" round-trips float32 exactly; "PCM_16" is the
  datasets' usual 16-bit PCM (quantises to 1/32768)."""
  import soundfile as sf
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  audio = np.asarray(audio, np.float32)
  if audio.ndim != 1:
    raise DataError(f"audio must be mono [S], got shape {audio.shape}", path=str(path), key="audio")
  sf.write(str(path), audio, int(sample_rate), subtype=subtype, format="WAV")


def read_wav(path: str | os.PathLike, *, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
  """Read a wav/flac file as mono float32 [S]. sample_rate: resample to it (None keeps the file's).
  Returns (audio, sample_rate). DataError naming the file when missing or undecodable."""
  import soundfile as sf
  path = str(path)
  if not os.path.isfile(path):
    raise DataError("audio file does not exist", path=path)
  try:
    audio, sr = sf.read(path, dtype="float32", always_2d=True)
  except (RuntimeError, sf.LibsndfileError, ValueError) as e:
    raise DataError(f"cannot decode audio: {e}", path=path) from e
  audio = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
  if sample_rate is not None and int(sample_rate) != sr:
    audio, sr = resample(audio, sr, sample_rate), int(sample_rate)
  return np.ascontiguousarray(audio, np.float32), int(sr)


def read_image(path: str) -> np.ndarray:
  """An image file -> [H, W, 3] uint8 RGB; DataError naming the file when missing or undecodable."""
  from PIL import Image
  path = str(path)
  if not os.path.isfile(path):
    raise DataError("image file does not exist", path=path)
  try:
    with Image.open(path) as im:
      return np.asarray(im.convert("RGB"), np.uint8)
  except (OSError, ValueError, Image.DecompressionBombError) as e:   # UnidentifiedImageError is an OSError
    raise DataError(f"cannot decode image: {type(e).__name__}: {e}", path=path) from e
