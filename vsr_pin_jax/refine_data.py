"""VALLR-Pin stage 2 data: error-aware records, the one instruction template, tokenisation.

Records (the contract with stage 1): one JSON object per line of a .jsonl file,

    {"id": str, "pinyin": "ni hao ..." (predicted toneless pinyin, space separated),
     "nbest": ["候选一", ...] (N-best character hypotheses, best first), "nbest_scores": [float, ...],
     "truth": "正确句子", "cer": float (CER of nbest[0] vs truth), "stage": "early" | "middle" | "late"}

`stage` names the stage-1 checkpoint (early / middle / late in training, or another name such as "step500") that
decoded the utterance: the paper decodes the training set with several checkpoints so the refiner sees a spread of
error rates; evaluation reports CERs per stage. Extra keys are
kept and ignored. `read_records` / `write_records` check every record; a bad one raises DataError naming the
file, the line and the key.

The instruction template (the only one; training, evaluation and generation all use it). The prompt shows the
predicted pinyin and the numbered N-best list (at most `nbest` entries, best first) and asks for the corrected
sentence; the answer is the truth followed by the tokenizer's eos token:

    根据唇语识别的拼音和候选句子，写出正确的句子。
    拼音：ni hao ma
    候选：
    1. 你好吗
    2. 你号吗
    3. 尼好吗
    正确句子：

With a tokenizer that has a chat template (Qwen3-Instruct) that text is the user message, rendered with
`apply_chat_template(..., add_generation_prompt=True, enable_thinking=False)`; the answer follows the assistant
header. Otherwise (plain) the prompt is [bos] + the text. Labels are -100 on every prompt token and on padding, the
answer tokens elsewhere; they are aligned with input_ids (the loss compares logits[:, :-1] with labels[:, 1:]).

The pretraining stand-in (refiner stage "pretrain": no pretrained LLM exists here) renders a SynthCue sentence
through the template's answer side: [bos] + "正确句子：" + sentence + eos, labels on the sentence and eos; a share
of the examples (refiner config data.pretrain_repeat) repeats "正确句子：" + sentence twice before the eos.

Tokenizers: a local HF tokenizer directory (Qwen3: `shared.text.tokenizers.load_tokenizer`), or for the tiny
configs `synthcue_tokenizer()`: a word-level table over the specials, the template's symbols, the 396 toneless
pinyin syllables and every SynthCue character, every non-ASCII character its own token.

Synthetic records (`synthetic_records`, and `python -m vsr_pin_jax.refine_data --out DIR`): SynthCue sentences
with characters replaced by their homophones (and, less often, by characters of lip-identical syllables), N
distinct hypotheses per utterance, per-stage error rates - the stand-in for decoding with stage-1 checkpoints
when none exist (tests, the tiny configs).
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Iterable, Sequence

import numpy as np

from shared.errors import DataError

IGNORE = -100
STAGES = ("early", "middle", "late")
INSTRUCTION = "根据唇语识别的拼音和候选句子，写出正确的句子。"
PINYIN_HEADER = "拼音："
NBEST_HEADER = "候选："
ANSWER_HEADER = "正确句子："
MAX_NBEST = 10                     # numbers the tiny tokenizer knows ("1." .. "10.")
REQUIRED = {"id": "a string", "pinyin": "a string of space-separated pinyin syllables",
            "nbest": "a non-empty list of strings", "nbest_scores": "a list of numbers as long as nbest",
            "truth": "a string", "cer": "a number >= 0",
            "stage": f"a checkpoint name: one of {list(STAGES)} or another non-empty string (e.g. 'step500')"}
NON_ASCII = r"[^\x00-\x7f]"        # the tiny tokenizer isolates every non-ASCII character


# --------------------------------------------------------------------------- records

def check_record(rec: Any, *, path: str | None = None, line: int | None = None) -> dict:
  """The record itself when it follows the contract; DataError naming the file, line and key otherwise."""
  at = f"line {line}: " if line is not None else ""
  if not isinstance(rec, dict):
    raise DataError(f"{at}expected a JSON object (a record), got {type(rec).__name__}", path=path)
  for key, want in REQUIRED.items():
    if key not in rec:
      raise DataError(f"{at}record {rec.get('id', '?')!r} has no key {key!r} (expected {want})", path=path,
                      key=key)
  v = rec

  def bad(key):
    raise DataError(f"{at}record {rec.get('id')!r}: {key}={v[key]!r} is not {REQUIRED[key]}", path=path, key=key)

  for key in ("id", "pinyin", "truth"):
    if not isinstance(v[key], str):
      bad(key)
  if (not isinstance(v["nbest"], list) or not v["nbest"] or not all(isinstance(h, str) for h in v["nbest"])):
    bad("nbest")
  s = v["nbest_scores"]
  if (not isinstance(s, list) or len(s) != len(v["nbest"])
      or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in s)):
    bad("nbest_scores")
  if (not isinstance(v["cer"], (int, float)) or isinstance(v["cer"], bool) or not math.isfinite(v["cer"])
      or v["cer"] < 0):
    bad("cer")
  if not isinstance(v["stage"], str) or not v["stage"]:
    bad("stage")
  return rec


def read_records(path: str) -> list[dict]:
  """A .jsonl file of records (blank lines skipped) -> list of dicts, each checked (DataError: file, line, key)."""
  if not path:
    raise DataError("no record file given (an empty path)", path=path)
  if not os.path.isfile(path):
    raise DataError("record file does not exist", path=path)
  out = []
  with open(path, encoding="utf-8") as f:
    for n, text in enumerate(f, 1):
      if not text.strip():
        continue
      try:
        rec = json.loads(text)
      except json.JSONDecodeError as e:
        raise DataError(f"line {n}: not valid JSON ({e.msg} at column {e.colno})", path=path) from None
      out.append(check_record(rec, path=path, line=n))
  if not out:
    raise DataError("record file holds no records", path=path)
  return out


def write_records(path: str, records: Iterable[dict]) -> int:
  """Writes records (checked) as UTF-8 JSON lines, atomically; returns how many."""
  records = list(records)
  for i, r in enumerate(records):
    check_record(r, path=path, line=i + 1)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    for r in records:
      f.write(json.dumps(r, ensure_ascii=False) + "\n")
  os.replace(tmp, path)
  return len(records)


# --------------------------------------------------------------------------- the template

def render_prompt(record: dict, nbest: int | None = None) -> str:
  """The instruction text of a record (module docstring): pinyin, numbered N-best (at most `nbest`), header.
  Only "pinyin" (None / "" allowed: a model without a pinyin decoder) and "nbest" are read."""
  hyps = list(record["nbest"])[:nbest if nbest is not None else len(record["nbest"])]
  lines = [INSTRUCTION, PINYIN_HEADER + " " + " ".join((record.get("pinyin") or "").split()), NBEST_HEADER]
  lines += [f"{k}. {h}" for k, h in enumerate(hyps, 1)]
  lines.append(ANSWER_HEADER)
  return "\n".join(lines)


def has_chat_template(tokenizer) -> bool:
  return bool(getattr(tokenizer, "chat_template", None))


def _encode(tokenizer, text: str) -> list[int]:
  return list(tokenizer.encode(text, add_special_tokens=False))


def _bos(tokenizer) -> list[int]:
  return [] if tokenizer.bos_token_id is None else [int(tokenizer.bos_token_id)]


def eos_id(tokenizer) -> int:
  if tokenizer.eos_token_id is None:
    raise DataError(f"the tokenizer {type(tokenizer).__name__} has no eos token (the answer must end with one)")
  return int(tokenizer.eos_token_id)


def prompt_ids(tokenizer, record: dict, nbest: int | None = None) -> list[int]:
  """Token ids of the prompt: the chat template's user turn + generation prompt, or [bos] + text (plain)."""
  text = render_prompt(record, nbest)
  if has_chat_template(tokenizer):
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True, enable_thinking=False)
    return _encode(tokenizer, rendered)
  return _bos(tokenizer) + _encode(tokenizer, text)


