"""Greedy, top-k/top-p sampling and beam search over a KV-cached decoder; jitted (lax.while_loop).

A decoder is anything with
  step(params, tokens [N] int32, cache) -> (logits [N, V] float32, cache)   # appends one token
  reorder(cache, index [N]) -> cache                                         # beam reordering
`LLMDecoder(module)` adapts shared.models.llm.LLM (prefix of token ids OR embeddings, left-padded);
an encoder-decoder family writes its own `prefill`/`step`/`reorder` and reuses the searches below.

Searches start from the logits of the last prefix position (`prefill`) and return generated tokens
only, [B, max_new_tokens] (beam: [B, num_beams, max_new_tokens] best first, with scores), filled with
`pad_id` after the end. Beam search reproduces transformers' `generate(num_beams=K)` (2K candidates
per step, finished hypotheses scored sum_logprob / generated_len ** length_penalty, early_stopping
False heuristic), so results agree token for token.

`joint_ctc_beam_search` adds a CTC head's prefix score (ESPnet/FunASR `ctc_weight`: (1-λ)·log p_att +
λ·log p_ctc, shared.decoding.ctc_prefix) to the same beam mechanics; with λ = 0 it is `beam_search`.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from shared.decoding import ctc_prefix

NEG = -1.0e9


@dataclasses.dataclass(frozen=True)
class LLMDecoder:
  """Decoder-only LLM with a left-padded prefix. Cache: {"kv": (k, v) [layers, N, S, Hkv, Dh],
  "mask": [N, S] key validity, "pos": [N] next rotary position, "index": scalar next slot}."""
  module: Any

  def prefill(self, params, *, input_ids=None, inputs_embeds=None, attention_mask=None, max_new_tokens: int):
    """prefix [B, P] ids or [B, P, E] embeddings, left-padded, attention_mask [B, P] -> (logits [B, V], cache)."""
    x = input_ids if inputs_embeds is None else inputs_embeds
    b, p = x.shape[:2]
    if attention_mask is None:
      attention_mask = jnp.ones((b, p), jnp.int32)
    attention_mask = jnp.asarray(attention_mask, jnp.int32)
    total = p + max_new_tokens
    kv = self.module.init_cache(b, total)
    mask = jnp.concatenate([attention_mask, jnp.ones((b, max_new_tokens), jnp.int32)], axis=1)
    positions = jnp.maximum(jnp.cumsum(attention_mask, axis=1) - 1, 0)
    logits, kv = self.module.apply({"params": params}, input_ids, inputs_embeds=inputs_embeds,
                                   attention_mask=mask, positions=positions, cache=kv, cache_index=0)
    cache = {"kv": kv, "mask": mask, "pos": attention_mask.sum(axis=1), "index": jnp.asarray(p, jnp.int32)}
    return logits[:, -1].astype(jnp.float32), cache

  def step(self, params, tokens, cache):
    logits, kv = self.module.apply({"params": params}, tokens[:, None], attention_mask=cache["mask"],
                                   positions=cache["pos"][:, None], cache=cache["kv"], cache_index=cache["index"])
    return logits[:, 0].astype(jnp.float32), {**cache, "kv": kv, "pos": cache["pos"] + 1,
                                              "index": cache["index"] + 1}

  def reorder(self, cache, index):
    k, v = cache["kv"]
    return {**cache, "kv": (jnp.take(k, index, axis=1), jnp.take(v, index, axis=1)),
            "mask": jnp.take(cache["mask"], index, axis=0), "pos": jnp.take(cache["pos"], index, axis=0)}

  def tile(self, cache, k: int):
    """Repeat every row k times (beam search): [B, ...] -> [B*k, ...]."""
    n = cache["mask"].shape[0]
    return self.reorder(cache, jnp.repeat(jnp.arange(n), k))


@functools.partial(jax.jit, static_argnames=("decoder", "max_new_tokens"))
def prefill(decoder, params, input_ids=None, inputs_embeds=None, attention_mask=None, *, max_new_tokens: int):
  """Jitted decoder.prefill (compiled once per decoder / shapes)."""
  return decoder.prefill(params, input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                         max_new_tokens=max_new_tokens)


def _is_eos(tokens, eos_ids: Sequence[int]):
  out = jnp.zeros(tokens.shape, bool)
  for e in eos_ids:
    out = out | (tokens == e)
  return out


def warp_logits(logits, *, temperature=1.0, top_k=0, top_p=1.0):
  """transformers' sampling warpers in their order: temperature, top-k, top-p. logits [N, V] float32.
  All three may be traced values (top_k <= 0 or >= V and top_p >= 1 disable their filter)."""
  v = logits.shape[-1]
  logits = logits / temperature
  top_k = jnp.asarray(top_k, jnp.int32)
  kth = jnp.sort(logits, axis=-1)[:, jnp.clip(v - top_k, 0, v - 1)][:, None]
  logits = jnp.where((top_k > 0) & (logits < kth), -jnp.inf, logits)
  order = jnp.argsort(logits, axis=-1)                # ascending, like transformers' TopPLogitsWarper
  sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
  cum = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
  remove_sorted = (cum <= (1.0 - top_p)).at[:, -1].set(False)  # always keep the best token
  remove = jnp.zeros_like(remove_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(remove_sorted)
  return jnp.where(remove & (top_p < 1.0), -jnp.inf, logits)


@functools.partial(jax.jit, static_argnames=("decoder", "max_new_tokens", "eos_ids", "pad_id", "sample"))
def _sample_loop(decoder, params, logits, cache, rng, *, max_new_tokens, eos_ids, pad_id, sample, temperature,
                 top_k, top_p):
  b = logits.shape[0]
  tokens = jnp.full((b, max_new_tokens), pad_id, jnp.int32)

  def cond(s):
    t, _, _, done, _, _ = s
    return (t < max_new_tokens) & ~jnp.all(done)

  def body(s):
    t, logits, cache, done, tokens, rng = s
    if sample:
      rng, sub = jax.random.split(rng)
      nxt = jax.random.categorical(sub, warp_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p))
    else:
      nxt = jnp.argmax(logits, axis=-1)
    nxt = jnp.where(done, pad_id, nxt).astype(jnp.int32)
    tokens = jax.lax.dynamic_update_slice(tokens, nxt[:, None], (0, t))
    done = done | _is_eos(nxt, eos_ids)
    logits, cache = decoder.step(params, nxt, cache)
    return t + 1, logits, cache, done, tokens, rng

  s = (jnp.asarray(0, jnp.int32), logits, cache, jnp.zeros((b,), bool), tokens, rng)
  t, _, _, _, tokens, _ = jax.lax.while_loop(cond, body, s)
  return tokens


def greedy(decoder, params, logits, cache, *, max_new_tokens: int, eos_ids: Sequence[int] = (), pad_id: int = 0):
  """argmax decoding -> tokens [B, max_new_tokens] (pad_id after each row's eos)."""
  return _sample_loop(decoder, params, logits, cache, jax.random.key(0), max_new_tokens=max_new_tokens,
                      eos_ids=tuple(eos_ids), pad_id=pad_id, sample=False, temperature=jnp.float32(1.0), top_k=jnp.int32(0),
                      top_p=jnp.float32(1.0))


def sample(decoder, params, logits, cache, rng, *, max_new_tokens: int, eos_ids: Sequence[int] = (),
           pad_id: int = 0, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0):
  """Ancestral sampling with temperature / top-k / top-p -> tokens [B, max_new_tokens]."""
  return _sample_loop(decoder, params, logits, cache, rng, max_new_tokens=max_new_tokens, eos_ids=tuple(eos_ids),
                      pad_id=pad_id, sample=True, temperature=jnp.float32(temperature), top_k=jnp.int32(top_k),
                      top_p=jnp.float32(top_p))


def _gather(x, idx):
  """x [B, M, ...], idx [B, K] -> [B, K, ...]."""
  return jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)


