"""Audio metrics: STOI (pystoi), DNSMOS (speechmos, optional extra), speaker similarity
(Resemblyzer, optional extra). Inputs are mono float32 [S] arrays."""
from __future__ import annotations

import numpy as np

from shared.data.media import resample


class MissingExtraError(ImportError):
  """An optional metric's package is not installed; the message names the pip extra."""


def _need(module: str, extra: str, what: str):
  import importlib
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise MissingExtraError(
        f"{what} needs the '{module}' package: pip install 'avspeech-jax[{extra}]'") from e


def stoi(reference: np.ndarray, degraded: np.ndarray, sample_rate: int, *,
         extended: bool = False) -> float:
  """Short-time objective intelligibility (pystoi). Lengths are cut to the shorter signal."""
  from pystoi import stoi as _stoi
  n = min(len(reference), len(degraded))
  return float(_stoi(np.asarray(reference[:n], np.float64), np.asarray(degraded[:n], np.float64),
                     int(sample_rate), extended=extended))


def dnsmos(audio: np.ndarray, sample_rate: int) -> dict[str, float]:
  """DNSMOS P.835 (speechmos' bundled ONNX models): {'ovrl_mos','sig_mos','bak_mos','p808_mos'}.
  Needs the [dnsmos] extra (speechmos, onnxruntime). Audio is resampled to 16 kHz."""
  _need("onnxruntime", "dnsmos", "DNSMOS")
  speechmos = _need("speechmos.dnsmos", "dnsmos", "DNSMOS")
  x = resample(np.asarray(audio, np.float32), sample_rate, 16000)
  peak = float(np.max(np.abs(x))) if x.size else 0.0
  if peak > 1.0:
    x = x / peak
  out = speechmos.run(x, sr=16000)
  return {k: float(v) for k, v in out.items() if k.endswith("mos")}


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
  a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
  return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


_ENCODER = None


def speaker_similarity(audio_a: np.ndarray, audio_b: np.ndarray, sample_rate: int) -> float:
  """Cosine similarity of Resemblyzer GE2E utterance embeddings (weights ship inside the package).
  Needs the [speaker] extra (Resemblyzer)."""
  global _ENCODER
  resemblyzer = _need("resemblyzer", "speaker", "speaker similarity")
  if _ENCODER is None:
    _ENCODER = resemblyzer.VoiceEncoder(device="cpu", verbose=False)
  emb = [_ENCODER.embed_utterance(resemblyzer.preprocess_wav(
      resample(np.asarray(x, np.float32), sample_rate, 16000), source_sr=16000))
         for x in (audio_a, audio_b)]
  return cosine_similarity(*emb)
