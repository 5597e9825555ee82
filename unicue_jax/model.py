"""UniCUE (Fig. 3): a pose-aware visual processor shared by cued-speech recognition (CSR) and video-to-speech
latent diffusion (CSV2S).

  frames I_v, pose maps I_p   [B, T, S, S, 3] uint8 (data.py)
  --normalise (ImageNet mean/std, both streams)-->
  E_V = ONE visual encoder for both streams (stacked on the batch axis: one program, shared BatchNorm):
        per-frame 2-D ResNet (shared.nn.resnet.Conv3dResNet, stem "conv2d": torchvision's 7x7/2 stem + BasicBlocks;
        BatchNorm state in the trainer's model_state)                         [B, T, C]
        -> temporal conv (Conv1d k, C -> D, GELU: short-term motion)          [B, T, D]
        -> Transformer encoder (learned positions from sinusoids, LayerNorm, pre-LN MBart encoder layers, final LayerNorm:
           long-range dependencies)                                           Z_v, Z_p [B, L = T, D]
  projection  Z_mv = MLP(concat(Z_v, Z_p)) (eq. 4; fc1 2D -> D, GELU, fc2 D -> D)   [B, L, D]
              (ablation no_pose: Z_mv = MLP(Z_v); the pose stream is not computed)

Stage 1, CSR (`UniCueCSR`): an MBart (shared.models.mbart; MBart-large-50 at paper size) whose
  decoder  D_T reads <decoder_start = </s>> y and cross-attends to Z_mv: T_p = D_T(Z_mv), cross-entropy L_R (eq. 1)
  encoder  is the semantic alignment pool's text encoder (the paper's "ViT-based text encoder"; here MBart's own
           encoder, so a pretrained MBart brings both, and the release is one transformers MBart): Z_t = enc("y </s>")
  L_S = (1 - cos(pool(Z_v), pool(Z_t))) + (1 - cos(pool(Z_p), pool(Z_t)))   (eqs. 5-6; `alignment_loss`)
  pool = the masked mean over the sequence (`masked_mean`): Z_v / Z_p have L = T frames, Z_t has N + 1 tokens; the
  mean of each sequence's valid positions is one D-vector whatever its length, unchanged by padding and by
  uniformly stretching a sequence in time (each frame repeated k times), so a clip and its transcript compare.
Stage 2, CSV2S (`UniCueV2S`): the processor (frozen, from stage 1 through init entries; trained from scratch in
  the single_v2s ablation) -> VisioPhonetic adapter (`VisioPhoneticAdapter`, eq. 7) -> the UNet's cross-attention
  states; a diffusers-layout UNet (shared.models.unet2d, AudioLDM's at paper size) predicts ε on the mel VAE's
  latents (shared.models.autoencoder_kl, AudioLDM's mel VAE; trained here by the 'vae' stage), eq. 3.
  Latents = VAE posterior sample x `latent_scale` (a frozen scalar parameter: 1 / std of the training latents,
  LDM's scale_by_std, set at a fresh start by task.post_init unless the config gives model.latent_scale).

VisioPhonetic adapter: h = MLP_in(Z_mv) [B, L, d]; a = CrossAttn(q = W_q LN(f), k = W_k LN(h), v = W_v LN(h)) with
  learnable queries f [L, d] (one per visual token, so the residual h + a is defined); Z'_mv = MLP_out(LN(h + a))
  [B, L, d_ctx] (d_ctx = the UNet's cross_attention_dim). The queries are initialised "from the diffusion model's
  latent space": at a fresh start task.post_init sets f[t] = the mean over training clips of the scaled VAE latent
  at (resampled) latent frame t, flattened over (mel bins / 4) x latent channels (adapter.query_init
  "latent_mean"; needs d = 16 x latent_channels: 128 for AudioLDM's VAE), else N(0, 0.02) ("normal").
  Ablation no_adapter: Z_mv goes to the UNet as it is (cross_attention_dim = D).
Time alignment (our addition, off at paper size): AudioLDM's UNet has no positional code, so its attn2 queries
cannot tell one latent frame from another and cross-attention alone cannot put syllable t at frame t (measured,
tiny, 1000 steps: template SER 1.02 vs chance 1.09, sync 0.38 vs 0.34 shuffled). model.time_channels P adds
sinusoids of the latent frame index (periods 6 to ~600 frames) as P extra UNet input channels (queries then know their time);
model.concat_condition k adds the adapter output Z'_mv, projected to k channels and resampled to the latent frames,
as k more input channels (a frame-aligned condition beside the cross-attention). Both widen conv_in only.
Oracle (a diagnostic, not the paper's): model.oracle_units > 0 replaces the processor by an embedding of the true
syllable of every frame (`syllables` [B, T] int32, 0 = silence, 1 + the syllable's pinyin id; data part
"syllables", SynthCue only): Z_mv = Embed(syllables) [B, T, D], the condition a perfect frame-aligned CSR
representation would give. Whatever the generator cannot learn from it, it cannot learn from the video.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from shared.errors import ConfigError
from shared.models.autoencoder_kl import AutoencoderKL, AutoencoderKLConfig
from shared.models.mbart import EncoderLayer, MBart, MBartConfig
from shared.models.unet2d import UNet2DCondition, UNet2DConfig
from shared.nn.conv import Conv
from shared.nn.linear import Dense, Embed
from shared.nn.mha import MultiHeadAttention
from shared.nn.mlp import MLP
from shared.nn.norms import LayerNorm
from shared.nn.positions import sinusoid_init, whisper_sinusoids
from shared.nn.resnet import Conv3dResNet, ResNetConfig
from shared.nn.scan import scan_layers

STAGES = ("csr", "v2s", "vae")
QUERY_INITS = ("latent_mean", "normal")
IMAGE_MEAN = (0.485, 0.456, 0.406)      # torchvision / ImageNet, for frames and pose maps alike
IMAGE_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class ProcessorConfig:
  frontend: ResNetConfig = ResNetConfig(block="basic", layers=(2, 2, 2, 2), act="relu", width=64, stem="conv2d",
                                        in_channels=3)
  dim: int = 1024                   # D (Z_v, Z_p, Z_mv); equals the MBart d_model
  temporal_kernel: int = 5
  layers: int = 6                   # Transformer encoder layers
  heads: int = 16
  ffn_dim: int = 4096
  max_frames: int = 512             # learned positions
  pose: bool = True                 # False: the no_pose ablation (video stream only)
  dtype: str = "float32"
  remat_policy: str = "none"
  attention_impl: str = "auto"

  def encoder_config(self) -> MBartConfig:
    """The Transformer encoder's layers are MBart encoder layers (pre-LN, GELU) of this width."""
    return MBartConfig(vocab_size=1, d_model=self.dim, encoder_layers=self.layers, decoder_layers=1,
                       encoder_attention_heads=self.heads, decoder_attention_heads=self.heads,
                       encoder_ffn_dim=self.ffn_dim, decoder_ffn_dim=self.ffn_dim,
                       max_position_embeddings=self.max_frames, dtype=self.dtype, remat_policy=self.remat_policy,
                       attention_impl=self.attention_impl)


