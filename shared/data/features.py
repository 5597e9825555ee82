"""Audio features: Whisper log-mel, AudioLDM mel, MMAudio mel, Kaldi fbank; Griffin-Lim inversion.

Host versions are numpy (float32, one utterance [S] -> [T, n_mels], time-major); `whisper_log_mel_jax`
is the same Whisper log-mel as a jittable batched function ([B, S] -> [B, T, 80]) for computing
features on the accelerator. benchmarks/features.py measures both (see its docstring for the choice).
Note: HF's WhisperFeatureExtractor returns [80, T]; ours is its transpose.

Conventions (what each model family was trained with):
  whisper   16 kHz, n_fft 400, hop 160, periodic hann, centre reflect pad, power 2, 80 slaney mels
            0-8 kHz, log10(max(., 1e-10)), last frame dropped, clamp at max - 8, (x + 4) / 4.
  audioldm  16 kHz, n_fft = win = 1024, hop 160, centre reflect pad (TacotronSTFT), magnitude,
            64 slaney mels 0-8 kHz, ln(max(., 1e-5)).
  mmaudio   (n_fft - hop) / 2 reflect pad, no centring, sqrt(|X|^2 + 1e-9), slaney mels;
            16k: 80 mels, 1024 / 256, 0-8 kHz, log10(max(., 1e-5));
            44k: 128 mels, 2048 / 512, 0-22.05 kHz, ln(max(., 1e-5)).
  fbank     Kaldi: 25 / 10 ms povey window, snip edges, DC removal, pre-emphasis 0.97, FFT 512,
            power, kaldi mel scale 20 Hz - Nyquist, ln(max(., float32 eps)); input scaled to int16.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from shared.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class MelConfig:
  sample_rate: int
  n_fft: int
  hop: int
  win: int
  n_mels: int
  fmin: float
  fmax: float
  pad: str            # "center": n_fft // 2 reflect each side; "half": (n_fft - hop) // 2 reflect
  power: float        # 1 magnitude, 2 power
  mag_eps: float      # added under the sqrt for magnitude (MMAudio 1e-9), 0 otherwise
  log: str            # "log10" | "ln"
  floor: float        # clamp before the log


WHISPER = MelConfig(16000, 400, 160, 400, 80, 0.0, 8000.0, "center", 2.0, 0.0, "log10", 1e-10)
AUDIOLDM = MelConfig(16000, 1024, 160, 1024, 64, 0.0, 8000.0, "center", 1.0, 0.0, "ln", 1e-5)
MMAUDIO_16K = MelConfig(16000, 1024, 256, 1024, 80, 0.0, 8000.0, "half", 1.0, 1e-9, "log10", 1e-5)
MMAUDIO_44K = MelConfig(44100, 2048, 512, 2048, 128, 0.0, 22050.0, "half", 1.0, 1e-9, "ln", 1e-5)
PRESETS = {"whisper": WHISPER, "audioldm": AUDIOLDM, "mmaudio_16k": MMAUDIO_16K,
           "mmaudio_44k": MMAUDIO_44K}


@functools.lru_cache(maxsize=16)
def mel_filters(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
  """Slaney-scale, slaney-normalised triangular filters [n_mels, n_fft // 2 + 1] float32 (librosa)."""
  import librosa
  return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
                             htk=False, norm="slaney").astype(np.float32)


def _window(cfg: MelConfig) -> np.ndarray:
  """Periodic hann of length win, zero-padded centred to n_fft (torch.stft's convention)."""
  n = np.arange(cfg.win)
  w = 0.5 - 0.5 * np.cos(2 * np.pi * n / cfg.win)
  left = (cfg.n_fft - cfg.win) // 2
  return np.pad(w, (left, cfg.n_fft - cfg.win - left)).astype(np.float32)


def _pad_amount(cfg: MelConfig) -> int:
  return cfg.n_fft // 2 if cfg.pad == "center" else (cfg.n_fft - cfg.hop) // 2