@functools.partial(jax.jit, static_argnames=("decoder", "num_beams", "max_new_tokens", "eos_ids", "pad_id",
                                             "early_stopping"))
def _beam_loop(decoder, params, logits, cache, *, num_beams, max_new_tokens, eos_ids, pad_id, length_penalty,
               early_stopping, temperature):
  bk, vocab = logits.shape
  k = num_beams
  b = bk // k
  keep = max(2, 1 + len(eos_ids)) * k
  top_mask = jnp.arange(keep) < k
  run_seq = jnp.full((b, k, max_new_tokens), pad_id, jnp.int32)
  run_scores = jnp.zeros((b, k), jnp.float32).at[:, 1:].set(NEG)
  seqs = run_seq
  scores = jnp.full((b, k), NEG, jnp.float32)
  finished = jnp.zeros((b, k), bool)
  unsatisfied = jnp.ones((b, 1), bool)
  hits_all = jnp.zeros((), bool)

  def cond(s):
    t, unsatisfied, finished, hits_all = s[0], s[6], s[5], s[7]
    go = jnp.any(unsatisfied) & ~hits_all & (t < max_new_tokens)
    if early_stopping is True:
      go = go & ~jnp.all(finished)
    return go

  def body(s):
    t, logits, cache, run_seq, run_scores, finished, unsatisfied, _, seqs, scores = s
    lp = jax.nn.log_softmax(logits / temperature, axis=-1)
    acc = (lp.reshape(b, k, vocab) + run_scores[:, :, None]).reshape(b, k * vocab)
    top_lp, top_idx = jax.lax.top_k(acc, keep)
    src = top_idx // vocab
    tok = (top_idx % vocab).astype(jnp.int32)
    top_seq = _gather(run_seq, src)
    top_seq = jax.lax.dynamic_update_slice(top_seq, tok[:, :, None], (0, 0, t))
    hits = _is_eos(tok, eos_ids) | (t + 1 >= max_new_tokens)
    # running beams: best K that did not stop
    run_lp = top_lp + hits.astype(jnp.float32) * NEG
    nxt = jax.lax.top_k(run_lp, k)[1]
    run_seq, run_scores, run_src = _gather(top_seq, nxt), _gather(run_lp, nxt), _gather(src, nxt)
    # finished hypotheses: merge those among the top K that stopped
    did = hits & top_mask[None, :]
    fin = top_lp / ((t + 1).astype(jnp.float32) ** length_penalty)
    if early_stopping is True:
      fin = fin + (jnp.all(finished, axis=-1, keepdims=True)).astype(jnp.float32) * NEG
    fin = fin + (~unsatisfied).astype(jnp.float32) * NEG
    fin = fin + (~did).astype(jnp.float32) * NEG
    m_scores = jnp.concatenate([scores, fin], axis=1)
    m_seqs = jnp.concatenate([seqs, top_seq], axis=1)
    m_fin = jnp.concatenate([finished, did], axis=1)
    sel = jax.lax.top_k(m_scores, k)[1]
    seqs, scores, finished = _gather(m_seqs, sel), _gather(m_scores, sel), _gather(m_fin, sel)
    # advance the model on the running beams
    flat_src = (run_src + jnp.arange(b)[:, None] * k).reshape(-1)
    cache = decoder.reorder(cache, flat_src)
    logits, cache = decoder.step(params, run_seq.reshape(bk, -1)[jnp.arange(bk), t], cache)
    t = t + 1
    best = run_scores[:, :1] / (t.astype(jnp.float32) ** length_penalty)
    worst = jnp.where(finished, jnp.min(scores, axis=1, keepdims=True), NEG)
    unsatisfied = unsatisfied & jnp.any(best > worst, axis=-1, keepdims=True)
    return t, logits, cache, run_seq, run_scores, finished, unsatisfied, jnp.all(hits), seqs, scores

  s = (jnp.asarray(0, jnp.int32), logits, cache, run_seq, run_scores, finished, unsatisfied, hits_all, seqs, scores)
  s = jax.lax.while_loop(cond, body, s)
  return s[8], s[9]