@dataclasses.dataclass(frozen=True)
class AdapterConfig:
  enabled: bool = True              # False: the no_adapter ablation
  dim: int = 128                    # d (queries, cross-attention)
  queries: int = 256                # L: one query per visual token (= data.frames / temporal stride)
  heads: int = 8
  mlp_ratio: int = 4
  query_init: str = "latent_mean"   # QUERY_INITS


@dataclasses.dataclass(frozen=True)
class UniCueConfig:
  stage: str = "csr"                # STAGES: which model the config builds
  processor: ProcessorConfig = ProcessorConfig()
  mbart: MBartConfig = MBartConfig()
  adapter: AdapterConfig = AdapterConfig()
  unet: UNet2DConfig = UNet2DConfig()
  vae: AutoencoderKLConfig = AutoencoderKLConfig()
  align_weight: float = 1.0         # λ of L_S (0: the no_align ablation; the text encoder is then not run)
  latent_scale: float = 0.0         # > 0: this scale; 0: scale_by_std at a fresh start (task.post_init)
  freeze_processor: bool = True     # stage 2: the processor comes frozen from stage 1 (False: single_v2s)
  time_channels: int = 0            # stage 2: sinusoids of the latent frame index concatenated to the UNet input
  concat_condition: int = 0         # stage 2: channels of the frame-aligned condition concatenated to the UNet input
  oracle_units: int = 0             # stage 2 diagnostic, not the paper's: > 0 conditions on an embedding of the true
                                    # per-frame syllable id (ids < oracle_units) instead of the processor (Oracle)

  def __post_init__(self):
    if self.stage not in STAGES:
      raise ConfigError(f"model.stage={self.stage!r}: expected one of {STAGES}")
    p, a = self.processor, self.adapter
    if self.stage == "csr" and p.dim != self.mbart.d_model:
      raise ConfigError(f"model.processor.dim={p.dim} must equal model.mbart.d_model={self.mbart.d_model}: the "
                        "alignment pool compares Z_v / Z_p with the text encoder's Z_t in one space")
    if p.dim % p.heads:
      raise ConfigError(f"model.processor.heads={p.heads} must divide model.processor.dim={p.dim}")
    if p.temporal_kernel < 1 or p.temporal_kernel % 2 == 0:
      raise ConfigError(f"model.processor.temporal_kernel={p.temporal_kernel}: expected an odd size >= 1")
    if a.query_init not in QUERY_INITS:
      raise ConfigError(f"model.adapter.query_init={a.query_init!r}: expected one of {QUERY_INITS}")
    if self.oracle_units < 0 or (self.oracle_units and self.stage != "v2s"):
      raise ConfigError(f"model.oracle_units={self.oracle_units}: a stage-2 diagnostic (stage 'v2s'), >= 0")
    if self.stage == "v2s":
      u = self.unet
      extra = self.time_channels + self.concat_condition
      if u.in_channels != self.vae.latent_channels + extra or u.out_channels != self.vae.latent_channels:
        raise ConfigError(f"model.unet in/out_channels ({u.in_channels}/{u.out_channels}) must be "
                          f"model.vae.latent_channels + time_channels + concat_condition = "
                          f"{self.vae.latent_channels + extra} / model.vae.latent_channels={self.vae.latent_channels}")
      if u.context_dim is None:
        raise ConfigError("model.unet.cross_attention_dim must be one int d (the visual sequence [B, L, d] enters "
                          "every attn2), not per-block channels")
      want = u.context_dim
      got = a.dim if a.enabled else p.dim
      if a.enabled and a.dim % a.heads:
        raise ConfigError(f"model.adapter.heads={a.heads} must divide model.adapter.dim={a.dim}")
      if not a.enabled and got != want:
        raise ConfigError(f"no adapter: model.unet.cross_attention_dim={want} must equal model.processor.dim={got}")
      if u.class_embed_type is not None and u.projection_class_embeddings_input_dim is None:
        raise ConfigError("model.unet.class_embed_type needs projection_class_embeddings_input_dim")


