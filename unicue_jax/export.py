"""`python -m unicue_jax.export --workdir DIR --out REL [--step S] [--dtype float32|bfloat16]`

Writes a checkpoint of any stage as a release (what the next stage's init entries read, and what PyTorch users
load):

  csr (stage 1)
    REL/mbart/                   transformers MBartForConditionalGeneration (config.json + model.safetensors):
                                 its decoder is the CSR decoder D_T, its encoder the alignment pool's text encoder
                                 (MBartForConditionalGeneration.from_pretrained(REL/mbart); pad 1, bos 0, eos 2,
                                 decoder_start 2; the visual sequence Z_mv enters as encoder_outputs)
    REL/processor/frontend/      the per-frame ResNet (shared.weights resnet family, model_type conv3d_resnet with
                                 "stem": "conv2d"): torchvision's ResNet keys conv1.*, bn1.*, layer{L}.{i}.* with the
                                 BatchNorm running statistics (a relu / width-64 one loads into torchvision's
                                 resnet18 / 34 with strict=False: only fc.* missing)
    REL/processor.safetensors    the rest of the pose-aware processor in our naming, '/'-joined paths relative to
                                 `processor` (temporal/kernel [k, C, D], temporal/bias, encoder/positions/embedding,
                                 encoder/layernorm_embedding/*, encoder/layers/<MBart encoder layer params stacked
                                 [layers, ...]>, encoder/layer_norm/*, fuse/fc1/*, fuse/fc2/*; kernels [in, out]);
                                 metadata "format": "unicue_processor", the processor config as JSON
    REL/tokens.txt               one token per line, line i = id i (<s>, <pad>, </s>, <unk>, then the units)
  vae
    REL/vae/                     diffusers AutoencoderKL (config.json + diffusion_pytorch_model.safetensors); the
                                 mel it takes is (log-mel - mel_mean) / mel_std (in release.json)
  v2s (stage 2)
    REL/unet/, REL/vae/          diffusers UNet2DConditionModel / AutoencoderKL
    REL/processor/frontend/, REL/processor.safetensors   as for stage 1 (the frozen processor)
    REL/adapter.safetensors      the VisioPhonetic adapter in our naming relative to `adapter` (queries [L, d],
                                 mlp_in/fc1|fc2, norm_q, norm_kv, cross_attn/{q,k,v,out}_proj, norm_out,
                                 mlp_out/fc1|fc2), plus `latent_scale` (scalar: latents = VAE sample x scale) and,
                                 with a class embedding, class_proj/*
  REL/release.json               what is where, the stage, the step, the data geometry (frames, image size, fps,
                                 mel statistics) and the sampling settings
"""
from __future__ import annotations

import json
import os

import jax
import numpy as np

from shared import cli


def _save(path: str, tree: dict, dtype, meta: dict):
  from shared.weights.init import save_params
  save_params(path, tree, dtype=dtype, metadata=meta)


def _processor(out: str, params, model_state, config, dtype):
  from shared.nn.resnet import Conv3dResNet
  from shared.weights import save_pretrained
  p = params["processor"]
  save_pretrained(Conv3dResNet(config.processor.frontend),
                  {"params": p["frontend"], "batch_stats": model_state["batch_stats"]["processor"]["frontend"]},
                  os.path.join(out, "processor", "frontend"), dtype=dtype)
  rest = {k: v for k, v in p.items() if k != "frontend"}
  import dataclasses
  _save(os.path.join(out, "processor.safetensors"), rest, dtype,
        {"format": "unicue_processor", "config": {k: v for k, v in dataclasses.asdict(config.processor).items()
                                                  if k != "frontend"}})


def export(workdir: str, out: str, *, step: int | None = None, dtype: str = "float32") -> str:
  from shared.checkpoint import restore
  from shared.models.autoencoder_kl import AutoencoderKL
  from shared.models.mbart import MBart
  from shared.models.unet2d import UNet2DCondition
  from shared.weights import save_pretrained
  from unicue_jax.task import make_task, prediction
  r = restore(workdir, step)
  cfg = r.config
  task = make_task(cfg)
  c = task.model_config
  params = jax.tree.map(np.asarray, r.params)
  model_state = jax.tree.map(np.asarray, r.model_state)
  np_dtype = None if dtype == "float32" else dtype
  os.makedirs(out, exist_ok=True)
  files = {}
  d = cfg.data
  if c.stage == "csr":
    save_pretrained(MBart(c.mbart), params["mbart"], os.path.join(out, "mbart"), dtype=np_dtype)
    _processor(out, params, model_state, c, np_dtype)
    with open(os.path.join(out, "tokens.txt"), "w", encoding="utf-8") as f:
      f.write("\n".join(task.vocab.tokens) + "\n")
    files.update(mbart="mbart/", processor_frontend="processor/frontend/", processor="processor.safetensors",
                 tokens="tokens.txt")
  elif c.stage == "vae":
    save_pretrained(AutoencoderKL(c.vae), params, os.path.join(out, "vae"), dtype=np_dtype)
    files["vae"] = "vae/"
  else:
    save_pretrained(UNet2DCondition(c.unet), params["unet"], os.path.join(out, "unet"), dtype=np_dtype)
    save_pretrained(AutoencoderKL(c.vae), params["vae"], os.path.join(out, "vae"), dtype=np_dtype)
    _processor(out, params, model_state, c, np_dtype)
    rest = {k: params[k] for k in ("adapter", "class_proj") if k in params}
    rest["latent_scale"] = params["latent_scale"]
    _save(os.path.join(out, "adapter.safetensors"), rest, np_dtype,
          {"format": "unicue_adapter", "adapter_enabled": bool(c.adapter.enabled)})
    files.update(unet="unet/", vae="vae/", processor_frontend="processor/frontend/",
                 processor="processor.safetensors", adapter="adapter.safetensors")
  info = {"system": "unicue_jax", "stage": c.stage, "step": int(r.step), "files": files, "dtype": dtype,
          "data": {"frames": int(d.frames), "image_size": int(d.image_size), "fps": int(d.fps),
                   "crop_scale": float(d.crop_scale), "mel_mean": float(d.mel_mean), "mel_std": float(d.mel_std),
                   "tokens": str(d.tokens)},
          "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
  if c.stage == "csr":
    info.update(pad_id=1, bos_id=0, eos_id=2, decoder_start_token_id=2)
  if c.stage == "v2s":
    info["latent_scale"] = float(params["latent_scale"])
    info["sampling"] = {"scheduler": "DDIMScheduler (AudioLDM: 1000 steps, scaled_linear 0.0015..0.0195, "
                                     "leading, steps_offset 1)", "steps": int(cfg.sampling.steps),
                        "prediction_type": prediction(cfg),
                        "eta": float(cfg.sampling.eta)}
  with open(os.path.join(out, "release.json"), "w") as f:
    json.dump(info, f, indent=1)
  return out


def main():
  cli.export_main(export)


if __name__ == "__main__":
  cli.define_export_flags()
  cli.run(main)