def _frames(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
  n = 1 + (len(x) - n_fft) // hop
  return np.lib.stride_tricks.as_strided(x, (n, n_fft), (x.strides[0] * hop, x.strides[0]),
                                         writeable=False)


def stft_magnitude(audio: np.ndarray, cfg: MelConfig) -> np.ndarray:
  """|STFT|^power [T, n_fft // 2 + 1] float32 with cfg's padding and window."""
  x = np.asarray(audio, np.float32)
  p = _pad_amount(cfg)
  if x.ndim != 1 or len(x) <= p:
    raise ConfigError(f"audio must be [S] with S > {p} samples for this feature, got {x.shape}")
  x = np.pad(x, (p, p), mode="reflect")
  spec = np.fft.rfft(_frames(x, cfg.n_fft, cfg.hop) * _window(cfg), axis=-1)
  sq = spec.real.astype(np.float32) ** 2 + spec.imag.astype(np.float32) ** 2
  if cfg.power == 2.0:
    return sq
  return np.sqrt(sq + cfg.mag_eps) ** cfg.power


def log_mel(audio: np.ndarray, cfg: MelConfig) -> np.ndarray:
  """Generic log-mel [T, n_mels] float32 for a MelConfig (no model-specific normalisation)."""
  mel = stft_magnitude(audio, cfg) @ mel_filters(cfg.sample_rate, cfg.n_fft, cfg.n_mels,
                                                 cfg.fmin, cfg.fmax).T
  mel = np.maximum(mel, cfg.floor)
  return (np.log10(mel) if cfg.log == "log10" else np.log(mel)).astype(np.float32)


def whisper_log_mel(audio: np.ndarray, n_samples: int | None = 480000) -> np.ndarray:
  """Whisper's input features [T, 80]: audio [S] float32 at 16 kHz, zero-padded / cut to n_samples
  (480000 = 30 s, T = 3000) unless None (then T = S // 160)."""
  x = np.asarray(audio, np.float32)
  if n_samples is not None:
    x = np.pad(x[:n_samples], (0, max(n_samples - len(x), 0)))
  spec = log_mel(x, WHISPER)[:-1]
  spec = np.maximum(spec, spec.max() - 8.0)
  return ((spec + 4.0) / 4.0).astype(np.float32)


def audioldm_mel(audio: np.ndarray) -> np.ndarray:
  """AudioLDM's log-mel [1 + S // 160, 64] (TacotronSTFT, 16 kHz)."""
  return log_mel(audio, AUDIOLDM)


def mmaudio_mel(audio: np.ndarray, mode: str = "16k") -> np.ndarray:
  """MMAudio's mel [T, 80] (16k) or [T, 128] (44k); audio clamped to [-1, 1] like MMAudio."""
  cfg = {"16k": MMAUDIO_16K, "44k": MMAUDIO_44K}.get(mode)
  if cfg is None:
    raise ConfigError(f"mmaudio mel mode must be '16k' or '44k', got {mode!r}")
  return log_mel(np.clip(np.asarray(audio, np.float32), -1.0, 1.0), cfg)


@functools.lru_cache(maxsize=8)
def _kaldi_mel_banks(n_mels: int, n_fft: int, sample_rate: int, low: float, high: float) -> np.ndarray:
  mel = lambda f: 1127.0 * np.log(1.0 + np.asarray(f, np.float64) / 700.0)  # noqa: E731
  high = high if high > 0 else sample_rate / 2 + high
  lo, hi = mel(low), mel(high)
  delta = (hi - lo) / (n_mels + 1)
  left = lo + delta * np.arange(n_mels)[:, None]
  centre, right = left + delta, left + 2 * delta
  m = mel(sample_rate / n_fft * np.arange(n_fft // 2))[None, :]
  up, down = (m - left) / (centre - left), (right - m) / (right - centre)
  banks = np.maximum(0.0, np.minimum(up, down))
  return np.pad(banks, ((0, 0), (0, 1))).astype(np.float32)  # Nyquist bin gets no weight


def kaldi_fbank(audio: np.ndarray, sample_rate: int = 16000, n_mels: int = 80, *,
                frame_ms: float = 25.0, shift_ms: float = 10.0, scale: float = 32768.0,
                low_freq: float = 20.0, high_freq: float = 0.0, preemph: float = 0.97) -> np.ndarray:
  """Kaldi-compatible log fbank [T, n_mels], T = 1 + (S - frame) // shift (snip_edges), no dither.
  scale multiplies the waveform first (Kaldi tools see int16 values)."""
  x = np.asarray(audio, np.float64) * scale
  flen, shift = int(sample_rate * frame_ms / 1000), int(sample_rate * shift_ms / 1000)
  if len(x) < flen:
    raise ConfigError(f"kaldi_fbank needs at least {flen} samples, got {len(x)}")
  fr = _frames(np.ascontiguousarray(x), flen, shift).copy()
  fr -= fr.mean(axis=1, keepdims=True)
  fr[:, 1:] -= preemph * fr[:, :-1].copy()
  fr[:, 0] -= preemph * fr[:, 0]
  n = np.arange(flen)
  fr *= (0.5 - 0.5 * np.cos(2 * np.pi * n / (flen - 1))) ** 0.85
  n_fft = 1 << (flen - 1).bit_length()
  power = np.abs(np.fft.rfft(fr, n_fft, axis=1)) ** 2
  mel = power @ _kaldi_mel_banks(n_mels, n_fft, sample_rate, low_freq, high_freq).T.astype(np.float64)
  return np.log(np.maximum(mel, np.finfo(np.float32).eps)).astype(np.float32)


# ----------------------------------------------------------------------------- on device (JAX)

def whisper_log_mel_jax(audio, n_samples: int | None = 480000):
  """Jittable Whisper log-mel: audio [B, S] float32 -> [B, T, 80] float32, same maths as
  `whisper_log_mel` (framing by gather, rfft, float32 mel matmul at highest precision)."""
  import jax
  import jax.numpy as jnp
  cfg = WHISPER
  x = jnp.asarray(audio, jnp.float32)
  if n_samples is not None:
    x = x[:, :n_samples]
    x = jnp.pad(x, ((0, 0), (0, n_samples - x.shape[1])))
  p = cfg.n_fft // 2
  x = jnp.pad(x, ((0, 0), (p, p)), mode="reflect")
  n = 1 + (x.shape[1] - cfg.n_fft) // cfg.hop
  idx = np.arange(n)[:, None] * cfg.hop + np.arange(cfg.n_fft)[None, :]
  frames = x[:, idx] * jnp.asarray(_window(cfg))          # [B, T+1, n_fft]
  spec = jnp.fft.rfft(frames, axis=-1)
  power = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2
  fb = jnp.asarray(mel_filters(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax).T)
  mel = jnp.einsum("btf,fm->btm", power, fb, precision=jax.lax.Precision.HIGHEST)
  spec = jnp.log10(jnp.maximum(mel, cfg.floor))[:, :-1]
  spec = jnp.maximum(spec, spec.max(axis=(1, 2), keepdims=True) - 8.0)
  return (spec + 4.0) / 4.0


# ----------------------------------------------------------------------------- inversion

def griffin_lim(magnitude: np.ndarray, cfg: MelConfig, n_iter: int = 32, seed: int = 0) -> np.ndarray:
  """Griffin-Lim (librosa, fast-GL momentum 0.99): magnitude [T, F] (|STFT|, centre padding) ->
  audio [hop * (T - 1)] float32."""
  import librosa
  window = _window(cfg)
  return librosa.griffinlim(np.asarray(magnitude, np.float32).T, n_iter=n_iter, hop_length=cfg.hop,
                            win_length=cfg.n_fft, n_fft=cfg.n_fft, window=window, center=True,
                            pad_mode="reflect", random_state=np.random.default_rng(seed)
                            ).astype(np.float32)


def mel_to_audio(log_mel_spec: np.ndarray, cfg: MelConfig = AUDIOLDM, n_iter: int = 32,
                 seed: int = 0) -> np.ndarray:
  """Invert a `log_mel` output [T, n_mels] (for tiny configs without a vocoder): undo the log, map
  mel -> linear magnitude by non-negative least squares (librosa), then Griffin-Lim."""
  import librosa
  mel = np.asarray(log_mel_spec, np.float64)
  mel = 10.0 ** mel if cfg.log == "log10" else np.exp(mel)
  fb = mel_filters(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax).astype(np.float64)
  mag = librosa.util.nnls(fb, mel.T)  # [F, T]
  mag = mag ** (1.0 / cfg.power)
  return griffin_lim(mag.T, dataclasses.replace(cfg, pad="center"), n_iter=n_iter, seed=seed)


# ------------------------------------------------------------------------------------- mel meets a vocoder

def vocoder_mel_scale(vocoder_log: str | None, mel_log: str) -> float:
  """Factor taking a log-mel of base `mel_log` ("log10" | "ln") to the base the vocoder takes (its config's
  mel_log; None: unstated, fed as is): ln 10 for log10 -> ln, 1 / ln 10 for ln -> log10, else 1. One rule for the
  JAX codec (shared.models.av_codec) and the JAX-free PyTorch pipelines."""
  import math
  if vocoder_log is None or vocoder_log == mel_log:
    return 1.0
  return math.log(10.0) if (mel_log, vocoder_log) == ("log10", "ln") else 1.0 / math.log(10.0)


def check_vocoder_mel(h, mel: MelConfig, vocoder: str, codec: str) -> None:
  """ConfigError naming both when a vocoder's config (a mapping in NVIDIA BigVGAN's keys: num_mels,
  sampling_rate, hop_size and, when stated, n_fft, win_size, fmin, fmax (None = Nyquist)) was trained on another
  mel than the codec's."""
  get = h.get
  fmax = get("fmax") if get("fmax") is not None else (get("sampling_rate") or 0) / 2
  pairs = [("num_mels", get("num_mels"), "n_mels", mel.n_mels), ("sampling_rate", get("sampling_rate"),
           "sample_rate", mel.sample_rate), ("hop_size", get("hop_size"), "hop", mel.hop),
           ("n_fft", get("n_fft"), "n_fft", mel.n_fft), ("win_size", get("win_size"), "win", mel.win),
           ("fmin", get("fmin"), "fmin", mel.fmin), ("fmax", fmax, "fmax", mel.fmax)]
  bad = [f"{a} {x} vs {b} {y}" for a, x, b, y in pairs if x is not None and float(x) != float(y)]
  if bad:
    raise ConfigError(f"vocoder {vocoder} (config.json) was trained on another mel than the audio codec {codec}'s "
                      f"mel config: {'; '.join(bad)} (vocoder vs codec)")