# ----------------------------------------------------------------------------------------------- pieces

def normalize_images(x):
  """uint8 [..., 3] -> float32 ImageNet-normalised."""
  x = x.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(IMAGE_MEAN, jnp.float32)) / jnp.asarray(IMAGE_STD, jnp.float32)


def masked_mean(z, mask):
  """The alignment pool's pooling: z [B, L, D], mask [B, L] (True = valid) -> [B, D] float32, the mean over
  the valid positions (length-free: padding and uniform time-stretching leave it unchanged)."""
  m = mask.astype(jnp.float32)[..., None]
  return jnp.sum(z.astype(jnp.float32) * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)


def cosine(a, b, eps: float = 1e-8):
  """Row-wise cosine similarity of [B, D] -> [B] float32."""
  a, b = a.astype(jnp.float32), b.astype(jnp.float32)
  return jnp.sum(a * b, -1) / jnp.maximum(jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1), eps)


def alignment_loss(z_v, z_p, v_mask, z_t, t_mask, kind: str = "cosine", temperature: float = 0.07):
  """L_S per utterance [B].

  kind "cosine" (eqs. 5-6 as written): (1 - cos(pool Z_v, pool Z_t)) + (1 - cos(pool Z_p, pool Z_t)); z_p None
  (no pose stream) drops its term. Without negatives it has a trivial minimum (every pooled vector along one
  direction); measured at tiny size: L_S < 0.01 within 400 steps.
  kind "contrastive" (the "video-text / pose-text contrastive learning" the paper's text describes; CLIP-style):
  per pair, the symmetric InfoNCE over the batch of cosine similarities / temperature (row i's positive is
  column i), so the other clips of the batch are the negatives."""
  t = masked_mean(z_t, t_mask)
  streams = [masked_mean(z_v, v_mask)] + ([] if z_p is None else [masked_mean(z_p, v_mask)])
  if kind == "cosine":
    return sum(1.0 - cosine(v, t) for v in streams)
  if kind != "contrastive":
    raise ConfigError(f"alignment kind {kind!r}: expected 'cosine' or 'contrastive'")
  tn = t / jnp.maximum(jnp.linalg.norm(t, axis=-1, keepdims=True), 1e-8)
  loss = 0.0
  for v in streams:
    vn = v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-8)
    logits = vn @ tn.T / temperature
    labels = jnp.arange(v.shape[0])
    loss = loss + 0.5 * (optax.softmax_cross_entropy_with_integer_labels(logits, labels)
                         + optax.softmax_cross_entropy_with_integer_labels(logits.T, labels))
  return loss


