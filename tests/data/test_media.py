"""Media I/O: mp4 (h264 + aac) and wav round trips, resampling, and errors that name the file."""
from __future__ import annotations

import numpy as np
import pytest

from shared.data import media
from shared.errors import DataError


def _frames(t=12, h=32, w=48, seed=0):
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
  out = np.empty((t, h, w, 3), np.uint8)
  for i in range(t):
    cy, cx = rng.uniform(8, h - 8), rng.uniform(8, w - 8)
    disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < 36) * 120.0
    for c in range(3):
      out[i, ..., c] = np.clip(40 + 2 * xx + (c * 30) + disc, 0, 255)
  return out


def psnr(a, b):
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def test_mp4_round_trip_video_and_audio(tmp_path):
  fr = _frames()
  sr = 16000
  t = np.arange(len(fr) * 640) / sr
  rng = np.random.default_rng(1)
  audio = 0.2 * np.sin(2 * np.pi * 300 * t + 40 * t ** 2) + 0.02 * rng.standard_normal(len(t))
  audio = audio.astype(np.float32)
  path = tmp_path / "a.mp4"
  media.write_mp4(path, fr, 25.0, audio, sr)
  m = media.read_mp4(path)
  assert m.frames.shape == fr.shape and m.frames.dtype == np.uint8
  assert m.fps == 25.0 and m.sample_rate == sr
  assert psnr(m.frames, fr) > 32
  # aac is lossy; its encoder delay is removed on decode and the padding of the last frame cut to
  # the stream's duration (which the muxer rounds up to 16 samples).
  assert len(audio) <= len(m.audio) < len(audio) + 16
  n = len(audio)
  lags = range(-64, 65)
  corr = [np.dot(m.audio[100 + k: n - 100 + k], audio[100:n - 100]) for k in lags]
  assert list(lags)[int(np.argmax(corr))] == 0
  assert np.corrcoef(m.audio[:n], audio)[0, 1] > 0.98
  info = media.probe_mp4(path)
  assert info["n_frames"] == len(fr) and info["has_audio"] and (info["width"], info["height"]) == (48, 32)
  # per_frame: each frame cropped as it is decoded == cropping the stacked frames
  crop = media.read_mp4(path, with_audio=False, per_frame=lambda x: x[4:20, 8:40])
  assert crop.audio is None
  np.testing.assert_array_equal(crop.frames, m.frames[:, 4:20, 8:40])
  # 16 kHz track read at 8 kHz
  assert abs(len(media.read_mp4(path, sample_rate=8000).audio) - len(m.audio) / 2) <= 1
  # the audio track alone (no frame decoded) is the same samples
  got, got_sr = media.read_audio(path)
  assert got_sr == sr
  np.testing.assert_array_equal(got, m.audio)


def test_mp4_gray_odd_size_and_ntsc_rate(tmp_path):
  fr = _frames(8, 33, 35)[..., 0]  # [T, H, W] gray, odd size -> yuv444p
  path = tmp_path / "g.mp4"
  media.write_mp4(path, fr, 30000 / 1001)
  m = media.read_mp4(path, gray=True)
  assert m.frames.shape == fr.shape and m.audio is None
  assert media.read_audio(path) is None
  assert m.fps == pytest.approx(29.97, abs=1e-3)
  assert psnr(m.frames, fr) > 32
  with pytest.raises(DataError, match="uint8"):
    media.write_mp4(tmp_path / "f.mp4", fr.astype(np.float32))


def test_wav_round_trip_and_resample(tmp_path):
  rng = np.random.default_rng(0)
  x = (0.3 * rng.standard_normal(4000)).astype(np.float32)
  media.write_wav(tmp_path / "a.wav", x, 16000)
  y, sr = media.read_wav(tmp_path / "a.wav")
  assert sr == 16000 and y.dtype == np.float32
  np.testing.assert_array_equal(y, x)  # float wav: exact
  media.write_wav(tmp_path / "b.wav", x, 16000, subtype="PCM_16")
  np.testing.assert_allclose(media.read_wav(tmp_path / "b.wav")[0], np.clip(x, -1, 1), atol=1 / 32768 + 1e-7)
  # a 44.1 kHz tone resampled to 16 kHz keeps its frequency and duration
  sr0 = 44100
  tone = np.sin(2 * np.pi * 440 * np.arange(sr0) / sr0).astype(np.float32)
  media.write_wav(tmp_path / "c.wav", tone, sr0)
  z, sr = media.read_wav(tmp_path / "c.wav", sample_rate=16000)
  assert sr == 16000 and len(z) == 16000
  assert np.argmax(np.abs(np.fft.rfft(z))) == 440  # 1 s -> 1 Hz bins
  np.testing.assert_allclose(z[1000:-1000], np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)[1000:-1000],
                             atol=2e-3)


@pytest.mark.parametrize("kind", ["missing", "truncated", "garbage", "empty"])
def test_bad_files_raise_data_error_naming_file(tmp_path, kind):
  good = tmp_path / "good.mp4"
  media.write_mp4(good, _frames(), 25.0, np.zeros(7680, np.float32), 16000)
  bad = tmp_path / f"{kind}.mp4"
  data = good.read_bytes()
  if kind == "truncated":
    bad.write_bytes(data[: len(data) // 2])
  elif kind == "garbage":
    bad.write_bytes(b"\x00junk" * 200)
  elif kind == "empty":
    bad.write_bytes(b"")
  with pytest.raises(DataError) as e:
    media.read_mp4(bad)
  assert e.value.path == str(bad) and str(bad) in str(e.value)
  wav = tmp_path / f"{kind}.wav"
  if kind != "missing":
    wav.write_bytes(data[:100])
  with pytest.raises(DataError) as e:
    media.read_wav(wav)
  assert e.value.path == str(wav)