def answer_ids(tokenizer, text: str) -> list[int]:
  """The answer side: the sentence's tokens + eos."""
  return _encode(tokenizer, text) + [eos_id(tokenizer)]


def pad_id(tokenizer) -> int:
  return int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id(tokenizer))


def _fit_prompt(tokenizer, record: dict, budget: int, nbest: int | None) -> list[int]:
  """The prompt with as many hypotheses (<= nbest) as fit in `budget` tokens; DataError if even one does not."""
  k = min(len(record["nbest"]), nbest or len(record["nbest"]))
  while True:
    ids = prompt_ids(tokenizer, record, k)
    if len(ids) <= budget or k == 1:
      break
    k -= 1
  if len(ids) > budget:
    raise DataError(f"record {record.get('id')!r}: the prompt with one hypothesis is {len(ids)} tokens, more than "
                    f"the {budget} available (raise data.max_len)", key="max_len")
  return ids


def _pad(seq: Sequence[int], length: int, value: int) -> np.ndarray:
  out = np.full((length,), value, np.int32)
  out[:len(seq)] = seq
  return out


def encode_record(tokenizer, record: dict, max_len: int, *, nbest: int | None = None) -> dict:
  """-> {"input_ids": [max_len] int32 (right-padded), "labels": [max_len] int32 (-100 on the prompt and the
  padding, the answer's ids on the answer), "attention_mask": [max_len] int32}. Hypotheses beyond `nbest`, and
  from the end while the example does not fit in max_len, are left out; DataError when even one does not fit."""
  ans = answer_ids(tokenizer, record["truth"])
  if len(ans) >= max_len:
    raise DataError(f"record {record.get('id')!r}: the answer alone is {len(ans)} tokens (max_len {max_len})",
                    key="truth")
  prompt = _fit_prompt(tokenizer, record, max_len - len(ans), nbest)
  ids = prompt + ans
  labels = [IGNORE] * len(prompt) + ans
  return {"input_ids": _pad(ids, max_len, pad_id(tokenizer)), "labels": _pad(labels, max_len, IGNORE),
          "attention_mask": _pad([1] * len(ids), max_len, 0)}


