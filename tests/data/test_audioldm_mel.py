"""AudioLDM log-mel vs a torch.stft reference with a slaney mel filterbank built here from the formulas
(no librosa in the reference), frame counts, target-length padding, normalisation helpers."""
from __future__ import annotations

import numpy as np
import pytest

from shared.data import audioldm_mel as A
from shared.data import features

torch = pytest.importorskip("torch")


def _hz_to_mel(f):   # slaney: linear below 1 kHz (200/3 Hz per mel), logarithmic above (27 mels per ln 6.4)
  f = np.asarray(f, np.float64)
  lin = f / (200.0 / 3)
  return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-9) / 1000.0) / (np.log(6.4) / 27.0), lin)


def _mel_to_hz(m):
  m = np.asarray(m, np.float64)
  return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * (200.0 / 3))


def slaney_filterbank(sr=16000, n_fft=1024, n_mels=64, fmin=0.0, fmax=8000.0):
  """[n_mels, n_fft // 2 + 1]: triangles between n_mels + 2 slaney-spaced edges, each scaled to unit area
  (2 / (right - left) peak), evaluated on the rfft bin frequencies."""
  bins = np.linspace(0.0, sr / 2, n_fft // 2 + 1)
  edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
  left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
  tri = np.maximum(0.0, np.minimum((bins - left) / (centre - left), (right - bins) / (right - centre)))
  return tri * (2.0 / (right - left))


def torch_reference(wav: np.ndarray) -> np.ndarray:
  """AudioLDM's mel_spectrogram_train, written out: reflect pad (1024 - 160) / 2, torch.stft center=False with
  a periodic hann, magnitude, mel, ln(clamp(., 1e-5)); -> [T, 64]."""
  y = torch.from_numpy(wav.astype(np.float32))[None, None]
  y = torch.nn.functional.pad(y, (432, 432), mode="reflect")[:, 0]
  spec = torch.stft(y, 1024, hop_length=160, win_length=1024, window=torch.hann_window(1024), center=False,
                    normalized=False, onesided=True, return_complex=True).abs()
  mel = torch.from_numpy(slaney_filterbank().astype(np.float32)) @ spec
  return torch.log(torch.clamp(mel, min=1e-5))[0].T.numpy()


@pytest.fixture(scope="module")
def wave():
  rng = np.random.default_rng(0)
  n = 16000 + 37
  t = np.arange(n) / 16000
  x = 0.3 * np.sin(2 * np.pi * 220 * t + 3 * np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(n)
  x[5000:8000] = 0.0   # a silent stretch: the 1e-5 floor is reached
  return x.astype(np.float32)


def test_config_is_audioldms():
  c = A.AUDIOLDM_MEL
  assert (c.sample_rate, c.n_fft, c.hop, c.win, c.n_mels, c.fmin, c.fmax, c.power, c.mag_eps, c.log, c.floor,
          c.pad) == (16000, 1024, 160, 1024, 64, 0.0, 8000.0, 1.0, 0.0, "ln", 1e-5, "half")


def test_filterbank_is_slaney():
  ours = features.mel_filters(16000, 1024, 64, 0.0, 8000.0)
  np.testing.assert_allclose(ours, slaney_filterbank(), rtol=0, atol=1e-6 * np.abs(ours).max())


def test_log_mel_matches_torch_reference(wave):
  got = A.log_mel(wave)
  ref = torch_reference(wave)
  assert got.dtype == np.float32 and got.shape == ref.shape == (len(wave) // 160, 64)
  np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)
  assert got.min() == pytest.approx(A.LOG_FLOOR) and got.max() > 0.0


@pytest.mark.parametrize("n", [513, 1000, 16000, 16159, 16160])
def test_frame_counts(n, wave):
  x = np.resize(wave, n)
  assert A.log_mel(x).shape == (n // 160, 64)
  assert A.log_mel(x, center=True).shape == (1 + n // 160, 64)


def test_center_variant_is_tacotron_stft(wave):
  """center=True: n_fft / 2 padding (TacotronSTFT); the same frames as features.audioldm_mel, and frame i of
  the half-padded mel sits hop / 2 later: it equals the centred mel of the signal shifted by 80 samples."""
  np.testing.assert_array_equal(A.log_mel(wave, center=True), features.audioldm_mel(wave))
  half = A.log_mel(wave)
  shifted = A.log_mel(wave[80:], center=True)
  np.testing.assert_allclose(half[5:60], shifted[5:60], atol=1e-4)


def test_target_frames(wave):
  short, long_ = wave[:8000], np.tile(wave, 2)
  got = A.log_mel(short, target_frames=100)
  assert got.shape == (100, 64)
  np.testing.assert_allclose(got[:45], A.log_mel(short)[:45], atol=1e-5)   # frames before the padded tail
  assert np.allclose(got[55:], A.LOG_FLOOR)                               # zero-padded waveform: silence
  got = A.log_mel(long_, target_frames=150)
  assert got.shape == (150, 64)
  np.testing.assert_allclose(got[:140], A.log_mel(long_)[:140], atol=1e-5)
  for center in (False, True):
    assert A.log_mel(wave, target_frames=A.TARGET_FRAMES, center=center).shape == (1024, 64)
  # AudioLDM's _pad_spec: zeros in the log domain by default, or a chosen value; cuts the tail
  mel = np.ones((3, 64), np.float32)
  assert A.pad_spec(mel, 5)[3:].tolist() == [[0.0] * 64] * 2
  assert np.all(A.pad_spec(mel, 5, pad_value=A.LOG_FLOOR)[3:] == np.float32(A.LOG_FLOOR))
  assert A.pad_spec(mel, 2).shape == (2, 64)


def test_wav_and_mel_normalisation(wave):
  x = A.normalize_wav(3.0 * wave + 0.2)
  assert abs(float(x.mean())) < 1e-6 and np.abs(x).max() == pytest.approx(0.5, abs=1e-6)
  mel = A.log_mel(wave)
  z = A.normalize_mel(mel)
  np.testing.assert_allclose(z, (mel + 4.63) / 2.74, rtol=1e-6)
  np.testing.assert_allclose(A.denormalize_mel(z), mel, atol=1e-5)
  with pytest.raises(Exception, match="audio must be"):
    A.log_mel(np.zeros((2, 2000), np.float32))
