"""The UniTalking release: a self-contained pipeline directory in the diffusers convention, and its reader.

Written by `python -m unitalking_jax.export --workdir W --out R [--dtype bfloat16]`:

  R/model_index.json            {"_class_name": "UniTalkingPipeline", component: [library, class], ...,
                                 "_unitalking": the media settings below (frames, fps, sizes, text length)}
  R/transformer/                what the export wrote before releases (so UniTalkingTorch.from_export(R/transformer)
                                 loads it): video_stream/ (diffusers WanTransformer3DModel),
                                 unitalking_rest.safetensors (every other parameter by its Flax name),
                                 unitalking_config.json (the UniTalkingConfig + the training config), plus
    audio_stream/               the audio twin as a second WanTransformer3DModel directory (patch (1, 1, 1),
                                 image_dim = ref_dim, added_kv_proj_dim = dim: the reference K/V); the PyTorch
                                 pipeline reads it, so it needs no Flax name table (its weights are also in
                                 the rest file, twice the audio twin's bytes on disk)
  R/vae/                        config.json (codecs.PixelCodec's space-to-depth factor, frame side, whiten) +
                                 pca.safetensors (codecs.PCA: mean [3 f^2], components [C, 3 f^2], scale [C] | [1])
  R/audio_vae/                  config.json (codecs.MelCodec: the log-mel preset and its fields, mean / std
                                 normalisation) + pca.safetensors (mean [n_mels], components [C, n_mels], scale [1])
  R/vocoder/config.json         {"_class_name": "MelCodec", "vocoder": "griffin_lim", "n_iter": ...}: the tiny
                                 configs' mel -> waveform (no weights; a BigVGAN in NVIDIA's layout would go here)
  With the trained VAE codecs (data.video_codec = "wan_vae", data.audio_codec = "mel_vae"; "_unitalking".codec
  = "vae", with the latent shapes "video_shape" [t, h, w, Cv], "audio_shape" [Ta, Ca], "ref_shape" [R, ref_dim]):
  R/vae/                        the Wan VAE as trained: diffusers AutoencoderKLWan (config.json with
                                 latents_mean / latents_std, diffusion_pytorch_model.safetensors)
  R/audio_vae/                  codec.json + mel_vae.safetensors (shared.models.av_codec.save_mel_vae_audio_codec:
                                 MMAudio key names, mel config, latent statistics) + config.json naming them
  R/vocoder/config.json         {"_class_name": "GriffinLim", ...} on the mel VAE's log10 mel, or, when the config
                                 has data.vocoder_path, BigVGAN in NVIDIA's release layout (model_index
                                 ["bigvgan", "BigVGAN"]): config.json (NVIDIA's h keys + "mel_log", the log base
                                 it takes) + bigvgan_generator.pt ({"generator": state_dict}), written by
                                 shared.weights.bigvgan_family.save_bigvgan; PyTorch reads it with PyPI bigvgan's
                                 BigVGAN, JAX with shared.models.bigvgan. Both feed it the VAE's log10 mel scaled
                                 to its base (x ln 10 for NVIDIA's natural-log mel: features.vocoder_mel_scale)
  Media <-> latents then go through codecs.VAECodecs over the framework's networks, attached after loading
  (jax_codecs(rel) here; torch_pipeline.torch_codecs: diffusers AutoencoderKLWan + torch_mel_vae.MelVAE).
  R/tokenizer/tokenizer.json    data.text = "pinyin" (the tiny default): {"type": "pinyin_syllables", "vocab":
                                 [id -> syllable], "pad_id", "unk_id", "max_length"}: text -> ids of the
                                 transformer's learned text table (Chinese characters -> syllables by pypinyin)
  R/text_encoder/ + R/tokenizer/   data.text = "umt5": copies of data.text_encoder (transformers UMT5EncoderModel
                                 directory) and data.text_tokenizer (a tokenizer.json file or a tokenizer
                                 directory): prompt -> features [S, text_dim] as unitalking_jax/text_encoder.py
                                 (prompt cleaned, padded / truncated to S, rows after the tokens zeroed)
  R/scheduler/scheduler_config.json   diffusers FlowMatchEulerDiscreteScheduler (sampler "euler") or
                                 UniPCMultistepScheduler (sampler "unipc": flow sigmas, flow_prediction) config,
                                 plus the sampling defaults under "_sampling" (a private key: diffusers'
                                 from_pretrained reads the file without a warning): "sampler",
                                 "num_inference_steps", "guidance_scale" (text), "ref_guidance_scale" (reference)

Reference audio (tr2av): "_unitalking".ref_len = 0: the first T frames of the given voice encoded as the clip's
audio latents, in ref_shape's r-latent tokens; N > 0 (data.ref_len, the paper's fixed 257): the voice at its own
length (ref_audio_tokens: ceil(S / (r x samples per latent)) tokens, at most N), truncated / zero-padded to N
tokens (codecs.fixed_length), identically in both frameworks.

Generation (both frameworks, same numbers for the same initial noise): the batch is built by `inputs` (here,
numpy): text ids [1, S] + mask, the given frame / video latents, reference-audio tokens; the task follows the
inputs (none: t2av, image: ti2av, video: tv2a, ref_audio: tr2av). Initial noise: one array [1, Nv + Na] (the
video latents [1, t, h, w, Cv] flattened, then the audio latents [1, Ta, Ca]; PCA t = T, Ta = 4 T); JAX draws it as
jax.random.normal(jax.random.key(seed), [1, Nv + Na]) (unitalking_jax.task.make_generate); the PyTorch pipeline
takes it as `noise=` (or draws its own from a torch.Generator). Latents -> media by the PCA codecs here
(numpy) or the attached VAE codecs: frames [T, H, W, 3] uint8, audio [T * 640] float32 at 16 kHz (Griffin-Lim).

This module imports neither JAX nor torch (the PyTorch pipeline reads releases through it); `jax_generate`
imports JAX when called.
"""
from __future__ import annotations

