"""Features against transformers' extractors, torch.stft references and Kaldi; Griffin-Lim quality."""
from __future__ import annotations

import numpy as np
import pytest

from shared.data import features as F


@pytest.fixture(scope="module")
def wave():
  rng = np.random.default_rng(0)
  t = np.arange(16000) / 16000
  x = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 2 * t)) + 0.05 * rng.standard_normal(len(t))
  return x.astype(np.float32)


def test_whisper_log_mel_matches_transformers(wave):
  from transformers import WhisperFeatureExtractor
  fe = WhisperFeatureExtractor()
  ref = fe(wave, sampling_rate=16000, return_tensors="np")["input_features"][0]  # [80, 3000]
  got = F.whisper_log_mel(wave)
  assert got.shape == (3000, 80)
  np.testing.assert_allclose(got.T, ref, atol=1e-5)
  ref = fe(wave[:12345], sampling_rate=16000, return_tensors="np", padding="longest")["input_features"][0]
  got = F.whisper_log_mel(wave[:12345], n_samples=None)
  assert got.shape == (12345 // 160, 80)
  np.testing.assert_allclose(got.T, ref, atol=1e-5)


def test_whisper_log_mel_jax_matches_host(wave):
  import jax
  batch = np.stack([wave, 0.5 * wave[::-1]])
  fn = jax.jit(lambda a: F.whisper_log_mel_jax(a, n_samples=20000))
  got = np.asarray(fn(batch))
  for b in range(2):  # the clamp at max - 8 is per utterance
    np.testing.assert_allclose(got[b], F.whisper_log_mel(batch[b], n_samples=20000), atol=2e-5)


def test_audioldm_mel_matches_speecht5_extractor(wave):
  from transformers import SpeechT5FeatureExtractor
  # SpeechT5's extractor with AudioLDM's numbers: 64 ms = 1024-sample window, 10 ms = 160 hop,
  # 64 slaney mels 0-8 kHz, magnitude, centre reflect pad; it takes log10, AudioLDM takes ln.
  fe = SpeechT5FeatureExtractor(sampling_rate=16000, num_mel_bins=64, hop_length=10, win_length=64,
                                fmin=0.0, fmax=8000.0, mel_floor=1e-5)
  ref = fe._extract_mel_features(wave) * np.log(10.0)
  got = F.audioldm_mel(wave)
  assert got.shape == (1 + len(wave) // 160, 64)
  np.testing.assert_allclose(got, ref, atol=1e-5)


@pytest.mark.parametrize("mode,sr", [("16k", 16000), ("44k", 44100)])
def test_mmaudio_mel_matches_torch_stft_reference(wave, mode, sr):
  torch = pytest.importorskip("torch")
  import librosa
  cfg = {"16k": F.MMAUDIO_16K, "44k": F.MMAUDIO_44K}[mode]
  x = np.tile(wave, 2)[: sr // 2] * 1.5  # exceeds [-1, 1]: MMAudio clamps
  # MMAudio's MelConverter: clamp, reflect pad (n_fft - hop) / 2, torch.stft(center=False, periodic
  # hann), sqrt(|X|^2 + 1e-9), librosa slaney mel, log10 (16k) or ln (44k) of max(., 1e-5).
  w = torch.from_numpy(x).clamp(-1, 1)[None, None]
  p = (cfg.n_fft - cfg.hop) // 2
  w = torch.nn.functional.pad(w, (p, p), mode="reflect")[0]
  spec = torch.stft(w, cfg.n_fft, hop_length=cfg.hop, win_length=cfg.win,
                    window=torch.hann_window(cfg.win), center=False, return_complex=True)
  mag = torch.sqrt(torch.view_as_real(spec).pow(2).sum(-1) + 1e-9)
  fb = torch.from_numpy(librosa.filters.mel(sr=sr, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=0,
                                            fmax=cfg.fmax))
  mel = torch.clamp(fb @ mag, min=1e-5)
  ref = (torch.log10(mel) if mode == "16k" else torch.log(mel))[0].numpy().T
  got = F.mmaudio_mel(x, mode)
  assert got.shape == ref.shape and got.shape[1] == cfg.n_mels
  np.testing.assert_allclose(got, ref, atol=2e-5)


def test_kaldi_fbank_matches_kaldi_native_fbank(wave):
  knf = pytest.importorskip("kaldi_native_fbank", reason="Kaldi oracle: pip install kaldi-native-fbank")
  opts = knf.FbankOptions()
  opts.frame_opts.dither = 0.0
  opts.frame_opts.samp_freq = 16000
  opts.mel_opts.num_bins = 80
  fb = knf.OnlineFbank(opts)
  fb.accept_waveform(16000, (wave[:9000] * 32768.0).tolist())
  fb.input_finished()
  ref = np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)])
  got = F.kaldi_fbank(wave[:9000])
  assert got.shape == ref.shape == (1 + (9000 - 400) // 160, 80)
  np.testing.assert_allclose(got, ref, atol=3e-4, rtol=1e-5)


def test_griffin_lim_inverts_audioldm_mel(wave):
  target = F.audioldm_mel(wave)
  audio = F.mel_to_audio(target, F.AUDIOLDM, n_iter=32, seed=0)
  assert audio.dtype == np.float32 and abs(len(audio) - len(wave)) <= 160
  err_gl = np.abs(F.audioldm_mel(audio[: len(wave)])[2:-2] - target[2:-2]).mean()
  # Same magnitudes with random phases (no Griffin-Lim iterations) as the baseline to beat.
  noise = F.mel_to_audio(target, F.AUDIOLDM, n_iter=0, seed=0)
  err_rand = np.abs(F.audioldm_mel(noise[: len(wave)])[2:-2] - target[2:-2]).mean()
  assert err_gl < 0.5 * err_rand, (err_gl, err_rand)
  assert err_gl < 0.5  # mean |ln mel| error, i.e. within a factor ~1.6 per bin on average