def beam_search(decoder, params, logits, cache, *, num_beams: int, max_new_tokens: int,
                eos_ids: Sequence[int] = (), pad_id: int | None = None, length_penalty: float = 1.0,
                early_stopping: bool = False, temperature: float = 1.0):
  """Beam search from prefill logits [B, V] and cache (batch B; tiled to B*num_beams here).

  Returns (tokens [B, num_beams, max_new_tokens] best first, scores [B, num_beams]): the N-best
  finished hypotheses with transformers' scores sum(log p) / len ** length_penalty. pad_id defaults to
  eos_ids[0] (transformers' fill value). temperature != 1 divides logits before log_softmax (transformers
  ignores temperature without sampling)."""
  if pad_id is None:
    pad_id = eos_ids[0] if eos_ids else -1
  logits = jnp.repeat(logits, num_beams, axis=0)
  cache = decoder.tile(cache, num_beams)
  return _beam_loop(decoder, params, logits, cache, num_beams=num_beams, max_new_tokens=max_new_tokens,
                    eos_ids=tuple(eos_ids), pad_id=int(pad_id), length_penalty=jnp.float32(length_penalty),
                    early_stopping=bool(early_stopping), temperature=jnp.float32(temperature))


def generate(module, params, *, input_ids=None, inputs_embeds=None, attention_mask=None, max_new_tokens: int,
             method: str = "greedy", eos_ids: Sequence[int] | None = None, pad_id: int | None = None, rng=None,
             **kw):
  """One call for a shared.models.llm.LLM: method "greedy" | "sample" | "beam" (kw: num_beams,
  length_penalty, temperature, top_k, top_p). eos_ids default to the config's eos_token_id."""
  dec = LLMDecoder(module)
  eos = tuple(module.config.eos_token_id if eos_ids is None else eos_ids)
  logits, cache = prefill(dec, params, input_ids, inputs_embeds, attention_mask, max_new_tokens=max_new_tokens)
  if method == "greedy":
    return greedy(dec, params, logits, cache, max_new_tokens=max_new_tokens, eos_ids=eos,
                  pad_id=0 if pad_id is None else pad_id)
  if method == "sample":
    return sample(dec, params, logits, cache, jax.random.key(0) if rng is None else rng,
                  max_new_tokens=max_new_tokens, eos_ids=eos, pad_id=0 if pad_id is None else pad_id, **kw)
  if method == "beam":
    return beam_search(dec, params, logits, cache, max_new_tokens=max_new_tokens, eos_ids=eos, pad_id=pad_id, **kw)
  from shared.errors import ConfigError
  raise ConfigError(f"unknown decoding method {method!r}; expected greedy, sample or beam")