import dataclasses
import html
import json
import os
import re
import shutil

import numpy as np

from shared.errors import CheckpointError, ConfigError, DataError
from unitalking_jax.codecs import (MEL_PER_FRAME, PCA, SAMPLE_RATE, SAMPLES_PER_FRAME, MelCodec, PixelCodec,
                                   ref_audio_tokens)

PIPELINE_CLASS = "UniTalkingPipeline"
TRANSFORMER, VIDEO_STREAM, AUDIO_STREAM = "transformer", "video_stream", "audio_stream"
REST_FILE, CONFIG_FILE, CONFIG_KEY = "unitalking_rest.safetensors", "unitalking_config.json", "unitalking_model"
INDEX_FILE, META_KEY, PCA_FILE = "model_index.json", "_unitalking", "pca.safetensors"
SCHEDULER_FILE = os.path.join("scheduler", "scheduler_config.json")
TOKENIZER_FILE = os.path.join("tokenizer", "tokenizer.json")
TASKS = ("t2av", "tv2a", "ti2av", "tr2av")
TASK_INPUT = {"tv2a": "video", "ti2av": "image", "tr2av": "ref_audio"}   # the one input each task needs
SCHEDULERS = {"euler": "FlowMatchEulerDiscreteScheduler", "unipc": "UniPCMultistepScheduler"}
SAMPLING_KEY = "_sampling"   # in scheduler_config.json: private to diffusers (its from_config skips "_" keys)
SAMPLING_KEYS = ("sampler", "num_inference_steps", "guidance_scale", "ref_guidance_scale")
BIGVGAN_FILE = "bigvgan_generator.pt"   # vocoder/ in NVIDIA's layout (with config.json)


# ------------------------------------------------------------------------------------------------ writing

def _write_json(path: str, obj: dict) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=2, sort_keys=True, ensure_ascii=False)
    f.write("\n")


def _write_arrays(path: str, arrays: dict) -> None:
  from safetensors.numpy import save_file
  os.makedirs(os.path.dirname(path), exist_ok=True)
  save_file({k: np.ascontiguousarray(np.atleast_1d(np.asarray(v, np.float32))) for k, v in arrays.items()}, path)


def scheduler_config(sampling) -> dict:
  """cfg.sampling -> scheduler/scheduler_config.json: the diffusers scheduler equal to shared.diffusion's plan
  (euler_plan = FlowMatchEulerDiscreteScheduler(shift); unipc_plan = UniPCMultistepScheduler with flow sigmas,
  as Wan configures it) + the sampling defaults."""
  name = str(sampling.sampler)
  if name not in SCHEDULERS:
    raise ConfigError(f"config key sampling.sampler = {name!r}: expected one of {sorted(SCHEDULERS)}")
  out = {"_class_name": SCHEDULERS[name], "num_train_timesteps": 1000}
  if name == "euler":
    out.update(shift=float(sampling.shift), use_dynamic_shifting=False, base_shift=0.5, max_shift=1.15,
               invert_sigmas=False, shift_terminal=None, use_karras_sigmas=False, stochastic_sampling=False)
  else:
    out.update(flow_shift=float(sampling.shift), use_flow_sigmas=True, prediction_type="flow_prediction",
               solver_order=2, solver_type="bh2", predict_x0=True, lower_order_final=True,
               final_sigmas_type="zero", timestep_spacing="linspace")
  out[SAMPLING_KEY] = dict(sampler=name, num_inference_steps=int(sampling.steps),
                           guidance_scale=float(sampling.text_scale), ref_guidance_scale=float(sampling.ref_scale))
  return out