class TransformerEncoder(nn.Module):
  """x [B, L, D] -> [B, L, D]: + learned positions, LayerNorm, scanned pre-LN MBart encoder layers, LayerNorm.
  The position table starts as sinusoids (unit scale, so the decoder's cross-attention can tell frames apart
  from the first step; tiny CSR, held-out CER at step 500: 0.88 from sinusoids, 0.99 from N(0, 0.02), which
  reached 0.89 only at step 1000)."""
  config: ProcessorConfig

  @nn.compact
  def __call__(self, x, mask, deterministic: bool = True):
    c = self.config
    mc = c.encoder_config()
    l = x.shape[1]
    if l > c.max_frames:
      raise ConfigError(f"{l} visual tokens exceed model.processor.max_frames={c.max_frames}")
    dt = jnp.dtype(c.dtype)
    h = x.astype(dt) + Embed(c.max_frames, c.dim, dtype=dt, embedding_axes=(None, "embed"),
                             embedding_init=sinusoid_init, name="positions")(jnp.arange(l))[None]
    h = LayerNorm(mc.layer_norm_eps, dtype=dt, name="layernorm_embedding")(h)
    stack = scan_layers(EncoderLayer, mc, mc.encoder_layers, (nn.broadcast, nn.broadcast), 3)(mc, name="layers")
    h, _ = stack(h, mask[:, None, None, :], deterministic)
    return LayerNorm(mc.layer_norm_eps, dtype=dt, name="layer_norm")(h)


