"""Text metrics: WER / CER (jiwer), Chinese CER, BLEU-4 (sacrebleu), ROUGE-L (rouge-score).

All corpus-level: error counts are summed over utterances before dividing, (S + D + I) / N with
N the number of reference tokens (words or characters). Inputs are lists of strings, references first.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Sequence

_WS = re.compile(r"\s+")


@dataclasses.dataclass(frozen=True)
class ErrorCounts:
  """Corpus-summed edit operations. rate = (S + D + I) / N, N = S + D + hits (reference length)."""
  substitutions: int
  deletions: int
  insertions: int
  hits: int

  @property
  def n_ref(self) -> int:
    return self.substitutions + self.deletions + self.hits

  @property
  def rate(self) -> float:
    errors = self.substitutions + self.deletions + self.insertions
    if self.n_ref == 0:
      return 0.0 if errors == 0 else float("inf")
    return errors / self.n_ref


def _check(refs: Sequence[str], hyps: Sequence[str]) -> tuple[list[str], list[str]]:
  if isinstance(refs, str) or isinstance(hyps, str):
    refs, hyps = [refs] if isinstance(refs, str) else refs, [hyps] if isinstance(hyps, str) else hyps
  refs, hyps = list(refs), list(hyps)
  if len(refs) != len(hyps):
    raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
  return refs, hyps


def _counts(refs: list[str], hyps: list[str], unit: str) -> ErrorCounts:
  import jiwer
  s = d = i = h = 0
  keep_r, keep_h = [], []
  for r, y in zip(refs, hyps):
    units_r = r.split() if unit == "word" else list(r)
    units_h = y.split() if unit == "word" else list(y)
    if not units_r or (unit == "word" and not r.strip()):
      i += len(units_h)  # jiwer refuses empty references: everything hypothesised is inserted.
    elif not units_h or (unit == "word" and not y.strip()):
      d += len(units_r)
    else:
      keep_r.append(r)
      keep_h.append(y)
  if keep_r:
    out = (jiwer.process_words if unit == "word" else jiwer.process_characters)(keep_r, keep_h)
    s, d, i, h = s + out.substitutions, d + out.deletions, i + out.insertions, h + out.hits
  return ErrorCounts(s, d, i, h)


def word_errors(refs: Sequence[str], hyps: Sequence[str]) -> ErrorCounts:
  """Corpus word edit counts (whitespace tokenisation, case-sensitive: normalise before)."""
  return _counts(*_check(refs, hyps), unit="word")


def char_errors(refs: Sequence[str], hyps: Sequence[str], *, strip_spaces: bool = False) -> ErrorCounts:
  """Corpus character edit counts; strip_spaces removes all whitespace first (Chinese)."""
  refs, hyps = _check(refs, hyps)
  if strip_spaces:
    refs, hyps = [_WS.sub("", r) for r in refs], [_WS.sub("", y) for y in hyps]
  else:
    refs, hyps = [_WS.sub(" ", r).strip() for r in refs], [_WS.sub(" ", y).strip() for y in hyps]
  return _counts(refs, hyps, unit="char")


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
  """Word error rate, corpus-summed (S+D+I)/N."""
  return word_errors(refs, hyps).rate


def cer(refs: Sequence[str], hyps: Sequence[str], *, strip_spaces: bool = False) -> float:
  """Character error rate, corpus-summed. Spaces count as characters unless strip_spaces."""
  return char_errors(refs, hyps, strip_spaces=strip_spaces).rate


def chinese_cer(refs: Sequence[str], hyps: Sequence[str]) -> float:
  """CER for Chinese: all whitespace removed, then corpus-summed (S+D+I)/N over characters."""
  return char_errors(refs, hyps, strip_spaces=True).rate


def bleu(refs: Sequence[str], hyps: Sequence[str], *, tokenize: str = "13a") -> float:
  """Corpus BLEU-4 (sacrebleu, 0-100). tokenize '13a' (English, WMT default) or 'zh' (Chinese)."""
  import sacrebleu
  refs, hyps = _check(refs, hyps)
  return float(sacrebleu.corpus_bleu(hyps, [refs], tokenize=tokenize).score)


class CharTokenizer:
  """rouge-score tokenizer giving one token per non-space character (its default drops non-ASCII)."""

  def tokenize(self, text: str) -> list[str]:
    return [c for c in text if not c.isspace()]


def rouge_l(refs: Sequence[str], hyps: Sequence[str], *, chinese: bool = False) -> float:
  """Mean ROUGE-L F-measure over utterance pairs (0-1). chinese=True scores characters."""
  from rouge_score import rouge_scorer
  refs, hyps = _check(refs, hyps)
  scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=CharTokenizer() if chinese else None)
  if not refs:
    return 0.0
  return float(sum(scorer.score(r, y)["rougeL"].fmeasure for r, y in zip(refs, hyps)) / len(refs))
