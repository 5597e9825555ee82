"""BLEURT (Sellam, Das & Parikh 2020) from a local BLEURT-PyTorch checkpoint directory, scored in JAX.

The checkpoints are lucadiliello/BLEURT-pytorch's (bleurt-tiny / base / large -128 / -512 and BLEURT-20, converted
from the TF originals): a directory with config.json (model_type "bleurt"), model.safetensors or
pytorch_model.bin, and the tokenizer (vocab.txt: WordPiece; or a sentencepiece *.model: BLEURT-20). The model is
BERT (post-LN) with an optional input-embedding projection (RemBERT's layout, BLEURT-20):

  ids [B, L] = [CLS] reference [SEP] candidate [SEP] (token types 0 / 1), padding masked
  h = LayerNorm(word[ids] + position[0..L) + type[types]) [B, L, E] -> encoder.embedding_projection (E != H)
  -> num_hidden_layers x (self-attention -> +h, LayerNorm -> FFN(hidden_act) -> +h, LayerNorm) [B, L, H]
  -> pooler tanh(dense(h[:, 0])) -> classifier [B, 1]: the score (higher = closer to the reference)

Keys (the checkpoint's): bleurt.embeddings.{word,position,token_type}_embeddings.weight, bleurt.embeddings.LayerNorm,
bleurt.encoder.embedding_projection, bleurt.encoder.layer.N.attention.self.{query,key,value},
.attention.output.{dense,LayerNorm}, .intermediate.dense, .output.{dense,LayerNorm}, bleurt.pooler.dense,
classifier. Parity: tests/metrics/test_bleurt.py against transformers' BertForSequenceClassification (E = H) and
RemBertForSequenceClassification (E != H) with the same weights. A .bin is read with torch.load(weights_only=True)
(tensors only, no code); torch is needed only for that.
"""
from __future__ import annotations

import glob
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from shared.errors import CheckpointError, ConfigError
from shared.weights import io