def write_components(out: str, cfg, codecs, model_config) -> None:
  """Everything in R/ beside transformer/: model_index.json, vae/, audio_vae/, vocoder/, tokenizer/, scheduler/.
  cfg: the training config (data / sampling sections); codecs: unitalking_jax.data.Codecs (fitted) or
  codecs.VAECodecs (data.video_codec = "wan_vae": write_vae_components); model_config: the UniTalkingConfig."""
  d = cfg.data
  if d.text not in ("pinyin", "umt5"):
    raise ConfigError(f"config key data.text = {d.text!r}: expected 'pinyin' or 'umt5'")
  if getattr(codecs, "kind", "pca") == "vae":
    write_vae_components(out, cfg, model_config, codecs)
    return
  ref_len = int(d.get("ref_len", 0) or 0)
  ref_meta = {"ref_len": ref_len, "ref_shape": [ref_len, MEL_PER_FRAME * int(model_config.audio_channels)]} \
      if ref_len else {}
  side = int(d.get("face_crop", 0)) or int(d.frame_size)
  pv, pa, mel = codecs.pca_video, codecs.pca_audio, codecs.mel
  _write_json(os.path.join(out, "vae", "config.json"), {
      "_class_name": "PCA", "codec": "pixel space-to-depth + PCA", "pixel_factor": int(codecs.pix.factor), "frame_size": side,
      "latent_channels": pv.width, "whiten": bool(np.ndim(pv.scale))})
  _write_arrays(os.path.join(out, "vae", PCA_FILE), {"mean": pv.mean, "components": pv.components,
                                                     "scale": pv.scale})
  _write_json(os.path.join(out, "audio_vae", "config.json"), {
      "_class_name": "PCA", "codec": "normalised log-mel + PCA", "preset": mel.preset, "mel": dataclasses.asdict(mel.mel),
      "mel_mean": float(mel.mean), "mel_std": float(mel.std), "latent_channels": pa.width})
  _write_arrays(os.path.join(out, "audio_vae", PCA_FILE), {"mean": pa.mean, "components": pa.components,
                                                           "scale": pa.scale})
  _write_json(os.path.join(out, "vocoder", "config.json"), {
      "_class_name": "MelCodec", "vocoder": "griffin_lim", "n_iter": int(cfg.sampling.griffin_lim_iters), "seed": 0})
  text = _write_text_path(out, d)
  _write_json(os.path.join(out, SCHEDULER_FILE), scheduler_config(cfg.sampling))
  tp = "unitalking_jax.torch_pipeline"
  _write_json(os.path.join(out, INDEX_FILE), {
      "_class_name": PIPELINE_CLASS, "_diffusers_version": "0.42.1",
      TRANSFORMER: [tp, "UniTalkingTransformer"], "vae": ["unitalking_jax.codecs", "PCA"],
      "audio_vae": ["unitalking_jax.codecs", "PCA"], "vocoder": ["unitalking_jax.codecs", "MelCodec"], **text,
      "scheduler": ["diffusers", SCHEDULERS[str(cfg.sampling.sampler)]],
      META_KEY: {"frames": int(d.frames), "frame_size": side, "fps": 25, "sample_rate": SAMPLE_RATE,
                 "mel_per_frame": MEL_PER_FRAME, "text": str(d.text), "text_len": int(d.text_len),
                 "tasks": list(TASKS), "latent_side": side // int(codecs.pix.factor),
                 "video_channels": int(model_config.video.in_channels),
                 "audio_channels": int(model_config.audio_channels), **ref_meta}})


def write_vae_components(out: str, cfg, model_config, codecs=None) -> None:
  """write_components for the trained VAE codecs: vae/ = the Wan VAE directory as trained (diffusers
  AutoencoderKLWan: config.json with latents_mean / latents_std + diffusion_pytorch_model.safetensors), audio_vae/
  = the mel VAE codec directory (codec.json: VAE + mel config + latent statistics; mel_vae.safetensors in
  MMAudio's key names) + a config.json naming it, vocoder/ = Griffin-Lim settings on the VAE's mel, or the
  BigVGAN of data.vocoder_path (checked against the codec's mel when codecs are loaded) in NVIDIA's layout.
  codecs: the loaded VAECodecs (their vocoder is written); None: loaded here when data.vocoder_path is set."""
  from unitalking_jax import data as data_lib
  d = cfg.data
  vdir, adir = data_lib.vae_codec_dirs(cfg)
  lay = data_lib.latent_layout(cfg)
  for src, dst in ((vdir, "vae"), (adir, "audio_vae")):
    os.makedirs(os.path.join(out, dst), exist_ok=True)
    for f in sorted(os.listdir(src)):
      if os.path.isfile(os.path.join(src, f)) and (f.endswith(".json") or f.endswith(".safetensors")):
        shutil.copy2(os.path.join(src, f), os.path.join(out, dst, f))
  _write_json(os.path.join(out, "audio_vae", "config.json"), {
      "_class_name": "MelVAE", "codec": "MMAudio-style mel VAE (shared.models.mmaudio_vae)",
      "codec_file": "codec.json", "weights": "mel_vae.safetensors", "latent_rate": 31.25,
      "latent_channels": int(d.audio_pca)})
  tp = "unitalking_jax.torch_pipeline"
  vocoder = [tp, "GriffinLim"]
  if data_lib.vocoder_path(cfg):
    from shared.weights.bigvgan_family import save_bigvgan
    voc = (codecs if codecs is not None else data_lib.codecs(cfg)).audio.vocoder
    shutil.rmtree(os.path.join(out, "vocoder"), ignore_errors=True)
    save_bigvgan(voc[1], voc[0].config, os.path.join(out, "vocoder"))
    vocoder = ["bigvgan", "BigVGAN"]
  else:
    _write_json(os.path.join(out, "vocoder", "config.json"), {
        "_class_name": "GriffinLim", "vocoder": "griffin_lim", "n_iter": int(cfg.sampling.griffin_lim_iters),
        "seed": 0, "mel": "audio_vae/codec.json"})
  text = _write_text_path(out, d)
  _write_json(os.path.join(out, SCHEDULER_FILE), scheduler_config(cfg.sampling))
  side = int(d.get("face_crop", 0)) or int(d.frame_size)
  _write_json(os.path.join(out, INDEX_FILE), {
      "_class_name": PIPELINE_CLASS, "_diffusers_version": "0.42.1",
      TRANSFORMER: [tp, "UniTalkingTransformer"], "vae": ["diffusers", "AutoencoderKLWan"],
      "audio_vae": ["unitalking_jax.torch_mel_vae", "MelVAE"], "vocoder": vocoder, **text,
      "scheduler": ["diffusers", SCHEDULERS[str(cfg.sampling.sampler)]],
      META_KEY: {"codec": "vae", "frames": int(d.frames), "frame_size": side, "fps": 25, "sample_rate": SAMPLE_RATE,
                 "text": str(d.text), "text_len": int(d.text_len), "tasks": list(TASKS),
                 "latent_side": lay["video"][1], "video_channels": int(model_config.video.in_channels),
                 "audio_channels": int(model_config.audio_channels), "video_shape": list(lay["video"]),
                 "audio_shape": list(lay["audio"]), "ref_shape": list(lay["ref"]),
                 "ref_len": data_lib.ref_len(cfg)}})


