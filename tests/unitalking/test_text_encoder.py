"""UniTalking's frozen UMT5 text path vs transformers UMT5EncoderModel and diffusers' WanPipeline prompt encoding
(tiny random encoder, tiny word-level tokenizer with a T5-style EOS post-processor)."""
from __future__ import annotations

import json
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from shared.errors import CheckpointError
from shared.models.wan_dit import WanDiTConfig
from unitalking_jax.model import UniTalking, UniTalkingConfig
from unitalking_jax.text_encoder import TextEncoder, clean_prompt, encode_text, load_text_encoder, tokenize

L = 8  # fixed text length
WORDS = ("hello world the a cat dog sat on mat & ran far away quick brown fox jumps over lazy").split()
SPECIALS = ("<pad>", "</s>", "<unk>")  # UMT5's ids: pad 0, eos 1, unk 2
D = 32
TEXTS = ["hello world", "  the cat &amp;amp; dog\n sat ",  # cleaned to "the cat & dog sat"
         "the quick brown fox jumps over the lazy dog and ran far away"]  # 13 words: truncated ("and" -> unk)


def _write_tokenizer(path):
  from tokenizers import Tokenizer, models, pre_tokenizers, processors
  vocab = {w: i for i, w in enumerate(list(SPECIALS) + list(dict.fromkeys(WORDS)))}
  tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
  tok.save(str(path))
  return vocab


def _write_encoder(path):
  from transformers import UMT5Config, UMT5EncoderModel
  torch.manual_seed(0)
  kw = dict(vocab_size=len(SPECIALS) + len(set(WORDS)) + 3, d_model=D, d_kv=8, num_heads=4, d_ff=48, num_layers=2,
            relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0)
  model = UMT5EncoderModel(UMT5Config(**kw)).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "layer_norm" in name:
        p.uniform_(0.5, 1.5)
      else:
        p.normal_(0.0, 1.0 if ("relative_attention_bias" in name or p.shape[0] == kw["vocab_size"]) else 0.3)
  model.save_pretrained(path)
  return model


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  root = tmp_path_factory.mktemp("umt5_text")
  vocab = _write_tokenizer(root / "tokenizer.json")
  hf = _write_encoder(root / "text_encoder")
  enc = TextEncoder(str(root / "tokenizer.json"), str(root / "text_encoder"), L)
  return types.SimpleNamespace(root=root, vocab=vocab, hf=hf, enc=enc)


def test_tokenize_fixed_length_eos_and_truncation(env):
  ids, mask = tokenize(env.enc.tokenizer, TEXTS, L)
  v = env.vocab
  assert ids.shape == mask.shape == (3, L) and ids.dtype == np.int32 and mask.dtype == bool
  np.testing.assert_array_equal(ids[0], [v["hello"], v["world"], 1, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(ids[1], [v[w] for w in "the cat & dog sat".split()] + [1, 0, 0])
  words = TEXTS[2].split()[:L - 1]
  np.testing.assert_array_equal(ids[2], [v.get(w, 2) for w in words] + [1])  # EOS kept at the end
  np.testing.assert_array_equal(mask.sum(1), [3, 6, L])
  np.testing.assert_array_equal(mask, ids != 0)
  assert clean_prompt("  a &amp;amp;  b\n\tc ") == "a & b c"


def test_features_match_transformers_and_diffusers(env):
  feats, mask = env.enc(TEXTS)
  assert feats.shape == (3, L, D) and feats.dtype == np.float32
  ids, mask_ref = tokenize(env.enc.tokenizer, TEXTS, L)
  np.testing.assert_array_equal(mask, mask_ref)
  with torch.no_grad():
    ref = env.hf(input_ids=torch.tensor(ids, dtype=torch.long),
                 attention_mask=torch.tensor(mask, dtype=torch.long)).last_hidden_state.numpy()
  np.testing.assert_allclose(feats[mask], ref[mask], rtol=1e-4, atol=1e-5)
  assert (feats[~mask] == 0).all() and np.abs(feats[mask]).min() > 0
  # diffusers' own prompt encoding (clean, tokenize, encode, keep seq_len rows, zero-pad) on the same objects
  from diffusers.pipelines.wan.pipeline_wan import WanPipeline
  pipe = types.SimpleNamespace(tokenizer=env.enc.tokenizer, text_encoder=env.hf, _execution_device=torch.device("cpu"))
  with torch.no_grad():
    wan = WanPipeline._get_t5_prompt_embeds(pipe, TEXTS, max_sequence_length=L, device=torch.device("cpu"),
                                            dtype=torch.float32).numpy()
  np.testing.assert_allclose(feats, wan, rtol=1e-4, atol=1e-5)
  assert (feats[wan == 0] == 0).all()


def test_fixed_batch_chunks_and_no_gradient(env):
  chunked = TextEncoder(env.enc.tokenizer, (env.enc.module, env.enc.params), L, batch_size=2)
  f1, m1 = env.enc(TEXTS)
  f2, m2 = chunked(TEXTS)
  np.testing.assert_array_equal(m1, m2)
  np.testing.assert_allclose(f1, f2, rtol=1e-6, atol=1e-6)
  ids, mask = tokenize(env.enc.tokenizer, TEXTS[:2], L)
  grads = jax.grad(lambda p: jnp.sum(encode_text(env.enc.module, p, ids, mask) ** 2))(env.enc.params)
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))


