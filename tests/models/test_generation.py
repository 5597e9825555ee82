"""Greedy / beam search / sampling vs transformers' generate, token for token, batched with left padding."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from shared.decoding import LLMDecoder, generate, greedy, prefill, sample, warp_logits
from shared.weights import load_pretrained

NEW = 10


@pytest.fixture(scope="module")
def setup(hf_dirs, tmp_path_factory):
  """A tiny Llama whose eos is a token it actually produces, left-padded batch of 3 prompts."""
  model, d = hf_dirs["llama_bias_mqa"]
  g = torch.Generator().manual_seed(5)
  ids = torch.randint(3, 61, (3, 6), generator=g)
  mask = torch.ones_like(ids)
  mask[0, :2] = 0
  mask[2, :1] = 0
  ids[mask == 0] = 0
  with torch.no_grad():
    free = model.generate(ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False, pad_token_id=0)[:, 6:]
  eos = int(free[1, 3])  # row 1 stops after 4 tokens; others may stop elsewhere or run to the end
  model.generation_config.eos_token_id = eos
  model.generation_config.pad_token_id = 0
  module, params = load_pretrained(d)
  module = module.clone(config=module.config.replace(eos_token_id=(eos,)))
  return model, module, params, ids, mask, eos


def test_greedy_matches_transformers(setup):
  model, module, params, ids, mask, eos = setup
  with torch.no_grad():
    ref = model.generate(ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False)[:, 6:].numpy()
  ours = np.asarray(generate(module, params, input_ids=jnp.asarray(ids.numpy()),
                             attention_mask=jnp.asarray(mask.numpy()), max_new_tokens=NEW, pad_id=0))
  assert (ref == eos).any()
  np.testing.assert_array_equal(ours[:, :ref.shape[1]], ref)
  assert (ours[:, ref.shape[1]:] == 0).all()


@pytest.mark.parametrize("length_penalty", [1.0, -0.5])
def test_beam_search_matches_transformers(setup, length_penalty):
  model, module, params, ids, mask, eos = setup
  k = 3
  with torch.no_grad():
    out = model.generate(ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False, num_beams=k,
                         num_return_sequences=k, length_penalty=length_penalty, output_scores=True,
                         return_dict_in_generate=True)
  ref = out.sequences[:, 6:].numpy().reshape(3, k, -1)
  ref_scores = out.sequences_scores.numpy().reshape(3, k)
  toks, scores = generate(module, params, input_ids=jnp.asarray(ids.numpy()),
                          attention_mask=jnp.asarray(mask.numpy()), max_new_tokens=NEW, method="beam",
                          num_beams=k, length_penalty=length_penalty)  # fill: eos, as transformers (pad 0 is falsy there)
  toks = np.asarray(toks)
  if length_penalty < 0:  # short hypotheses favoured: some beams end at eos early
    assert (ref == eos).any()
  np.testing.assert_array_equal(toks[:, :, :ref.shape[-1]], ref)
  np.testing.assert_allclose(np.asarray(scores), ref_scores, rtol=1e-5, atol=1e-5)
  assert np.all(np.diff(np.asarray(scores), axis=1) <= 0)  # N-best, best first


def test_embedding_prefix_and_sampling(setup):
  """A prefix given as embeddings decodes like the same prefix as ids; top_k=1 sampling is greedy;
  sampling with a high temperature differs."""
  _, module, params, ids, mask, eos = setup
  dec = LLMDecoder(module)
  x, m = jnp.asarray(ids.numpy()), jnp.asarray(mask.numpy())
  emb = module.apply({"params": params}, x, method=module.embed)
  l1, _ = prefill(dec, params, x, attention_mask=m, max_new_tokens=NEW)
  l2, c2 = prefill(dec, params, inputs_embeds=emb, attention_mask=m, max_new_tokens=NEW)
  np.testing.assert_allclose(l1, l2, rtol=1e-6, atol=1e-6)
  g = greedy(dec, params, l2, c2, max_new_tokens=NEW, eos_ids=(eos,))
  np.testing.assert_array_equal(g, generate(module, params, input_ids=x, attention_mask=m, max_new_tokens=NEW,
                                            pad_id=0))
  s1 = sample(dec, params, l2, c2, jax.random.key(3), max_new_tokens=NEW, eos_ids=(eos,), top_k=1)
  np.testing.assert_array_equal(g, s1)
  s2 = sample(dec, params, l2, c2, jax.random.key(3), max_new_tokens=NEW, eos_ids=(eos,), temperature=5.0)
  assert not np.array_equal(g, s2)


def test_warpers_match_transformers():
  from transformers.generation.logits_process import (TemperatureLogitsWarper, TopKLogitsWarper,
                                                      TopPLogitsWarper)
  logits = np.random.default_rng(0).normal(size=(4, 30)).astype(np.float32) * 3
  t = torch.from_numpy(logits)
  ref = TopPLogitsWarper(0.7)(None, TopKLogitsWarper(12)(None, TemperatureLogitsWarper(0.8)(None, t))).numpy()
  ours = np.asarray(jax.jit(warp_logits)(jnp.asarray(logits), temperature=0.8, top_k=12, top_p=0.7))
  np.testing.assert_array_equal(np.isinf(ours), np.isinf(ref))
  np.testing.assert_allclose(ours[~np.isinf(ours)], ref[~np.isinf(ref)], rtol=1e-6)
