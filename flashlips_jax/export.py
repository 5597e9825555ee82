"""`python -m flashlips_jax.export --workdir DIR --out REL [--step S] [--dtype float32|bfloat16]`

Writes a checkpoint of any stage as a release (what the next stage's init entries read):

  REL/vae/                  diffusers AutoencoderKL (config.json + diffusion_pytorch_model.safetensors;
                            AutoencoderKL.from_pretrained(REL/vae)); its input is the face crop in [-1, 1]
  REL/editor.safetensors    (editor / maskfree / pose stages) the one-step editor in our naming, '/'-joined Flax
                            paths: lips/... (LipsPoseEncoder), reference/... (ReferenceBackbone), unet/...
                            (UNet2DCondition, diffusers' module tree with '/' and '_': down_blocks_0/resnets_0/
                            conv1/kernel ...). Conv kernels are [kh, kw, in, out] (torch weight = permute(3, 2, 0,
                            1)), Dense kernels [in, out] (torch weight = kernel.T). Metadata: "format":
                            "flashlips_editor", "masked": whether the editor reads the masked target, the model
                            config as JSON. A maskfree workdir exports its student (the teacher is dropped).
  REL/unet/                 the editor's UNet also as a diffusers UNet2DConditionModel directory
  REL/pose.safetensors      (pose stage) the audio-to-lips-pose Transformer in our naming (pose/...)
  REL/release.json          what is where, the stage, the step, the data geometry (image size, crop / mouth
                            scales, mouth size, frames, fps, mel statistics) and the sampling settings

flashlips_jax/torch_model.py rebuilds the editor (FlashLipsEditorTorch.from_export(REL)) and the pose Transformer
(PoseTransformerTorch.from_export(REL)) in PyTorch from these files.
"""
from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np

from shared import cli


def _save(path: str, tree: dict, dtype, meta: dict):
  from shared.weights.init import save_params
  save_params(path, tree, dtype=dtype, metadata=meta)


def write_release(params, c, out: str, *, dtype=None) -> dict:
  """The model files of a release from a params tree and its FlashLipsConfig -> {name: relative path}."""
  from shared.models.autoencoder_kl import AutoencoderKL
  from shared.models.unet2d import UNet2DCondition
  from shared.weights import save_pretrained
  params = jax.tree.map(np.asarray, params)
  os.makedirs(out, exist_ok=True)
  files = {"vae": "vae/"}
  if c.stage == "vae":
    save_pretrained(AutoencoderKL(c.vae), params, os.path.join(out, "vae"), dtype=dtype)
    return files
  save_pretrained(AutoencoderKL(c.vae), params["vae"], os.path.join(out, "vae"), dtype=dtype)
  save_pretrained(UNet2DCondition(c.unet), params["unet"], os.path.join(out, "unet"), dtype=dtype)
  editor = {k: params[k] for k in ("lips", "reference", "unet")}
  meta = {"format": "flashlips_editor", "masked": bool(c.masked),
          "config": {k: dataclasses.asdict(getattr(c, k)) for k in ("lips", "reference")}}
  _save(os.path.join(out, "editor.safetensors"), editor, dtype, meta)
  files.update(editor="editor.safetensors", unet="unet/")
  if c.stage == "pose":
    _save(os.path.join(out, "pose.safetensors"), {"pose": params["pose"]}, dtype,
          {"format": "flashlips_pose", "config": dataclasses.asdict(c.pose)})
    files["pose"] = "pose.safetensors"
  return files


def export(workdir: str, out: str, *, step: int | None = None, dtype: str = "float32") -> str:
  from shared.checkpoint import restore
  from flashlips_jax.model import model_config
  r = restore(workdir, step)
  cfg = r.config
  c = model_config(cfg)
  files = write_release(r.params, c, out, dtype=None if dtype == "float32" else dtype)
  d = cfg.data
  info = {"system": "flashlips_jax", "stage": c.stage, "step": int(r.step), "files": files, "dtype": dtype,
          "masked": bool(c.masked),
          "data": {k: (float(d[k]) if isinstance(d[k], float) else d[k]) for k in
                   ("image_size", "crop_scale", "mouth_scale", "mouth_size", "mask_margin", "frames", "fps",
                    "mel_mean", "mel_std")},
          "image_range": [-1.0, 1.0]}
  if c.stage == "pose":
    info["sampling"] = {"scheduler": "FlowMatchEulerDiscreteScheduler", "steps": int(cfg.sampling.steps),
                        "shift": float(cfg.sampling.shift)}
  with open(os.path.join(out, "release.json"), "w") as f:
    json.dump(info, f, indent=1)
  return out


def main():
  cli.export_main(export)


if __name__ == "__main__":
  cli.define_export_flags()
  cli.run(main)