ACTS = {"gelu": lambda x: jax.nn.gelu(x, approximate=False), "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
        "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True), "relu": jax.nn.relu}


LENGTH_BUCKET = 32   # token lengths are padded up to a multiple of this (fewer recompilations)


def _read_weights(path: str) -> dict[str, np.ndarray]:
  st = [os.path.join(path, n) for n in (io.SINGLE, io.INDEX)]
  if any(os.path.exists(p) for p in st):
    r = io.SafetensorsReader(path)
    return {k: np.asarray(r.get(k), np.float32) for k in r.keys()}
  binf = os.path.join(path, "pytorch_model.bin")
  if os.path.exists(binf):
    return {k: v.astype(np.float32) for k, v in io.read_state_dict(binf).items()}
  raise CheckpointError(f"BLEURT checkpoint {path!r}: no model.safetensors or pytorch_model.bin there")


def _tokenizer(path: str):
  import json

  tc = {}
  if os.path.exists(os.path.join(path, "tokenizer_config.json")):
    with open(os.path.join(path, "tokenizer_config.json")) as f:
      tc = json.load(f)
  lower = bool(tc.get("do_lower_case", True))
  if os.path.exists(os.path.join(path, "vocab.txt")):
    from transformers import BertTokenizer
    return BertTokenizer(os.path.join(path, "vocab.txt"), do_lower_case=lower)
  sp = sorted(glob.glob(os.path.join(path, "*.model")))
  if sp:
    from transformers import DebertaV2Tokenizer
    return DebertaV2Tokenizer(sp[0], do_lower_case=lower)
  raise CheckpointError(f"BLEURT checkpoint {path!r}: no tokenizer (vocab.txt or a sentencepiece *.model)")


class BleurtScorer:
  """`BleurtScorer(DIR)(references, candidates) -> [N] float32` scores (module docstring)."""

  def __init__(self, path: str, *, batch_size: int = 32):
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
      raise ConfigError(f"BLEURT checkpoint {path!r}: no config.json there (a local BLEURT-PyTorch checkpoint "
                        "directory)")
    self.config = c = io.read_json(cfg_path)
    if c.get("model_type") not in ("bleurt", "bert", None):
      raise ConfigError(f"{cfg_path}: model_type {c.get('model_type')!r} is not a BLEURT checkpoint")
    act = c.get("hidden_act", "gelu")
    if act not in ACTS:
      raise ConfigError(f"{cfg_path}: hidden_act {act!r} not supported (one of {sorted(ACTS)})")
    w = _read_weights(path)
    w = {k[len("bleurt."):] if k.startswith("bleurt.") else k: v for k, v in w.items()}
    need = ["embeddings.word_embeddings.weight", "pooler.dense.weight", "classifier.weight"]
    need += [f"encoder.layer.{i}.output.dense.weight" for i in range(int(c["num_hidden_layers"]))]
    missing = [k for k in need if k not in w]
    if missing:
      raise CheckpointError(f"BLEURT checkpoint {path!r}: missing {missing[:4]} (keys like "
                            f"{sorted(w)[:3]}); expected BLEURT-PyTorch's layout")
    self.params = jax.tree.map(jnp.asarray, w)
    self.tokenizer = _tokenizer(path)
    self.batch_size = int(batch_size)
    self.max_length = int(c.get("max_position_embeddings", 512))
    self._forward = jax.jit(self._apply)

  def _apply(self, p, ids, types, mask):
    """ids, types, mask [B, L] int32 -> scores [B] float32."""
    c = self.config
    eps = float(c.get("layer_norm_eps", 1e-12))
    heads, act = int(c["num_attention_heads"]), ACTS[c.get("hidden_act", "gelu")]

    def ln(x, name):
      m = x.mean(-1, keepdims=True)
      v = jnp.square(x - m).mean(-1, keepdims=True)
      return (x - m) * jax.lax.rsqrt(v + eps) * p[name + ".weight"] + p[name + ".bias"]

    def dense(x, name):
      return x @ p[name + ".weight"].T + p[name + ".bias"]

    b, l = ids.shape
    h = (p["embeddings.word_embeddings.weight"][ids] + p["embeddings.position_embeddings.weight"][:l][None]
         + p["embeddings.token_type_embeddings.weight"][types])
    h = ln(h, "embeddings.LayerNorm")
    if "encoder.embedding_projection.weight" in p:
      h = dense(h, "encoder.embedding_projection")
    d = h.shape[-1] // heads
    bias = jnp.where(mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min)       # [B, 1, 1, L]
    for i in range(int(c["num_hidden_layers"])):
      n = f"encoder.layer.{i}."
      q, k, v = (dense(h, n + "attention.self." + x).reshape(b, l, heads, d).transpose(0, 2, 1, 3)
                 for x in ("query", "key", "value"))
      att = jax.nn.softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(d) + bias, axis=-1)
      ctx = (att @ v).transpose(0, 2, 1, 3).reshape(b, l, heads * d)
      h = ln(dense(ctx, n + "attention.output.dense") + h, n + "attention.output.LayerNorm")
      h = ln(dense(act(dense(h, n + "intermediate.dense")), n + "output.dense") + h, n + "output.LayerNorm")
    pooled = jnp.tanh(dense(h[:, 0], "pooler.dense"))
    return dense(pooled, "classifier")[:, 0]

  def __call__(self, references: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
    if len(references) != len(candidates):
      raise ConfigError(f"BLEURT: {len(references)} references vs {len(candidates)} candidates")
    out = []
    for i in range(0, len(references), self.batch_size):
      x = self.tokenizer(list(references[i:i + self.batch_size]), list(candidates[i:i + self.batch_size]),
                         padding="longest", truncation=True, max_length=self.max_length, return_tensors="np")
      ids, mask = x["input_ids"], x["attention_mask"]
      types = x.get("token_type_ids", np.zeros_like(ids))
      # one compiled program per length bucket (a multiple of LENGTH_BUCKET) at the full batch size: padded
      # positions are masked as keys and padded rows are dropped, so the scores do not depend on the padding
      n, length = ids.shape
      bucket = min(-(-length // LENGTH_BUCKET) * LENGTH_BUCKET, self.max_length)
      pad = ((0, self.batch_size - n), (0, bucket - length))
      ids = np.pad(ids, pad, constant_values=self.tokenizer.pad_token_id or 0)
      types, mask = np.pad(types, pad), np.pad(mask, pad)
      out.append(np.asarray(self._forward(self.params, jnp.asarray(ids, jnp.int32), jnp.asarray(types, jnp.int32),
                                          jnp.asarray(mask, jnp.int32)))[:n])
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0,), np.float32)
