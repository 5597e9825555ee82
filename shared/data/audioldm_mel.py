"""AudioLDM's mel front end (host side, numpy, not jitted): waveform [N] float32 at 16 kHz -> log-mel [T, 64].

What AudioLDM computes (haoheliu/AudioLDM-training-finetuning, utilities/data/dataset.py, mel_spectrogram_train;
the same as HiFi-GAN's meldataset.mel_spectrogram that its vocoder was trained on):
  wav      resampled to 16 kHz, normalize_wav (x - mean(x)) / (max|x| + 1e-8) * 0.5, zero-padded (at the end)
           or cut to duration * 16000 samples (10.24 s -> 163840)
  stft     reflect pad (n_fft - hop) / 2 = 432 samples each side, torch.stft(n_fft 1024, hop 160, win 1024,
           periodic hann, center=False), magnitude |X| (not power)        -> T = N // 160 frames
  mel      librosa_mel_fn(sr 16000, n_fft 1024, n_mels 64, fmin 0, fmax 8000): slaney mel scale, slaney
           (area) normalisation (librosa's defaults; shared.data.features.mel_filters)
  log      ln(max(mel, 1e-5))   (dynamic_range_compression, C = 1)
  frames   _pad_spec: zero-pad (0.0 in the log domain, i.e. magnitude 1, not silence) or cut to target_length
           frames (1024 for 10.24 s), and drop the last mel bin if the count were odd (64 is even)
The released `audioldm` inference package computes the same features through TacotronSTFT, whose STFT pads
n_fft / 2 = 512 each side (centred frames, 1 + N // 160 of them, cut back to the target length): frame
centres move by hop / 2 = 80 samples. `log_mel(..., center=True)` gives that variant (= shared.data.features.
audioldm_mel). This module reuses shared.data.features' STFT and mel filterbank (`MelConfig` with pad "half").

Normalisation, -4.63 / 2.74: AudioLDM does NOT normalise the log-mel. Its VAE encodes the raw log-mel
([B, 1, T, 64]) and decodes back to it; the diffusion model runs on the VAE latents scaled by the VAE's
scaling_factor (scale_by_std); the vocoder (SpeechT5HifiGan, normalize_before False) takes the raw log-mel:
diffusers' AudioLDMPipeline does `mel = vae.decode(latents / scaling_factor)` then `vocoder(mel.squeeze(1))`.
No division by 2 * std (that is the AST/AudioMAE fbank convention, (x - mean) / (2 * std), with other
numbers) appears in AudioLDM. Mean -4.63 and std 2.74 are the statistics of that raw log-mel (public AudioLDM
users quote them as "mean: -4.63, std: 2.74" beside the VAE input). `normalize_mel` / `denormalize_mel`
((x - mean) / std and back) are for a model trained from scratch on unit-scale mels; never feed their output
to AudioLDM's pretrained VAE or vocoder.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from shared.data import features
from shared.errors import ConfigError

SAMPLE_RATE = 16000
HOP = 160
N_MELS = 64
TARGET_FRAMES = 1024           # 10.24 s
MEL_MEAN, MEL_STD = -4.63, 2.74
LOG_FLOOR = float(np.log(1e-5))   # the log-mel of silence

# (n_fft - hop) / 2 reflect padding, no centring: T = N // 160 (features.AUDIOLDM is the centred variant)
AUDIOLDM_MEL = dataclasses.replace(features.AUDIOLDM, pad="half")


def normalize_wav(wav: np.ndarray) -> np.ndarray:
  """AudioLDM's loudness normalisation: wav [N] -> [N] float32, zero mean, peak 0.5."""
  x = np.asarray(wav, np.float64)
  x = x - x.mean()
  return (0.5 * x / (np.abs(x).max() + 1e-8)).astype(np.float32)


def pad_or_crop_wav(wav: np.ndarray, num_samples: int) -> np.ndarray:
  """wav [N] -> [num_samples] float32: zeros appended or the tail cut (AudioLDM's pad_wav, start 0)."""
  x = np.asarray(wav, np.float32)
  if x.ndim != 1:
    raise ConfigError(f"audio must be [N], got shape {x.shape}")
  return np.pad(x[:num_samples], (0, max(num_samples - len(x), 0)))


def pad_spec(mel: np.ndarray, target_frames: int, pad_value: float = 0.0) -> np.ndarray:
  """log-mel [T, M] -> [target_frames, M]: rows of `pad_value` appended or the tail cut (AudioLDM's
  _pad_spec pads with 0.0 in the log domain; pass LOG_FLOOR for silence)."""
  mel = np.asarray(mel, np.float32)
  p = target_frames - mel.shape[0]
  if p < 0:
    return mel[:target_frames]
  return np.pad(mel, ((0, p), (0, 0)), constant_values=pad_value) if p else mel


def log_mel(wav: np.ndarray, target_frames: int | None = None, *, center: bool = False) -> np.ndarray:
  """AudioLDM log-mel: wav [N] float32 at 16 kHz (in [-1, 1]; see normalize_wav) -> [T, 64] float32.

  T = N // 160 (center=False, the (n_fft - hop) / 2 reflect padding AudioLDM trains with; N > 432) or
  1 + N // 160 (center=True, TacotronSTFT's n_fft / 2 padding; N > 512). With target_frames, the waveform is
  first zero-padded / cut to target_frames * 160 samples (as AudioLDM pads the waveform to its duration), then
  the frames are cut / zero-padded to exactly target_frames (pad_spec). Not normalised (see the module doc)."""
  x = np.asarray(wav, np.float32)
  if x.ndim != 1:
    raise ConfigError(f"audio must be [N], got shape {x.shape}")
  if target_frames is not None:
    x = pad_or_crop_wav(x, target_frames * HOP)
  mel = features.log_mel(x, features.AUDIOLDM if center else AUDIOLDM_MEL)
  return pad_spec(mel, target_frames) if target_frames is not None else mel


def normalize_mel(mel: np.ndarray, mean: float = MEL_MEAN, std: float = MEL_STD) -> np.ndarray:
  """(mel - mean) / std, same shape (optional; AudioLDM itself does not normalise)."""
  return ((np.asarray(mel, np.float32) - mean) / std).astype(np.float32)


def denormalize_mel(x: np.ndarray, mean: float = MEL_MEAN, std: float = MEL_STD) -> np.ndarray:
  """Inverse of normalize_mel: x * std + mean, same shape (back to the raw log-mel the vocoder takes)."""
  return (np.asarray(x, np.float32) * std + mean).astype(np.float32)