def encode_prompt(tokenizer, record: dict, max_len: int, *, nbest: int | None = None) -> np.ndarray:
  """The prompt alone (generation), unpadded [P <= max_len] int32; hypotheses dropped from the end to fit."""
  return np.asarray(_fit_prompt(tokenizer, record, max_len, nbest), np.int32)


def prompt_batch(tokenizer, records: Sequence[dict], max_len: int, *, nbest: int | None = None,
                 multiple: int = 16, rows: int | None = None):
  """Left-padded prompts for generation -> (input_ids [B, P] int32, attention_mask [B, P] int32), P the longest
  rounded up to `multiple` (fewer shapes to compile) and at most max_len; `rows` pads the batch with copies of
  the last prompt (a fixed batch size)."""
  seqs = [encode_prompt(tokenizer, r, max_len, nbest=nbest) for r in records]
  if rows is not None and len(seqs) < rows:
    seqs += [seqs[-1]] * (rows - len(seqs))
  p = max(len(s) for s in seqs)
  p = min(-(-p // multiple) * multiple, max(max_len, p))
  ids = np.full((len(seqs), p), pad_id(tokenizer), np.int32)
  mask = np.zeros((len(seqs), p), np.int32)
  for i, s in enumerate(seqs):
    ids[i, p - len(s):] = s
    mask[i, p - len(s):] = 1
  return ids, mask


def encode_sentence(tokenizer, text: str, max_len: int, repeat: int = 1) -> dict:
  """Pretraining stand-in: [bos] + (ANSWER_HEADER + sentence) * repeat + eos, labels on every copy of the sentence
  and the eos (same keys as encode_record). repeat > 1: repeated text, from which an LM learns to copy in context
  (what a pretrained LLM brings to the candidate list)."""
  bos, head, body = _bos(tokenizer), _encode(tokenizer, ANSWER_HEADER), _encode(tokenizer, text)
  ids, labels = list(bos), [IGNORE] * len(bos)
  for _ in range(max(int(repeat), 1)):
    ids += head + body
    labels += [IGNORE] * len(head) + body
  ids.append(eos_id(tokenizer))
  labels.append(ids[-1])
  if len(ids) > max_len:
    raise DataError(f"sentence {text!r} (x{repeat}) is {len(ids)} tokens with the header, more than max_len "
                    f"{max_len}", key="max_len")
  return {"input_ids": _pad(ids, max_len, pad_id(tokenizer)), "labels": _pad(labels, max_len, IGNORE),
          "attention_mask": _pad([1] * len(ids), max_len, 0)}


def decode_answer(tokenizer, ids: Sequence[int], eos_ids: Sequence[int] = ()) -> str:
  """Generated ids -> the sentence: cut at the first eos, specials dropped, whitespace removed (Chinese)."""
  stop = set(int(e) for e in eos_ids) | {eos_id(tokenizer)}
  out = []
  for t in ids:
    if int(t) in stop:
      break
    out.append(int(t))
  text = tokenizer.decode(out, skip_special_tokens=True)
  return "".join(text.split())


# --------------------------------------------------------------------------- tokenizers

def template_symbols() -> list[str]:
  """The tiny tokenizer's template tokens: every non-ASCII character of the template, ASCII words, numbers."""
  text = "\n".join([INSTRUCTION, PINYIN_HEADER, NBEST_HEADER, ANSWER_HEADER])
  out = []
  for word in text.split():
    run = ""
    for ch in word:
      if ord(ch) < 128:
        run += ch
      else:
        if run:
          out.append(run)
          run = ""
        out.append(ch)
    if run:
      out.append(run)
  out += [f"{k}." for k in range(1, MAX_NBEST + 1)]
  return list(dict.fromkeys(out))


def synthcue_tokenizer():
  """Tiny tokenizer: word level over specials (<pad> <s> </s> <unk>), the template's symbols, the 396 toneless
  pinyin syllables and every SynthCue character (shared/data/synthcue_lexicon); non-ASCII characters are
  isolated, ASCII is split on whitespace. A transformers PreTrainedTokenizerFast (save_pretrained works)."""
  from tokenizers import Regex, Tokenizer, models, pre_tokenizers
  from transformers import PreTrainedTokenizerFast

  from shared.data.synthcue_lexicon import SYLLABLE_CHARS
  from shared.text.pinyin import load_pinyin_vocab
  from shared.text.tokenizers import SPECIALS
  chars = [c for syl in SYLLABLE_CHARS.values() for c in syl]
  words = list(dict.fromkeys(list(SPECIALS) + template_symbols() + list(load_pinyin_vocab()) + chars))
  tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token=SPECIALS[3]))
  tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                               pre_tokenizers.Split(Regex(NON_ASCII), behavior="isolated")])
  return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=SPECIALS[0], bos_token=SPECIALS[1],
                                 eos_token=SPECIALS[2], unk_token=SPECIALS[3])


