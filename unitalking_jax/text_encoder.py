"""Frozen UMT5 text path of UniTalking (data.text = "umt5"), as Wan / diffusers' WanPipeline use it.

  ids, mask = tokenize(tokenizer, texts, length)            # numpy [B, length] int32 / bool
  module, params = load_text_encoder("wan/text_encoder")    # transformers UMT5EncoderModel directory
  feats = encode_text(module, params, ids, mask)            # jax [B, length, d_model] float32
  enc = TextEncoder("wan/tokenizer", "wan/text_encoder", 512)
  feats, mask = enc(["a man says hello", ...])               # numpy [B, 512, 4096] float32, [B, 512] bool

Semantics (diffusers WanPipeline._get_t5_prompt_embeds; Wan's own T5EncoderModel does the same):
  prompt -> prompt_clean (ftfy if installed, html unescape twice, whitespace collapsed and stripped)
  -> tokenizer(add_special_tokens=True, padding="max_length", max_length=length, truncation=True): right
  padded with the pad id; the EOS that UMT5's tokenizer appends is kept by truncation (the tokenizer reserves
  room for its special tokens) -> encoder(ids, attention_mask) last_hidden_state -> the first
  seq_len = sum(mask) rows kept, the rest replaced by zeros ("padded with zeros" in the UniTalking paper:
  text 512 tokens at full size). `mask` marks the kept rows. Wan's DiT itself has no text mask in its
  cross-attention (diffusers WanTransformer3DModel calls attn2 with no mask): it attends to the zero rows
  too. The encoder runs under stop_gradient (frozen).

Memory at full size: the UMT5-XXL encoder has ~5.7B parameters (embedding 256,384 x 4096 = 1.05B, 24 layers
x 193M); bfloat16 weights ~11.4 GB (float32 ~23 GB), activations of a 512-token prompt are small. It is not
part of the trained model: features are computed once per example in the data pipeline (or precomputed to
disk) and the trainer consumes them as batch["text"] [B, 512, 4096] with batch["text_mask"] [B, 512]; on
an H200 load it with dtype=bfloat16 next to nothing else, or on the host CPU for precomputation.
"""
from __future__ import annotations

import html
import json
import os
import re
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from shared.errors import CheckpointError, ConfigError, DataError
from shared.models.umt5 import UMT5Encoder

__all__ = ["clean_prompt", "tokenize", "encode_text", "load_text_encoder", "TextEncoder"]


def clean_prompt(text: str) -> str:
  """diffusers' Wan prompt_clean: ftfy.fix_text when installed, html unescape twice, whitespace collapsed."""
  try:
    import ftfy
    text = ftfy.fix_text(text)
  except ImportError:
    pass
  text = html.unescape(html.unescape(text)).strip()
  return re.sub(r"\s+", " ", text).strip()


def tokenize(tokenizer, texts: Sequence[str], length: int, *, clean: bool = True):
  """texts (B strings) -> (ids [B, length] int32, mask [B, length] bool), right padded / truncated with the
  tokenizer's own special tokens (UMT5: EOS appended, kept under truncation)."""
  if isinstance(texts, str):
    texts = [texts]
  if length < 1:
    raise ConfigError(f"text length {length}: expected >= 1")
  if tokenizer.pad_token_id is None:
    raise DataError("the tokenizer has no pad token: fixed-length text needs one (UMT5's is '<pad>' = 0)")
  texts = [clean_prompt(t) if clean else t for t in texts]
  enc = tokenizer(texts, padding="max_length", max_length=length, truncation=True, add_special_tokens=True,
                  return_attention_mask=True, padding_side="right", return_tensors="np")
  ids = np.asarray(enc["input_ids"], np.int32)
  mask = np.asarray(enc["attention_mask"]) > 0
  if ids.shape != (len(texts), length):
    raise DataError(f"tokenizer returned ids of shape {ids.shape}; expected {(len(texts), length)}")
  return ids, mask


def encode_text(module: UMT5Encoder, params, ids, mask):
  """ids [B, L] int, mask [B, L] bool (1 = token, right padded) -> features [B, L, d_model] float32: the
  frozen encoder's last hidden state on the first sum(mask) positions, zeros after (Wan's u[:seq_len]
  then zero padding). Jit-able; no gradient flows into the encoder."""
  mask = jnp.asarray(mask, bool)
  params = jax.lax.stop_gradient(params)
  h = module.apply({"params": params}, jnp.asarray(ids, jnp.int32), attention_mask=mask)
  h = jax.lax.stop_gradient(h).astype(jnp.float32)
  seq_len = jnp.sum(mask, axis=1, dtype=jnp.int32)
  keep = jnp.arange(mask.shape[1])[None, :] < seq_len[:, None]
  return jnp.where(keep[..., None], h, 0.0)