def _write_text_path(out: str, d) -> dict:
  """tokenizer/ (+ text_encoder/) for data.text; -> their model_index.json entries."""
  if d.text == "pinyin":
    from shared.text.pinyin import pinyin_vocab
    vocab = pinyin_vocab()
    _write_json(os.path.join(out, TOKENIZER_FILE), {
        "type": "pinyin_syllables", "vocab": list(vocab.tokens), "pad_id": int(vocab.pad_id),
        "unk_id": int(vocab.unk_id), "max_length": int(d.text_len)})
    # the learned syllable table lives in the transformer (text_embed / text_pos_embed)
    return {"tokenizer": ["shared.text.pinyin", "Vocab"], "text_encoder": [None, None]}
  tok, enc = str(d.get("text_tokenizer", "")), str(d.get("text_encoder", ""))
  for key, path in (("data.text_tokenizer", tok), ("data.text_encoder", enc)):
    if not path or not os.path.exists(path):
      raise ConfigError(f"config key {key} = {path!r}: data.text='umt5' needs the local tokenizer / UMT5 encoder "
                        f"the model was trained with (they are copied into the release)")
  if os.path.isfile(os.path.join(enc, "text_encoder", "config.json")):   # a Wan diffusers pipeline root
    enc = os.path.join(enc, "text_encoder")
  shutil.copytree(enc, os.path.join(out, "text_encoder"), dirs_exist_ok=True)
  if os.path.isfile(tok):
    os.makedirs(os.path.join(out, "tokenizer"), exist_ok=True)
    shutil.copy2(tok, os.path.join(out, TOKENIZER_FILE))
  else:
    shutil.copytree(tok, os.path.join(out, "tokenizer"), dirs_exist_ok=True)
  return {"tokenizer": ["transformers", "PreTrainedTokenizerFast"], "text_encoder": ["transformers", "UMT5EncoderModel"]}


def clean_prompt(text: str) -> str:
  """unitalking_jax.text_encoder.clean_prompt (repeated: that module imports JAX): ftfy when installed, html
  unescaped twice, whitespace collapsed."""
  try:
    import ftfy
    text = ftfy.fix_text(text)
  except ImportError:
    pass
  return re.sub(r"\s+", " ", html.unescape(html.unescape(text)).strip()).strip()


def tokenize(tokenizer, text: str, length: int) -> tuple[np.ndarray, np.ndarray]:
  """unitalking_jax.text_encoder.tokenize for one prompt: (ids [1, length] int32, mask [1, length] bool)."""
  enc = tokenizer([clean_prompt(text)], padding="max_length", max_length=length, truncation=True,
                  add_special_tokens=True, return_attention_mask=True, padding_side="right", return_tensors="np")
  return np.asarray(enc["input_ids"], np.int32), np.asarray(enc["attention_mask"]) > 0


# ------------------------------------------------------------------------------------------------ reading

def need(path: str) -> str:
  if not os.path.exists(path):
    raise CheckpointError(f"release component {path} is missing (written by python -m unitalking_jax.export "
                          f"--workdir W --out R)")
  return path


def _json(path: str) -> dict:
  try:
    with open(need(path), encoding="utf-8") as f:
      obj = json.load(f)
  except json.JSONDecodeError as e:
    raise CheckpointError(f"release component {path} is not valid JSON: {e}") from None
  if not isinstance(obj, dict):
    raise CheckpointError(f"release component {path} is not a JSON object")
  return obj


def _pca(path: str, whiten: bool) -> PCA:
  from safetensors.numpy import load_file
  a = load_file(need(path))
  missing = [k for k in ("mean", "components", "scale") if k not in a]
  if missing:
    raise CheckpointError(f"release component {path}: no {missing}")
  scale = a["scale"].astype(np.float32) if whiten else float(a["scale"][0])
  return PCA(a["mean"].astype(np.float32), a["components"].astype(np.float32), scale)