def load_refiner_tokenizer(path: str = ""):
  """"" -> synthcue_tokenizer(); else a local tokenizer directory / tokenizer.json (never a hub)."""
  if not path:
    return synthcue_tokenizer()
  from shared.text.tokenizers import load_tokenizer
  return load_tokenizer(path)


# --------------------------------------------------------------------------- synthetic error-aware records

STAGE_ERROR = {"early": 0.45, "middle": 0.25, "late": 0.1}   # per-character substitution rate of a hypothesis


_CONFUSIONS: dict = {}


def _confusions(world):
  """(cached per world) Per char id: (homophones: other chars of its syllable, look-alikes: chars of lip-identical
  syllables)."""
  if id(world) in _CONFUSIONS and _CONFUSIONS[id(world)][0] is world:
    return _CONFUSIONS[id(world)][1]
  from shared.data.synthcue_phonology import syllable_lip_signature
  sig = [syllable_lip_signature(s) for s in world.syllables]
  homo, look = [], []
  for c, s in enumerate(world.char_syllable):
    homo.append([d for d in range(len(world.chars)) if d != c and world.char_syllable[d] == s])
    look.append([d for d in range(len(world.chars)) if world.char_syllable[d] != s
                 and sig[world.char_syllable[d]] == sig[s]])
  lips = [[t for t in range(len(world.syllables)) if t != s and sig[t] == sig[s]]
          for s in range(len(world.syllables))]
  _CONFUSIONS[id(world)] = (world, (homo, look, lips))
  return homo, look, lips