class PoseAwareProcessor(nn.Module):
  """Param tree: frontend/ (Conv3dResNet, stem conv2d; batch_stats too), temporal/kernel,bias, encoder/
  (positions, layernorm_embedding, layers, layer_norm), fuse/fc1,fc2."""
  config: ProcessorConfig

  def setup(self):
    c = self.config
    self.frontend = Conv3dResNet(c.frontend)
    k = c.temporal_kernel
    self.temporal = Conv(c.dim, (k,), padding=((k // 2, k // 2),), dtype=jnp.dtype(c.dtype))
    self.encoder = TransformerEncoder(c)
    self.fuse = MLP(c.dim, "gelu", True, out_features=c.dim, dtype=jnp.dtype(c.dtype))

  def encode(self, images, mask, train: bool = False):
    """E_V: images [N, T, S, S, 3] uint8, mask [N, T] -> [N, T, D] float32 (padded frames zero)."""
    m = mask.astype(bool)
    f = self.frontend(normalize_images(images), train=train, mask=m)
    h = jax.nn.gelu(self.temporal(f), approximate=False)
    h = jnp.where(m[..., None], h, 0)
    h = self.encoder(h, m, deterministic=not train)
    return jnp.where(m[..., None], h, 0).astype(jnp.float32)

  def __call__(self, video, pose_maps, mask, train: bool = False):
    """-> (Z_v, Z_p or None, Z_mv), each [B, T, D] float32."""
    b = video.shape[0]
    if self.config.pose:
      z = self.encode(jnp.concatenate([video, pose_maps], 0), jnp.concatenate([mask, mask], 0), train)
      z_v, z_p = z[:b], z[b:]
      z_mv = self.fuse(jnp.concatenate([z_v, z_p], -1))
    else:
      z_v, z_p = self.encode(video, mask, train), None
      z_mv = self.fuse(z_v)
    return z_v, z_p, jnp.where(mask[..., None], z_mv, 0).astype(jnp.float32)


class VisioPhoneticAdapter(nn.Module):
  """Z_mv [B, L, D] -> Z'_mv [B, L, out_dim] (module docstring). Params: queries [L, d], mlp_in, norm_q, norm_kv,
  cross_attn/{q,k,v,out}_proj, norm_out, mlp_out."""
  config: AdapterConfig
  out_dim: int

  @nn.compact
  def __call__(self, z_mv, mask):
    c = self.config
    b, l, _ = z_mv.shape
    if l != c.queries:
      raise ConfigError(f"the adapter has {c.queries} queries (model.adapter.queries) but the processor gives {l} "
                        "visual tokens: they must be equal (Z_mv + a)")
    queries = self.param("queries", nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "embed")),
                         (c.queries, c.dim), jnp.float32)
    h = MLP(c.dim * c.mlp_ratio, "gelu", True, out_features=c.dim, name="mlp_in")(z_mv)
    q = LayerNorm(1e-5, name="norm_q")(jnp.broadcast_to(queries[None], (b, l, c.dim)))
    a, _ = MultiHeadAttention(c.heads, c.dim // c.heads, name="cross_attn")(
        q, context=LayerNorm(1e-5, name="norm_kv")(h), mask=mask.astype(bool)[:, None, None, :])
    y = LayerNorm(1e-5, name="norm_out")(h + a)
    return MLP(c.dim * c.mlp_ratio, "gelu", True, out_features=self.out_dim, name="mlp_out")(y)


# ----------------------------------------------------------------------------------------------- stage 1: CSR

class UniCueCSR(nn.Module):
  """Stage 1. Param tree: processor/..., mbart/... (encoder = the alignment pool's text encoder, decoder = D_T).
  batch_stats: processor/frontend/..."""
  config: UniCueConfig

  def setup(self):
    self.processor = PoseAwareProcessor(self.config.processor)
    self.mbart = MBart(self.config.mbart)

  def visual(self, video, pose_maps, mask, train: bool = False):
    return self.processor(video, pose_maps, mask, train)

  def text(self, ids, mask):
    """Z_t [B, N, D]: the text encoder over ground-truth tokens "y </s>"."""
    return self.mbart.encode(ids, attention_mask=mask)

  def decode(self, dec_in, dec_mask, z_mv, mask):
    """Teacher-forced D_T: logits [B, N, V] float32."""
    return self.mbart.decode(dec_in, z_mv, encoder_attention_mask=mask, decoder_attention_mask=dec_mask)

  def __call__(self, video, pose_maps, mask, dec_in, dec_mask, text_in=None, text_mask=None, train: bool = False):
    """-> dict z_v, z_p (None without pose), z_mv, logits and, with text_in, z_t."""
    z_v, z_p, z_mv = self.processor(video, pose_maps, mask, train)
    out = {"z_v": z_v, "z_p": z_p, "z_mv": z_mv, "logits": self.decode(dec_in, dec_mask, z_mv, mask)}
    if text_in is not None:
      out["z_t"] = self.text(text_in, text_mask)
    return out


# ----------------------------------------------------------------------------------------------- stage 2: CSV2S

class UniCueV2S(nn.Module):
  """Stage 2. Param tree: processor/... (frozen), adapter/... (VPA), unet/..., vae/... (frozen), latent_scale []
  (frozen), and class_proj/ when the UNet has a class embedding (AudioLDM's CLAP slot: here the L2-normalised
  projection of the masked mean of Z'_mv, a per-clip voice / cuer condition). batch_stats: processor/frontend."""
  config: UniCueConfig

  def setup(self):
    c = self.config
    self.processor = PoseAwareProcessor(c.processor)
    if c.adapter.enabled:
      self.adapter = VisioPhoneticAdapter(c.adapter, c.unet.context_dim)
    if c.unet.class_embed_type is not None:
      self.class_proj = Dense(c.unet.projection_class_embeddings_input_dim, True, (None, "embed"))
    if c.concat_condition:
      self.cond_proj = Dense(c.concat_condition, True, (None, "embed"))
    if c.oracle_units:
      self.oracle = Embed(c.oracle_units, c.processor.dim)
    self.unet = UNet2DCondition(c.unet)
    self.vae = AutoencoderKL(c.vae)
    self.latent_scale = self.param("latent_scale", nn.with_logical_partitioning(nn.initializers.ones, ()), (),
                                   jnp.float32)

  def condition(self, video, pose_maps, mask, train: bool = False, syllables=None):
    """-> (context [B, L, d_ctx], class_labels [B, P] or None): what the UNet is conditioned on. syllables [B, T]
    int32: the oracle's input (model.oracle_units > 0), else unused."""
    if self.config.oracle_units:
      if syllables is None:
        raise ConfigError("model.oracle_units > 0 conditions on the true syllables: the batch needs 'syllables' "
                          "[B, T] (data part 'syllables', SynthCue only)")
      z_mv = jnp.where(mask[..., None], self.oracle(syllables), 0).astype(jnp.float32)
    else:
      _, _, z_mv = self.processor(video, pose_maps, mask, train and not self.config.freeze_processor)
      if self.config.freeze_processor:
        z_mv = jax.lax.stop_gradient(z_mv)
    ctx = self.adapter(z_mv, mask) if self.config.adapter.enabled else z_mv
    labels = None
    if self.config.unet.class_embed_type is not None:
      g = self.class_proj(masked_mean(ctx, mask))
      labels = g / jnp.maximum(jnp.linalg.norm(g, axis=-1, keepdims=True), 1e-6)
    return ctx, labels

  def denoise(self, latents, t, ctx, labels, mask):
    """ε-prediction M(Z_s^t, Z_mv, t): latents [B, H, W, C] -> [B, H, W, C] float32. With time_channels /
    concat_condition, the UNet input is [latents, time sinusoids, frame-aligned condition] on the channel axis."""
    c = self.config
    b, h, w, _ = latents.shape
    x = [latents.astype(jnp.float32)]
    if c.time_channels:
      pos = jnp.asarray(whisper_sinusoids(h, c.time_channels, 100.0))               # [H, P]
      x.append(jnp.broadcast_to(pos[None, :, None, :], (b, h, w, c.time_channels)))
    if c.concat_condition:
      g = self.cond_proj(jnp.where(mask[..., None], ctx, 0).astype(jnp.float32))      # [B, L, k]
      g = jax.image.resize(g, (b, h, g.shape[-1]), "linear") if g.shape[1] != h else g
      x.append(jnp.broadcast_to(g[:, :, None, :], (b, h, w, g.shape[-1])))
    x = jnp.concatenate(x, -1) if len(x) > 1 else x[0]
    return self.unet(x, t, encoder_hidden_states=ctx, class_labels=labels, encoder_attention_mask=mask)

  def encode_mel(self, mel):
    """mel [B, M, 64] (normalised as the VAE was trained) -> (mean, logvar) [B, M/4, 16, C] (unscaled)."""
    return self.vae.encode(mel[..., None])

  def decode_latents(self, latents):
    """Scaled latents [B, h, w, C] -> mel [B, M, 64] (VAE's input scale)."""
    return self.vae.decode(latents / self.latent_scale)[..., 0]

  def __call__(self, latents, t, video, pose_maps, mask, train: bool = False, syllables=None):
    ctx, labels = self.condition(video, pose_maps, mask, train, syllables)
    return self.denoise(latents, t, ctx, labels, mask)

  def init_all(self, video, pose_maps, mask, mel, syllables=None):
    """Creates every parameter (the VAE's too)."""
    mean, _ = self.encode_mel(mel)
    z = mean * self.latent_scale
    t = jnp.zeros((mel.shape[0],), jnp.int32)
    eps = self(z, t, video, pose_maps, mask, syllables=syllables)
    return eps, self.decode_latents(z)


def model_config(cfg) -> UniCueConfig:
  """A run config's model section as a UniCueConfig (strict: shared.config.from_section); stage 1's MBart vocabulary
  size comes from the data's units."""
  from shared.config import from_section
  runtime = {}
  if cfg.model.stage == "csr":
    from unicue_jax import data as data_lib
    runtime["mbart"] = dict(vocab_size=len(data_lib.vocab(cfg.data)))
  return from_section(UniCueConfig, cfg.model, **runtime)


def model_from_config(cfg) -> nn.Module:
  """The stage's module (the 'vae' stage: the bare AutoencoderKL) from a run config (e.g. restore(workdir,
  model_fn=model_from_config)) or a UniCueConfig."""
  c = cfg if isinstance(cfg, UniCueConfig) else model_config(cfg)
  if c.stage == "csr":
    return UniCueCSR(c)
  if c.stage == "v2s":
    return UniCueV2S(c)
  return AutoencoderKL(c.vae)