@functools.partial(jax.jit, static_argnames=("decoder", "num_beams", "max_new_tokens", "eos_id", "blank_id",
                                             "pad_id", "pre_beam"))
def _joint_loop(decoder, params, logits, cache, x, *, ctc_weight, num_beams, max_new_tokens, eos_id, blank_id,
                pad_id, length_penalty, pre_beam):
  bk, vocab = logits.shape
  k = num_beams
  b = bk // k
  keep = 2 * k
  top_mask = jnp.arange(keep) < k
  lam = ctc_weight
  cols = jnp.arange(vocab)
  inf = jnp.float32(jnp.inf)
  run_seq = jnp.full((b, k, max_new_tokens), pad_id, jnp.int32)
  run_scores = jnp.full((b, k), -inf).at[:, 0].set(0.0)     # joint score of the running prefix (-inf: empty slot)
  att = jnp.zeros((b, k), jnp.float32)                      # sum of log p_att of the running prefix
  ctc = ctc_prefix.init_state(x, k, blank_id)
  seqs = run_seq
  scores = jnp.full((b, k), -inf)
  finished = jnp.zeros((b, k), bool)
  unsatisfied = jnp.ones((b, 1), bool)

  def cond(s):
    t, unsatisfied, hits_all = s[0], s[7], s[8]
    return jnp.any(unsatisfied) & ~hits_all & (t < max_new_tokens)

  def body(s):
    t, logits, cache, run_seq, run_scores, att, ctc, unsatisfied, _, seqs, scores, finished = s
    lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1).reshape(b, k, vocab)
    # CTC term per candidate: psi(h c) for labels, log P_ctc(h) for eos, -inf for blank
    if pre_beam is None or pre_beam >= vocab:
      psi = ctc_prefix.prefix_scores(x, ctc, blank_id)                                  # [B, K, V]
      allowed = jnp.ones((1, 1, vocab), bool)
    else:
      cand = jax.lax.top_k(jnp.where(cols == eos_id, -inf, lp), pre_beam)[1]            # [B, K, P]
      psi_c = ctc_prefix.prefix_scores(x, ctc, blank_id, cand)
      bi, ki = jnp.arange(b)[:, None, None], jnp.arange(k)[None, :, None]
      psi = jnp.full((b, k, vocab), -inf).at[bi, ki, cand].set(psi_c)
      allowed = jnp.zeros((b, k, vocab), bool).at[bi, ki, cand].set(True) | (cols == eos_id)
    c_term = jnp.where(cols == eos_id, ctc_prefix.final_scores(ctc)[:, :, None], psi)
    c_term = jnp.where(cols == blank_id, -inf, c_term)
    c_term = jnp.where(lam > 0, lam * c_term, 0.0)
    cand_att = att[:, :, None] + lp
    joint = (1.0 - lam) * cand_att + c_term
    joint = jnp.where(allowed & (run_scores > -inf)[:, :, None], joint, -inf).reshape(b, k * vocab)
    top_lp, top_idx = jax.lax.top_k(joint, keep)
    src = top_idx // vocab
    tok = (top_idx % vocab).astype(jnp.int32)
    top_att = jnp.take_along_axis(cand_att.reshape(b, k * vocab), top_idx, axis=1)
    top_seq = _gather(run_seq, src)
    top_seq = jax.lax.dynamic_update_slice(top_seq, tok[:, :, None], (0, 0, t))
    hits = (tok == eos_id) | (t + 1 >= max_new_tokens)
    # running beams: best K that did not stop
    nxt = jax.lax.top_k(jnp.where(hits, -inf, top_lp), k)[1]
    run_seq, run_src, run_tok = _gather(top_seq, nxt), _gather(src, nxt), _gather(tok, nxt)
    run_scores = jnp.where(_gather(hits, nxt), -inf, _gather(top_lp, nxt))
    att = _gather(top_att, nxt)
    ctc = ctc_prefix.extend(x, ctc_prefix.reorder(ctc, run_src), run_tok, blank_id)
    # finished hypotheses: merge those among the top K that stopped
    did = hits & top_mask[None, :] & (top_lp > -inf) & unsatisfied
    fin = jnp.where(did, top_lp / ((t + 1).astype(jnp.float32) ** length_penalty), -inf)
    m_scores = jnp.concatenate([scores, fin], axis=1)
    m_seqs = jnp.concatenate([seqs, top_seq], axis=1)
    m_fin = jnp.concatenate([finished, did], axis=1)
    sel = jax.lax.top_k(m_scores, k)[1]
    seqs, scores, finished = _gather(m_seqs, sel), _gather(m_scores, sel), _gather(m_fin, sel)
    # advance the decoder on the running beams
    flat_src = (run_src + jnp.arange(b)[:, None] * k).reshape(-1)
    cache = decoder.reorder(cache, flat_src)
    logits, cache = decoder.step(params, run_tok.reshape(-1), cache)
    t = t + 1
    best = run_scores[:, :1] / (t.astype(jnp.float32) ** length_penalty)
    worst = jnp.where(finished, jnp.min(scores, axis=1, keepdims=True), -inf)
    unsatisfied = unsatisfied & jnp.any(best > worst, axis=-1, keepdims=True)
    return t, logits, cache, run_seq, run_scores, att, ctc, unsatisfied, jnp.all(hits), seqs, scores, finished

  s = (jnp.asarray(0, jnp.int32), logits, cache, run_seq, run_scores, att, ctc, unsatisfied, jnp.zeros((), bool),
       seqs, scores, finished)
  s = jax.lax.while_loop(cond, body, s)
  return s[9], s[10]


