"""data.text = "umt5" end to end: SynthCue sentences -> frozen UMT5 features in data.prepare -> the UniTalking
loss / CFG sampling with batch["text_mask"] (tiny random UMT5 and a character-level tokenizer)."""
from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs.unitalking.tiny import get_config
from unitalking_jax import data as data_lib
from unitalking_jax.task import make_task
from unitalking_jax.text_encoder import TextEncoder

D = 32


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
  import torch
  from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
  from transformers import UMT5Config, UMT5EncoderModel
  root = tmp_path_factory.mktemp("umt5_task")
  c = get_config()
  c.model.video.update(dict(num_attention_heads=2, attention_head_dim=16, num_layers=1, ffn_dim=64, freq_dim=32,
                            text_dim=D))
  c.model.update(dict(audio_ffn_dim=64, text_vocab=0, text_positions=0))
  c.data.update(dict(text="umt5", frames=8, pca_fit_samples=48, text_tokenizer=str(root / "tokenizer.json"),
                     text_encoder=str(root / "text_encoder")))
  c.trainer.batch_size = 4
  c.sampling.update(dict(steps=2, num=2))
  chars = data_lib.source(c, "train").world.chars
  vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>"] + list(dict.fromkeys(chars)))}
  tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\S"), "isolated")   # one token per character
  tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
  tok.save(c.data.text_tokenizer)
  torch.manual_seed(0)
  UMT5EncoderModel(UMT5Config(vocab_size=len(vocab), d_model=D, d_kv=8, num_heads=4, d_ff=48, num_layers=2,
                              dropout_rate=0.0)).save_pretrained(c.data.text_encoder)
  return c


def test_umt5_text_through_data_loss_and_sampling(cfg):
  src = data_lib.source(cfg, "train")
  samples = [data_lib.prepare(src[i], cfg) for i in range(4)]
  s0 = samples[0]
  assert s0["text"].shape == (cfg.data.text_len, D) and s0["text"].dtype == np.float32
  enc = TextEncoder(cfg.data.text_tokenizer, cfg.data.text_encoder, cfg.data.text_len)
  f, m = enc([src[0]["text"]])
  np.testing.assert_array_equal(s0["text_mask"], m[0])
  np.testing.assert_allclose(s0["text"], f[0], rtol=1e-6, atol=1e-6)
  n = min(len(src[0]["text"]) + 1, cfg.data.text_len)
  assert s0["text_mask"].sum() == n and (s0["text"][n:] == 0).all()
  batch = data_lib.collate(samples)
  task = make_task(cfg)
  params = nn.meta.unbox(jax.jit(task.init_params)(jax.random.key(0), batch))
  loss = jax.jit(task.loss_fn)
  l0, _ = loss(params, batch, jax.random.key(1))
  assert np.isfinite(float(l0))
  other = dict(batch, text=np.roll(batch["text"], 1, axis=0), text_mask=np.roll(batch["text_mask"], 1, axis=0))
  assert float(loss(params, other, jax.random.key(1))[0]) != float(l0)  # the text reaches the loss
  cfg_drop = cfg.copy_and_resolve_references()
  cfg_drop.objective.p_drop_text = 1.0  # every text replaced by the null: the text no longer matters
  loss_drop = jax.jit(make_task(cfg_drop).loss_fn)
  assert float(loss_drop(params, batch, jax.random.key(1))[0]) == float(loss_drop(params, other, jax.random.key(1))[0])
  v, a = task.generate(params, {k: x[:2] for k, x in batch.items()}, "t2av")
  assert np.isfinite(np.asarray(v)).all() and np.isfinite(np.asarray(a)).all()
  from unitalking_jax.sample import build_inputs
  inputs = build_inputs(cfg, src[1]["text"])
  np.testing.assert_allclose(inputs["text"][0], samples[1]["text"], rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(inputs["text_mask"][0], samples[1]["text_mask"])