def _encoder_dir(path: str) -> str:
  """A UMT5 checkpoint dir, or a diffusers Wan pipeline root holding text_encoder/."""
  if os.path.isfile(os.path.join(path, "text_encoder", "config.json")):
    return os.path.join(path, "text_encoder")
  return path


def load_text_encoder(path: str, dtype=jnp.float32, *, compute_dtype=None):
  """-> (UMT5Encoder module, params) from a transformers UMT5EncoderModel / UMT5Model directory (e.g. the
  `text_encoder/` of Wan-AI/Wan2.2-TI2V-5B-Diffusers; a pipeline root is accepted too). dtype: params
  (bfloat16 at full size); compute_dtype: activations (default: dtype). Raises CheckpointError naming the
  directory if it is missing or is not a UMT5 checkpoint."""
  path = _encoder_dir(str(path))
  cfg_path = os.path.join(path, "config.json")
  if not os.path.isdir(path):
    raise CheckpointError(f"text encoder directory {path!r} does not exist: expected a transformers UMT5 "
                          "checkpoint (config.json + model.safetensors), e.g. Wan2.2 diffusers' text_encoder/")
  if not os.path.isfile(cfg_path):
    raise CheckpointError(f"{cfg_path} not found: the text encoder must be a transformers UMT5 checkpoint "
                          "directory (config.json with model_type 'umt5' + safetensors); Wan's original "
                          ".pth checkpoints are not read - use the diffusers release's text_encoder/")
  try:
    with open(cfg_path) as f:
      model_type = json.load(f).get("model_type")
  except (OSError, ValueError) as e:
    raise CheckpointError(f"{cfg_path}: unreadable config ({e})") from None
  if model_type != "umt5":
    raise CheckpointError(f"{cfg_path}: model_type {model_type!r}, expected 'umt5' (UniTalking's text encoder "
                          "is UMT5; T5 / mT5 checkpoints differ in their position bias and are not accepted)")
  from shared.weights import load_pretrained
  module, params = load_pretrained(path, dtype=dtype, compute_dtype=compute_dtype or dtype)
  if not isinstance(module, UMT5Encoder):
    raise CheckpointError(f"{path}: loaded a {type(module).__name__}, expected a UMT5Encoder")
  return module, params


class TextEncoder:
  """Texts -> fixed-length UMT5 features for a data pipeline or a sampling script.

  tokenizer: a tokenizer object or a local path (shared.text.tokenizers.load_tokenizer); encoder: a
  checkpoint path (load_text_encoder) or a (module, params) pair; length: fixed text length (512 full size).
  batch_size: if set, texts are encoded in chunks of exactly this many (the last padded with empty
  prompts), so the jitted encoder compiles once; otherwise once per distinct batch size.
  __call__(texts) -> (features [B, length, d_model] float32, mask [B, length] bool), numpy."""

  def __init__(self, tokenizer, encoder, length: int = 512, *, dtype=jnp.float32, compute_dtype=None,
               batch_size: int | None = None, clean: bool = True):
    if isinstance(tokenizer, (str, os.PathLike)):
      from shared.text.tokenizers import load_tokenizer
      tokenizer = load_tokenizer(str(tokenizer))
    if isinstance(encoder, (str, os.PathLike)):
      encoder = load_text_encoder(str(encoder), dtype, compute_dtype=compute_dtype)
    self.tokenizer = tokenizer
    self.module, self.params = encoder
    self.length, self.batch_size, self.clean = int(length), batch_size, clean
    if batch_size is not None and batch_size < 1:
      raise ConfigError(f"batch_size {batch_size}: expected >= 1 or None")
    module = self.module
    self._encode = jax.jit(lambda p, i, m: encode_text(module, p, i, m))

  @property
  def dim(self) -> int:
    return self.module.config.d_model

  def __call__(self, texts: Sequence[str] | str):
    if isinstance(texts, str):
      texts = [texts]
    texts = list(texts)
    n = len(texts)
    if self.batch_size is None:
      return self._run(texts)
    chunk = self.batch_size
    feats, masks = [], []
    for s in range(0, max(n, 1), chunk):
      part = texts[s:s + chunk]
      f, m = self._run(part + [""] * (chunk - len(part)))
      feats.append(f[:len(part)])
      masks.append(m[:len(part)])
    return np.concatenate(feats)[:n], np.concatenate(masks)[:n]

  def _run(self, texts):
    ids, mask = tokenize(self.tokenizer, texts, self.length, clean=self.clean)
    feats = self._encode(self.params, ids, mask)
    return np.asarray(jax.device_get(feats), np.float32), mask