@dataclasses.dataclass
class Release:
  """A release directory read without JAX or torch: settings, codecs, tokenizer. See the module docstring."""
  path: str
  index: dict
  meta: dict
  model: dict        # transformer/unitalking_config.json[CONFIG_KEY] (the UniTalkingConfig as json)
  scheduler: dict
  vocab: list
  pad_id: int
  unk_id: int
  pix: PixelCodec | None      # PCA releases; None for the VAE codecs (`codecs`, attached by the framework)
  mel: MelCodec | None
  pca_video: PCA | None
  pca_audio: PCA | None
  griffin_lim_iters: int
  codecs: object = None       # VAE releases: a codecs.VAECodecs (jax_codecs / torch_pipeline attach one)

  @classmethod
  def load(cls, path: str) -> "Release":
    path = os.path.abspath(str(path))
    if not os.path.isdir(path):
      raise CheckpointError(f"release directory {path} does not exist")
    index = _json(os.path.join(path, INDEX_FILE))
    if index.get("_class_name") != PIPELINE_CLASS or META_KEY not in index:
      raise CheckpointError(f"{os.path.join(path, INDEX_FILE)}: not a UniTalking release (_class_name "
                            f"{index.get('_class_name')!r}, expected {PIPELINE_CLASS!r} with {META_KEY!r})")
    tdir = os.path.join(path, TRANSFORMER)
    model = _json(os.path.join(tdir, CONFIG_FILE))
    if CONFIG_KEY not in model:
      raise CheckpointError(f"{os.path.join(tdir, CONFIG_FILE)}: no {CONFIG_KEY!r} section")
    for f in (os.path.join(tdir, REST_FILE), os.path.join(tdir, VIDEO_STREAM, "config.json"),
              os.path.join(tdir, AUDIO_STREAM, "config.json")):
      need(f)
    vae = _json(os.path.join(path, "vae", "config.json"))
    avae = _json(os.path.join(path, "audio_vae", "config.json"))
    voc = _json(os.path.join(path, "vocoder", "config.json"))
    vae_kind = index[META_KEY].get("codec", "pca") == "vae"
    if index.get("vocoder", [None])[0] == "bigvgan":
      need(os.path.join(path, "vocoder", BIGVGAN_FILE))
    if vae_kind:
      need(os.path.join(path, "vae", "diffusion_pytorch_model.safetensors"))
      need(os.path.join(path, "audio_vae", "codec.json"))
      need(os.path.join(path, "audio_vae", "mel_vae.safetensors"))
    if index[META_KEY].get("text", "pinyin") == "pinyin":
      tok = _json(os.path.join(path, TOKENIZER_FILE))
    else:   # UMT5: the transformers directories, read by the framework's text encoder
      need(os.path.join(path, "text_encoder", "config.json"))
      need(os.path.join(path, "tokenizer"))
      tok = {"vocab": [], "pad_id": 0, "unk_id": -1}
    sched = _json(os.path.join(path, SCHEDULER_FILE))
    missing = [k for k in SAMPLING_KEYS if k not in sched.get(SAMPLING_KEY, {})]
    if missing:
      raise CheckpointError(f"{os.path.join(path, SCHEDULER_FILE)}: no {SAMPLING_KEY} {missing}")
    if vae_kind:
      return cls(path=path, index=index, meta=index[META_KEY], model=model[CONFIG_KEY], scheduler=sched,
                 vocab=list(tok["vocab"]), pad_id=int(tok["pad_id"]), unk_id=int(tok["unk_id"]), pix=None,
                 mel=None, pca_video=None, pca_audio=None,
                 griffin_lim_iters=int(voc.get("n_iter", 32)))
    return cls(path=path, index=index, meta=index[META_KEY], model=model[CONFIG_KEY], scheduler=sched,
               vocab=list(tok["vocab"]), pad_id=int(tok["pad_id"]), unk_id=int(tok["unk_id"]),
               pix=PixelCodec(int(vae["pixel_factor"])),
               mel=MelCodec(float(avae["mel_mean"]), float(avae["mel_std"]), str(avae["preset"]), int(voc["n_iter"])),
               pca_video=_pca(os.path.join(path, "vae", PCA_FILE), bool(vae["whiten"])),
               pca_audio=_pca(os.path.join(path, "audio_vae", PCA_FILE), False),
               griffin_lim_iters=int(voc["n_iter"]))

  # -- shapes --
  @property
  def frames(self) -> int:
    return int(self.meta["frames"])

  @property
  def codec_kind(self) -> str:
    return str(self.meta.get("codec", "pca"))

  @property
  def vocoder_kind(self) -> str:
    """"bigvgan" (vocoder/ in NVIDIA's layout) or "griffin_lim"."""
    return "bigvgan" if self.index.get("vocoder", [None])[0] == "bigvgan" else "griffin_lim"

  def vocoder_path(self) -> str | None:
    return os.path.join(self.path, "vocoder") if self.vocoder_kind == "bigvgan" else None

  @property
  def ref_len(self) -> int:
    return int(self.meta.get("ref_len", 0) or 0)

  def latent_shapes(self) -> tuple[tuple, tuple]:
    """(video latents [1, t, h, w, Cv], audio latents [1, Ta, Ca]): PCA t = T, Ta = 4 T; the VAE releases
    record theirs (unitalking_jax.data.latent_layout)."""
    m, t = self.meta, self.frames
    if "video_shape" in m:
      return (1,) + tuple(int(x) for x in m["video_shape"]), (1,) + tuple(int(x) for x in m["audio_shape"])
    s = int(m["latent_side"])
    return (1, t, s, s, int(m["video_channels"])), (1, MEL_PER_FRAME * t, int(m["audio_channels"]))

  def ref_shape(self) -> tuple:
    """Reference tokens [R, ref_dim]: PCA [T, 4 Ca]."""
    if "ref_shape" in self.meta:
      return tuple(int(x) for x in self.meta["ref_shape"])
    return self.frames, MEL_PER_FRAME * int(self.meta["audio_channels"])

  def reference_tokens(self, audio) -> np.ndarray:
    """A reference voice [S] float32 16 kHz -> reference tokens ref_shape() (module docstring: ref_len 0 = the
    first T frames as the clip's latents; N > 0 = ref_audio_tokens at its own length, N tokens)."""
    if not self.ref_len:
      return self.encode_audio(audio, self.frames * MEL_PER_FRAME).reshape(self.ref_shape())
    width = self.ref_shape()[1]
    if self.codec_kind == "vae":
      a = self._vae().audio
      return ref_audio_tokens(audio, self.ref_len, width // int(a.latent_channels), a.mel.hop * a.downsample,
                              lambda x, k: a.encode_audio(x, k))
    return ref_audio_tokens(audio, self.ref_len, width // self.pca_audio.width, self.mel.mel.hop,
                            lambda x, k: self.pca_audio.encode(self.mel.encode(x, frames=k)))

  def attach(self, codecs) -> "Release":
    """VAE releases: the framework's codecs.VAECodecs (jax_codecs(rel) / torch_pipeline.torch_codecs(rel))."""
    self.codecs = codecs
    return self

  def _vae(self):
    if self.codecs is None:
      raise ConfigError(f"{self.path} holds trained VAE codecs: attach the framework's first (release."
                        f"jax_codecs(rel) in JAX; UniTalkingPipeline.from_pretrained does it in PyTorch)")
    return self.codecs

  def noise_size(self) -> int:
    v, a = self.latent_shapes()
    return int(np.prod(v) + np.prod(a))

  # -- text --
  @property
  def text_kind(self) -> str:
    return str(self.meta.get("text", "pinyin"))

  def tokenizer_path(self) -> str:
    """UMT5: the tokenizer directory, or its bare tokenizer.json (shared.text.tokenizers.load_tokenizer)."""
    d = os.path.join(self.path, "tokenizer")
    if os.path.exists(os.path.join(d, "tokenizer_config.json")):
      return d
    return need(os.path.join(self.path, TOKENIZER_FILE))

  def encode_text(self, text: str) -> tuple[np.ndarray, np.ndarray]:
    """Pinyin syllables ("ma ba luo") or Chinese characters -> (ids [S] int32, 0 = pad; mask [S] bool: real ids,
    position 0 always), as unitalking_jax.data.pinyin_text. ConfigError naming `text` when empty, unknown or
    too long."""
    if not (text or "").strip():
      raise ConfigError("text is empty (--text): give the words to speak (pinyin syllables such as \"ma ba luo\", "
                        "or Chinese characters)")
    from shared.text.pinyin import is_han, to_pinyin
    syl = to_pinyin(text) if any(is_han(ch) for ch in text) else text.split()
    index = {s: i for i, s in enumerate(self.vocab)}
    ids = [index.get(s, self.unk_id) for s in syl]
    unknown = [s for s, i in zip(syl, ids) if i == self.unk_id]
    if unknown or not ids:
      raise ConfigError(f"text (--text) {text!r}: {unknown or 'nothing'} not in the release's syllable vocabulary "
                        f"({os.path.join(self.path, TOKENIZER_FILE)}): give toneless pinyin or Chinese characters")
    n = int(self.meta["text_len"])
    if len(ids) > n:
      raise ConfigError(f"text (--text) has {len(ids)} syllables: this release takes at most {n}")
    out = np.full(n, self.pad_id, np.int32)
    out[:len(ids)] = ids
    mask = out != self.pad_id
    mask[0] = True
    return out, mask

  # -- media <-> latents --
  def encode_video(self, frames) -> np.ndarray:
    if self.codec_kind == "vae":
      return self._vae().encode_video(frames)
    return self.pca_video.encode(self.pix.encode(frames))

  def encode_audio(self, audio, mel_frames: int) -> np.ndarray:
    """audio [S] 16 kHz -> latents of its first mel_frames / 4 video frames ([4 T, Ca] PCA, [Ta, Ca] VAE)."""
    if self.codec_kind == "vae":
      return self._vae().encode_audio(audio, mel_frames)
    return self.pca_audio.encode(self.mel.encode(audio, frames=mel_frames))

  def decode(self, video_lat, audio_lat, griffin_lim: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """video latents [t, h, w, Cv], audio latents [Ta, Ca] -> (frames [T, H, W, 3] uint8, audio [T * 640]
    float32 at 16 kHz), as unitalking_jax.samples.write_samples decodes."""
    vae = self._vae() if self.codec_kind == "vae" else None
    v, a = np.asarray(video_lat, np.float32), np.asarray(audio_lat, np.float32)
    frames = vae.decode_video(v) if vae else self.pix.decode(self.pca_video.decode(v))
    n = frames.shape[0] * SAMPLES_PER_FRAME
    if not griffin_lim:
      audio = np.zeros(n, np.float32)
    else:
      audio = vae.decode_audio(a) if vae else self.mel.decode(self.pca_audio.decode(a))
    return frames, np.pad(audio, (0, max(0, n - audio.shape[0])))[:n].astype(np.float32)

  def log_mel(self, audio_lat) -> np.ndarray:
    if self.codec_kind == "vae":
      return self._vae().log_mel(audio_lat)
    return self.mel.to_log_mel(self.pca_audio.decode(np.asarray(audio_lat, np.float32)))


def _resize(img: np.ndarray, side: int) -> np.ndarray:
  from PIL import Image
  return np.asarray(Image.fromarray(np.asarray(img, np.uint8)).resize((side, side)), np.uint8)


def _read(name: str, value):
  """A path -> decoded media (DataError naming the argument and file); an array passes through."""
  if not isinstance(value, (str, os.PathLike)):
    return np.asarray(value)
  if not os.path.isfile(value):
    raise DataError(f"{name} (--{name}): no such file", path=str(value))
  return read_inputs(**{name: str(value)})[name]


def read_inputs(image=None, ref_audio=None, video=None) -> dict:
  """Decodes the files given (not None): {"image": [H,W,3] uint8, "video": [T,H,W,3] uint8, "ref_audio": [S]
  float32 at 16 kHz}. DataError naming the file when one is missing, undecodable or empty."""
  from shared.data.media import read_image, read_mp4, read_wav
  out = {}
  if image is not None:
    out["image"] = read_image(image)
  if video is not None:
    out["video"] = read_mp4(video, with_audio=False).frames
  if ref_audio is not None:
    out["ref_audio"], _ = read_wav(ref_audio, sample_rate=16000)
    if not out["ref_audio"].size:
      raise DataError("audio file holds no samples", path=str(ref_audio))
  return out


def resolve_task(task: str | None, **given) -> str:
  """The task of the given inputs (none: t2av, image: ti2av, video: tv2a, ref_audio: tr2av); with `task`
  given, ConfigError naming the input it needs or one it would ignore (the argument / --flag)."""
  have = [k for k, v in given.items() if v is not None]
  if task is None:
    if len(have) > 1:
      raise ConfigError(f"inputs {have} (--{' / --'.join(have)}): give at most one of image (ti2av), video (tv2a), "
                        f"ref_audio (tr2av)")
    task = {v: k for k, v in TASK_INPUT.items()}.get(have[0], "t2av") if have else "t2av"
  if task not in TASKS:
    raise ConfigError(f"task (--task) {task!r}: expected one of {list(TASKS)}")
  need = TASK_INPUT.get(task)
  if need and given.get(need) is None:
    raise ConfigError(f"task {task} (--task {task}) needs {need} (--{need})")
  for k in have:
    if k != need:
      users = [t for t, n in TASK_INPUT.items() if n == k]
      raise ConfigError(f"task {task} (--task {task}) does not use {k} (--{k}; it is for --task {users[0]})")
  return task


def inputs(rel: Release, text: str, image=None, ref_audio=None, video=None, task: str | None = None,
           text_encoder=None) -> tuple[str, dict]:
  """-> (task, batch of numpy arrays with a leading 1): text [1, S] int32, text_mask [1, S] bool, video
  [1, T, h, w, Cv] (the given frame repeated / the given video's latents; zeros otherwise: shapes only),
  audio [1, 4 T, Ca] zeros, ref [1, R, ref_dim] = ref_shape() (the reference voice's tokens, Release.reference_tokens;
  zeros otherwise).
  image [H, W, 3] uint8 | path; video [T', H, W, 3] uint8 | mp4 path; ref_audio [S] float32 16 kHz | wav path
  (images and frames are taken as face crops, resized to the release's frame size). UMT5 releases: text
  [1, S, text_dim] float32 from text_encoder(text) -> (features [S, text_dim], mask [S]) (the framework's)."""
  task = resolve_task(task, image=image, ref_audio=ref_audio, video=video)
  if rel.text_kind == "pinyin":
    ids, mask = rel.encode_text(text)
  else:
    if not (text or "").strip():
      raise ConfigError("text is empty (--text): give the prompt to speak")
    if text_encoder is None:
      raise ConfigError(f"{rel.path} holds a UMT5 text encoder: pass text_encoder= (the pipelines do)")
    ids, mask = (np.asarray(x) for x in text_encoder(text))
  vshape, ashape = rel.latent_shapes()
  t, side = rel.frames, int(rel.meta["frame_size"])
  v = np.zeros(vshape[1:], np.float32)
  ref = np.zeros(rel.ref_shape(), np.float32)
  if image is not None:
    img = _read("image", image)
    if img.ndim != 3 or img.shape[-1] != 3:
      raise DataError(f"image (--image) of shape {img.shape}: expected [H, W, 3] uint8 RGB", key="image")
    v = rel.encode_video(np.repeat(_resize(img, side)[None], t, 0))
  if video is not None:
    vid = _read("video", video)
    if vid.ndim != 4 or vid.shape[-1] != 3 or not len(vid):
      raise DataError(f"video (--video) of shape {vid.shape}: expected [T>0, H, W, 3] uint8 RGB", key="video")
    frames = np.stack([_resize(f, side) for f in vid[:t]])
    if frames.shape[0] < t:
      frames = np.concatenate([frames, np.repeat(frames[-1:], t - frames.shape[0], 0)])
    v = rel.encode_video(frames)
  if ref_audio is not None:
    wav = np.asarray(_read("ref_audio", ref_audio), np.float32).reshape(-1)
    if not wav.size:
      raise DataError("ref_audio (--ref_audio) holds no samples", key="ref_audio")
    ref = rel.reference_tokens(wav)
  batch = {"video": v, "audio": np.zeros(ashape[1:], np.float32), "text": ids, "text_mask": mask, "ref": ref}
  return task, {k: np.asarray(x)[None] for k, x in batch.items()}


def write_media(path: str, frames: np.ndarray, audio: np.ndarray, fps: float = 25.0, scale: int = 1) -> str:
  """OUT.mp4 (h264 + aac, frames enlarged `scale` x) and OUT.wav beside it. Returns the mp4 path."""
  from shared.data.media import write_mp4, write_wav
  path = os.path.abspath(str(path))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  big = np.repeat(np.repeat(frames, scale, 1), scale, 2) if scale > 1 else frames
  write_mp4(path, big, fps=fps, audio=audio, sample_rate=SAMPLE_RATE)
  write_wav(os.path.splitext(path)[0] + ".wav", audio, SAMPLE_RATE)
  return path


# ------------------------------------------------------------------------------------------------ JAX side

def jax_model_and_params(rel: Release):
  """(UniTalking, params) from the release: the video stream through shared.weights' Wan table
  (transformer/video_stream), everything else from the rest file (its Flax names). float32."""
  from safetensors.numpy import load_file
  from shared.models.wan_dit import WanDiTConfig
  from shared.weights.wan_dit_family import load_wan_dit
  from unitalking_jax.model import UniTalking, UniTalkingConfig
  d = dict(rel.model)
  video = dict(d.pop("video"))
  video["patch_size"] = tuple(video["patch_size"])
  d["audio_hw_pos"] = tuple(d.get("audio_hw_pos", (0.0, 0.0)))
  config = UniTalkingConfig(WanDiTConfig(**video), **d)
  tdir = os.path.join(rel.path, TRANSFORMER)
  _, wan = load_wan_dit(os.path.join(tdir, VIDEO_STREAM))
  params: dict = {}
  for key, x in load_file(os.path.join(tdir, REST_FILE)).items():
    node = params
    *parents, leaf = key.split(".")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = np.asarray(x, np.float32)
  params["video_patch_embedding"] = wan["patch_embedding"]
  params["video_condition_embedder"] = wan["condition_embedder"]
  params["video_head"] = {"proj_out": wan["proj_out"], "scale_shift_table": wan["scale_shift_table"]}
  params.setdefault("blocks", {})["video"] = wan["blocks"]
  return UniTalking(config), params


def jax_sampling_config(rel: Release, **override):
  """The `sampling` section make_generate reads, from scheduler_config.json (override: steps / text_scale /
  ref_scale)."""
  import ml_collections
  s = {**rel.scheduler, **rel.scheduler[SAMPLING_KEY]}
  shift = s.get("shift", s.get("flow_shift"))
  c = dict(sampler=s["sampler"], steps=int(s["num_inference_steps"]), shift=float(shift),
           text_scale=float(s["guidance_scale"]), ref_scale=float(s["ref_guidance_scale"]))
  c.update({k: v for k, v in override.items() if v is not None})
  return ml_collections.ConfigDict({"sampling": c})


def jax_text_encoder(rel: Release):
  """UMT5 releases: text -> (features [S, text_dim], mask [S]) by unitalking_jax.text_encoder.TextEncoder on the
  release's text_encoder/ + tokenizer/; None for the syllable path."""
  if rel.text_kind == "pinyin":
    return None
  from unitalking_jax.text_encoder import TextEncoder
  enc = TextEncoder(rel.tokenizer_path(), os.path.join(rel.path, "text_encoder"), int(rel.meta["text_len"]))

  def encode(text: str):
    f, m = enc([text])
    return f[0], m[0]

  return encode


def jax_codecs(rel: Release) -> Release:
  """VAE releases: attaches the JAX codecs (shared.models.av_codec on R/vae and R/audio_vae, whole-clip
  encode / decode; R/vocoder's BigVGAN, when there, as shared.models.bigvgan); PCA releases are returned as they
  are."""
  if rel.codec_kind == "vae" and rel.codecs is None:
    from shared.models import av_codec
    from unitalking_jax.codecs import VAECodecs
    video = av_codec.load_wan_video_codec(os.path.join(rel.path, "vae"), encode_chunk=None, decode_chunk=None)
    audio = av_codec.load_mel_vae_audio_codec(os.path.join(rel.path, "audio_vae"), vocoder=rel.vocoder_path(),
                                              griffin_lim_iters=rel.griffin_lim_iters)
    rel.attach(VAECodecs(video, audio))
  return rel


def jax_noise(rel: Release, seed: int) -> np.ndarray:
  """The initial noise JAX generation draws for `seed`: [1, Nv + Na] float32 (video flattened, then audio)."""
  import jax
  return np.asarray(jax.random.normal(jax.random.key(seed), (1, rel.noise_size()), np.float32))


def jax_generate(rel: Release, batch: dict, task: str, seed: int = 0, model_params=None, **override):
  """unitalking_jax.task.make_generate on the release -> (video latents [1, T, h, w, Cv], audio latents
  [1, 4 T, Ca]) numpy float32; the initial noise is jax_noise(rel, seed)."""
  import jax
  import jax.numpy as jnp
  from unitalking_jax.task import make_generate
  model, params = model_params or jax_model_and_params(rel)
  run = make_generate(jax_sampling_config(rel, **override), model, task)
  v, a = run(params, {k: jnp.asarray(x) for k, x in batch.items()}, jax.random.key(seed))
  return np.asarray(v, np.float32), np.asarray(a, np.float32)