def test_wrong_directory_raises(env, tmp_path):
  with pytest.raises(CheckpointError, match="does not exist"):
    load_text_encoder(str(tmp_path / "nope"))
  with pytest.raises(CheckpointError, match="config.json"):
    load_text_encoder(str(tmp_path))
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "mbart"}))
  with pytest.raises(CheckpointError, match="expected 'umt5'"):
    load_text_encoder(str(tmp_path))
  # a diffusers pipeline root (text_encoder/ inside) is accepted
  module, _ = load_text_encoder(str(env.root))
  assert module.config.d_model == D


def test_features_feed_unitalking_and_padding_is_inert(env):
  """UMT5 features drive a tiny UniTalking (text_vocab=0); other ids at padded positions change nothing,
  another real token does."""
  b, t, h, w, c, ta, ca = 2, 2, 4, 4, 8, 4, 6
  v = WanDiTConfig(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=c, out_channels=c,
                   text_dim=D, freq_dim=16, ffn_dim=24, num_layers=1, attention_impl="xla")
  model = UniTalking(UniTalkingConfig(v, audio_channels=ca, audio_patch=2, audio_ffn_dim=24, ref_dim=4, text_vocab=0))
  ks = jax.random.split(jax.random.key(3), 4)
  x = dict(video=jax.random.normal(ks[0], (b, t, h, w, c)), audio=jax.random.normal(ks[1], (b, ta, ca)),
           t_video=jnp.full((b,), 500.0), t_audio=jnp.full((b,), 500.0))
  ids, mask = tokenize(env.enc.tokenizer, TEXTS[:2], L)
  module, p_enc = env.enc.module, env.enc.params

  @jax.jit
  def run(params, ids):
    feats = encode_text(module, p_enc, ids, mask)
    return model.apply({"params": params}, **x, text=feats, text_mask=jnp.asarray(mask))

  feats0 = encode_text(module, p_enc, ids, mask)
  params = nn.meta.unbox(jax.jit(lambda r, f: model.init(r, **x, text=f, text_mask=jnp.asarray(mask)))(
      jax.random.key(0), feats0)["params"])
  params = jax.tree.map(lambda q: q + 0.05 * jax.random.normal(ks[2], q.shape), params)
  base = run(params, ids)
  assert all(np.isfinite(np.asarray(o)).all() for o in base)
  noisy = np.where(mask, ids, np.asarray(jax.random.randint(ks[3], ids.shape, 3, 20), np.int32))
  assert (noisy != ids).any()
  for a, o in zip(base, run(params, noisy)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(o))
  other = ids.copy()
  other[:, 0] = env.vocab["fox"]
  assert not np.allclose(np.asarray(base[1]), np.asarray(run(params, other)[1]))