def synthetic_records(source, n: int, *, seed: int = 0, nbest: int = 3, start: int = 0,
                      error: dict | None = None, lookalike: float = 0.25, score_noise: float = 2.0) -> list[dict]:
  """n records from the sentences of a SynthCue source (indices start..start+n-1; stages round-robin).

  Each of the `nbest` hypotheses replaces every character with probability error[stage]: by a homophone (same
  syllable), or with probability `lookalike` (or when it has no homophone) by a character of a lip-identical
  syllable; hypotheses are distinct where possible, scored -(errors + U(0, score_noise)) and sorted best first,
  so the ranking is imperfect (as a decoder's): the hypothesis with the fewest errors, sometimes the truth, is
  not always first. The predicted pinyin replaces each syllable with probability
  error[stage] / 2 by a lip-identical one."""
  from shared.metrics.text import chinese_cer
  error = dict(STAGE_ERROR if error is None else error)
  world = source.world
  homo, look, lips = _confusions(world)
  out = []
  for i in range(start, start + n):
    rng = np.random.default_rng([seed, 7_919, i])
    chars, _ = source.sentence(i)
    stage = STAGES[i % len(STAGES)]
    p = float(error[stage])
    truth = "".join(world.chars[c] for c in chars)
    hyps: dict[str, float] = {}
    for _ in range(8 * nbest):
      if len(hyps) == nbest:
        break
      got, wrong = [], 0
      for c in chars:
        c = int(c)
        if rng.random() < p:
          pool = look[c] if (not homo[c] or rng.random() < lookalike) and look[c] else homo[c]
          if pool:
            c = int(rng.choice(pool))
            wrong += 1
        got.append(world.chars[c])
      text = "".join(got)
      if text not in hyps:
        hyps[text] = -(wrong + float(rng.uniform(0.0, score_noise)))
    ranked = sorted(hyps.items(), key=lambda kv: -kv[1])
    syls = []
    for c in chars:
      s = int(world.char_syllable[c])
      if lips[s] and rng.random() < p / 2:
        s = int(rng.choice(lips[s]))
      syls.append(world.syllables[s])
    best = ranked[0][0]
    out.append({"id": f"synthcue-{source.config.split}-{i}", "pinyin": " ".join(syls),
                "nbest": [h for h, _ in ranked], "nbest_scores": [round(s, 4) for _, s in ranked],
                "truth": truth, "cer": float(chinese_cer([truth], [best])), "stage": stage})
  return out


def main(argv=None) -> int:
  """python -m vsr_pin_jax.refine_data --out DIR [--train N] [--eval N] [--nbest K] [--seed S] [--config C]
  writes DIR/train.jsonl (SynthCue train split) and DIR/eval.jsonl (held-out `test` split) in the SynthCue world
  of config C's data section (default configs/vsr_pin/tiny.py: the lip reader's world)."""
  import argparse

  from shared.data.synthcue import synthcue_source
  from shared.scaling.aot import load_config
  ap = argparse.ArgumentParser(description=main.__doc__)
  ap.add_argument("--out", required=True)
  ap.add_argument("--train", type=int, default=2000)
  ap.add_argument("--eval", type=int, default=200)
  ap.add_argument("--nbest", type=int, default=3)
  ap.add_argument("--seed", type=int, default=0, help="noise seed")
  ap.add_argument("--config", default="configs/vsr_pin/tiny.py", help="a config whose data section names the world")
  a = ap.parse_args(argv)
  data = load_config(a.config).data
  for split, n, name in (("train", a.train, "train.jsonl"), ("test", a.eval, "eval.jsonl")):
    src = synthcue_source(data, split, "speech", num_samples=max(n, 1), render_video=False, render_audio=False)
    path = os.path.join(a.out, name)
    write_records(path, synthetic_records(src, n, seed=a.seed, nbest=a.nbest))
    print(f"{path}: {n} records")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