def joint_ctc_beam_search(decoder, params, logits, cache, ctc_log_probs, ctc_lengths=None, *, ctc_weight: float,
                          num_beams: int, max_new_tokens: int, eos_id: int, blank_id: int = 0,
                          pad_id: int | None = None, length_penalty: float = 1.0, pre_beam: int | None = None):
  """Attention + CTC joint beam search (Watanabe et al. 2017; ESPnet / FunASR `ctc_weight`), batched, jitted.

  decoder/params/logits [B, V]/cache as for `beam_search` (prefill of B utterances; tiled here to B*num_beams).
  ctc_log_probs [B, T, V]: log-softmax of the CTC head over the SAME vocabulary as the decoder (blank at
  blank_id); ctc_lengths [B] valid frames (None: all T).

  Score of a returned sequence y_1..y_L (generated tokens only, L <= max_new_tokens):
      score(y) = [ (1 - ctc_weight) * sum_{i=1..L} log p_att(y_i | y_<i, x) + ctc_weight * c(y) ] / L ** length_penalty
      c(y) = log P_ctc(y_1..y_{L-1} | x)          if y_L == eos_id (all alignments, frames < ctc_lengths)
      c(y) = log sum_{z starts with y} P_ctc(z|x) if L == max_new_tokens and y_L != eos_id (truncated: the
                                                  CTC prefix probability, as ESPnet scores a hypothesis cut
                                                  at maxlen)
  Blank is never emitted when ctc_weight > 0. Running prefixes are ranked by the un-normalised bracket
  (which, with ctc_weight > 0, equals ESPnet's accumulated (1-λ)·att + λ·(ψ(h c) - ψ(h)) telescoped);
  finished ones by score(y). Candidate and stopping rules are `beam_search`'s (transformers: 2K candidates
  per step, the finished list takes those among the top K; stop when no running prefix can beat the worst
  of K finished, judged by best_running / t ** length_penalty), so ctc_weight=0 gives `beam_search`'s
  tokens and scores (blank then allowed). length_penalty=0 is ESPnet/FunASR with penalty=0 (no length
  bonus), and then the stopping rule is exact: every per-token increment is <= 0 (psi only falls as a
  prefix grows and log P_ctc(h) <= psi(h)), so a beam holding every candidate gives the exact N-best.

  pre_beam: None (or >= V) scores every label with CTC at every step; an int P scores only the P labels
  with the best log p_att per hypothesis (eos is always scored), ESPnet's pre-beam (it uses
  int(1.5 * num_beams)); the other labels are not candidates. Per step the cost is O(T * B * K * P) (two
  scans over the T frames: psi for the candidates, then the forward variables of the K kept prefixes).
  With ctc_weight = 1 the attention ranking means nothing: use pre_beam=None (ESPnet turns it off too).

  Not token-for-token ESPnet: ESPnet keeps the K best of K*V, moves those ending in eos out (the running beam
  shrinks) and stops by `end_detect` / maxlen; here the beam_search mechanics above hold. Where fewer than 2K
  candidates are valid (tiny V), empty slots are -inf here and NEG in `beam_search`.

  Returns (tokens [B, num_beams, max_new_tokens] best first, filled with pad_id (default eos_id) after eos,
  scores [B, num_beams] descending; -inf marks a slot with no finished hypothesis)."""
  from shared.errors import ConfigError, DataError
  logits = jnp.asarray(logits)
  b, v = logits.shape
  if ctc_log_probs.ndim != 3 or ctc_log_probs.shape[0] != b or ctc_log_probs.shape[-1] != v:
    raise DataError(f"ctc_log_probs has shape {tuple(ctc_log_probs.shape)}; expected [B={b}, T, V={v}] (the batch "
                    f"and vocabulary of the decoder logits)", key="ctc_log_probs")
  if ctc_lengths is not None and tuple(jnp.shape(ctc_lengths)) != (b,):
    raise DataError(f"ctc_lengths has shape {tuple(jnp.shape(ctc_lengths))}; expected [{b}]", key="ctc_lengths")
  if eos_id == blank_id or not (0 <= eos_id < v and 0 <= blank_id < v):
    raise ConfigError(f"eos_id {eos_id} and blank_id {blank_id} must be distinct labels in [0, {v})")
  if pre_beam is not None and pre_beam < 1:
    raise ConfigError(f"pre_beam {pre_beam} must be None (every label) or >= 1")
  if pad_id is None:
    pad_id = eos_id
  x = ctc_prefix.prepare(ctc_log_probs, ctc_lengths, blank_id)
  logits = jnp.repeat(logits, num_beams, axis=0)
  cache = decoder.tile(cache, num_beams)
  return _joint_loop(decoder, params, logits, cache, x, ctc_weight=jnp.float32(ctc_weight), num_beams=num_beams,
                     max_new_tokens=max_new_tokens, eos_id=int(eos_id), blank_id=int(blank_id), pad_id=int(pad_id),
                     length_penalty=jnp.float32(length_penalty),
                     pre_beam=None if pre_beam is None else int(pre_beam))
