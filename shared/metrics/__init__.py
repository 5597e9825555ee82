"""WER/CER, BLEU/ROUGE, STOI, DNSMOS, speaker similarity, lip-sync (LSE-C/D).

Text metrics are corpus-level; Chinese CER strips whitespace. DNSMOS and speaker similarity need the
[dnsmos] / [speaker] extras and raise `MissingExtraError` naming the extra when absent. The SyncNet
model lives in `shared.metrics.sync` (imported lazily: it pulls in Flax).
"""
from __future__ import annotations

from shared.metrics.audio import MissingExtraError, cosine_similarity, dnsmos, speaker_similarity, stoi
from shared.metrics.text import (CharTokenizer, ErrorCounts, bleu, cer, char_errors, chinese_cer, rouge_l,
                                 wer, word_errors)

__all__ = [
    "MissingExtraError", "cosine_similarity", "dnsmos", "speaker_similarity", "stoi",
    "CharTokenizer", "ErrorCounts", "bleu", "cer", "char_errors", "chinese_cer", "rouge_l", "wer",
    "word_errors", "lse",
]


def lse(video_emb, audio_emb, vshift: int = 15):
  """LSE-D / LSE-C / offset from SyncNet embeddings (see shared.metrics.sync.lse)."""
  from shared.metrics.sync import lse as _lse
  return _lse(video_emb, audio_emb, vshift)
