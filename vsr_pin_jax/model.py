"""VALLR-Pin stage I (Fig. 1, left): one visual encoder, a character decoder and a pinyin decoder.

  lips [B, T, H, W] uint8 mouth ROIs --normalise--> Conv3dResNet (3-D stem + per-frame ResNet-18/50,
      shared.nn.resnet; BatchNorm state)                                     F [B, T, C]
  --embed (Linear C -> Din; the CNVSRC baseline's `encoder.embed.0`)--> SANM encoder (FunASR SANMEncoder,
      shared.models.sanm)                                                    H [B, T, D]
  character branch: CTC head (ctc.ctc_lo) on H + SANM decoder (FunASR's Paraformer SANM decoder with causal
      FSMN memory, run autoregressively over embedded characters, cross-attending to H)
  pinyin branch (dual-decoder model only): CTC head on H + a lightweight Transformer decoder over toneless
      pinyin (shared.models.mbart's pre-LN decoder stack: learned positions, causal self-attention,
      cross-attention to H; its encoder half is never built)

Loss (task.py): L = α L_char + (1 − α) L_py, each λ_ctc CTC + (1 − λ_ctc) CE (paper eqs. 10-12).
`pinyin=False` is the paper's char-only baseline (α = 1, no pinyin parameters).
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from shared.errors import ConfigError
from shared.models.mbart import MBart, MBartConfig
from shared.models.sanm import CTCHead, SANMDecoder, SANMDecoderConfig, SANMEncoder, SANMEncoderConfig
from shared.nn.linear import Dense
from shared.nn.resnet import BLOCKS, Conv3dResNet, ResNetConfig
from vsr_pin_jax.data import normalize


@dataclasses.dataclass(frozen=True)
class PinyinDecoderConfig:
  layers: int = 2
  heads: int = 4
  ffn_dim: int = 1024
  max_len: int = 128          # learned positions (pinyin tokens incl. <bos>)


@dataclasses.dataclass(frozen=True)
class VallrPinConfig:
  frontend: ResNetConfig = ResNetConfig()
  encoder: SANMEncoderConfig = SANMEncoderConfig(input_size=512, output_size=256)
  decoder: SANMDecoderConfig = SANMDecoderConfig(sanm_shfit=None)
  pinyin_decoder: PinyinDecoderConfig = PinyinDecoderConfig()
  pinyin: bool = True          # False: the char-only baseline
  char_vocab: int = 4470
  pinyin_vocab: int = 400

  def __post_init__(self):
    d = self.encoder.output_size
    if self.decoder.encoder_output_size != d:
      raise ConfigError(f"model.decoder.encoder_output_size={self.decoder.encoder_output_size} must equal "
                        f"model.encoder.output_size={d}")
    if self.decoder.vocab_size != self.char_vocab:
      raise ConfigError(f"model.decoder.vocab_size={self.decoder.vocab_size} must equal model.char_vocab="
                        f"{self.char_vocab}")
    if not self.decoder.causal:
      raise ConfigError("model.decoder must have causal FSMN memory (sanm_shfit=None and num_blocks == "
                        "att_layer_num): the character decoder runs autoregressively")
    if self.pinyin and d % self.pinyin_decoder.heads:
      raise ConfigError(f"model.pinyin_decoder.heads={self.pinyin_decoder.heads} must divide the encoder "
                        f"width {d}")

  @property
  def frontend_dim(self) -> int:
    return 8 * self.frontend.width * BLOCKS[self.frontend.block]

  def pinyin_mbart(self) -> MBartConfig:
    p = self.pinyin_decoder
    return MBartConfig(vocab_size=self.pinyin_vocab, d_model=self.encoder.output_size, encoder_layers=1,
                       decoder_layers=p.layers, encoder_attention_heads=p.heads, decoder_attention_heads=p.heads,
                       encoder_ffn_dim=p.ffn_dim, decoder_ffn_dim=p.ffn_dim, max_position_embeddings=p.max_len,
                       scale_embedding=True, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                       decoder_start_token_id=1, forced_eos_token_id=None, dtype=self.encoder.dtype,
                       param_dtype=self.encoder.param_dtype, remat_policy=self.encoder.remat_policy,
                       attention_impl=self.encoder.attention_impl)


class VallrPin(nn.Module):
  """Param tree: frontend/..., embed/{kernel,bias}, encoder/..., ctc/..., decoder/..., and with pinyin:
  pinyin_ctc/..., pinyin_decoder/... (MBart decoder half). batch_stats: frontend/..."""
  config: VallrPinConfig

  def setup(self):
    c = self.config
    self.frontend = Conv3dResNet(c.frontend)
    self.embed = Dense(c.encoder.input_size, use_bias=True, kernel_axes=(None, "embed"),
                       dtype=jnp.dtype(c.encoder.dtype))
    self.encoder = SANMEncoder(c.encoder)
    self.ctc = CTCHead(c.char_vocab, c.encoder.output_size)
    self.decoder = SANMDecoder(c.decoder)
    if c.pinyin:
      self.pinyin_ctc = CTCHead(c.pinyin_vocab, c.encoder.output_size)
      self.pinyin_decoder = MBart(c.pinyin_mbart())

  def encode(self, lips, lengths, train: bool = False):
    """lips [B, T, H, W] uint8 (or normalised float), lengths [B] -> (H [B, T, D], mask [B, T] bool)."""
    x = normalize(lips) if jnp.issubdtype(lips.dtype, jnp.integer) else lips.astype(jnp.float32)
    mask = jnp.arange(x.shape[1])[None, :] < jnp.asarray(lengths)[:, None]
    f = self.frontend(x, train=train, mask=mask)
    h = self.encoder(self.embed(f), lengths, deterministic=not train)
    return h, mask

  def char_ctc(self, h):
    """H [B, T, D] -> character CTC log-probs [B, T, Vc] float32."""
    return self.ctc(h)

  def pinyin_logp(self, h):
    """H [B, T, D] -> pinyin CTC log-probs [B, T, Vp] float32."""
    return self.pinyin_ctc(h)

  def __call__(self, lips, lengths, chars_in, chars_mask, pinyin_in=None, pinyin_mask=None, train: bool = False):
    """Teacher forcing. chars_in [B, L] = <bos> + characters, chars_mask [B, L]; pinyin_in / pinyin_mask
    [B, M] likewise. -> dict: char_ctc [B, T, Vc], char_logits [B, L, Vc], mask [B, T] and, with the
    pinyin branch, pinyin_ctc [B, T, Vp], pinyin_logits [B, M, Vp] (all float32)."""
    h, mask = self.encode(lips, lengths, train)
    out = {"mask": mask, "char_ctc": self.ctc(h),
           "char_logits": self.decoder(chars_in, h, mask, chars_mask, deterministic=not train)}
    if self.config.pinyin:
      out["pinyin_ctc"] = self.pinyin_ctc(h)
      out["pinyin_logits"] = self.pinyin_decoder.decode(pinyin_in, h, encoder_attention_mask=mask,
                                                        decoder_attention_mask=pinyin_mask,
                                                        deterministic=not train)
    return out
