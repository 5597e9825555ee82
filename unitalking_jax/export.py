"""`python -m unitalking_jax.export --workdir DIR --out R [--dtype bfloat16]` -> a release that generates.

R is a diffusers-convention pipeline directory (layout: unitalking_jax/release.py): model_index.json,
transformer/ (exactly the OUT below, plus transformer/audio_stream/: the audio twin as a WanTransformer3DModel),
vae/ + audio_vae/ (the PCA codecs, or the trained Wan / mel VAEs), vocoder/ (Griffin-Lim settings, or with
data.vocoder_path BigVGAN in NVIDIA's layout: config.json + bigvgan_generator.pt), tokenizer/ (the syllable list),
scheduler/ (the flow-matching sampler, steps and guidance scales). Generate with
unitalking_jax.torch_pipeline.UniTalkingPipeline.from_pretrained(R) (PyTorch alone) or
`python -m unitalking_jax.sample --release R --text ...` (JAX). --dtype bfloat16 stores the transformer in bf16
(the codecs stay float32; both generators compute in float32).

`export(model, params, OUT)` (the transformer directory, R/transformer in a release):
  OUT/video_stream/            diffusers WanTransformer3DModel directory (config.json +
                               diffusion_pytorch_model.safetensors) written by shared.weights' Wan name table:
                               `WanTransformer3DModel.from_pretrained(OUT/video_stream)` is the video stream
                               (exactly the model under the TV2A mask; tests/unitalking/test_export.py).
  OUT/unitalking_rest.safetensors   every other parameter, named by its Flax path with "/" -> ".":
        text_embed                              [vocab, text_dim]          (tiny configs only)
        text_pos_embed                          [text_len, text_dim]       (tiny configs: syllable positions)
        audio_patch_embedding.kernel            [1, 1, 1, C_a, D] (Conv3d-as-matmul; torch weight = permute(4,3,0,1,2))
        audio_condition_embedder.*              as diffusers' condition_embedder (time_embedder_linear_1 =
                                                time_embedder.linear_1, ...; image_* = the reference-audio embedder)
        audio_head.{scale_shift_table,proj_out.kernel,proj_out.bias}
        blocks.audio.<WanBlock path>            [num_layers, ...] stacked, same names as the video blocks
                                                (+ attn2.add_k_proj / add_v_proj / norm_added_k: reference K/V)
        Linear kernels are [in, out] (torch Linear weight = kernel.T).
  OUT/unitalking_config.json   "unitalking_model": the UniTalkingConfig (video = WanDiTConfig fields), plus the
                               training config (model/data/trainer sections) when exported from a workdir.
  unitalking_jax/torch_model.py (the [torch] extra): UniTalkingTorch.from_export(OUT) rebuilds the whole model
                               in PyTorch from diffusers Wan blocks and reproduces our forward pass.
"""
from __future__ import annotations

import dataclasses
import json
import os

import ml_dtypes
import numpy as np
from absl import flags
from flax import traverse_util

from shared import cli
from shared.errors import ConfigError
from shared.models.wan_dit import WanDiT
from shared.weights import io
from shared.weights.wan_dit_family import save_wan_dit
from unitalking_jax.model import UniTalking, wan_params

FLAGS = flags.FLAGS
VIDEO_KEYS = ("video_patch_embedding", "video_condition_embedder", "video_head")


def rest_params(params) -> dict[str, np.ndarray]:
  """Everything outside the video stream, as {dotted name: array}."""
  flat = traverse_util.flatten_dict(params)
  out = {}
  for path, x in flat.items():
    if path[0] in VIDEO_KEYS or path[:2] == ("blocks", "video"):
      continue
    out[".".join(path)] = np.asarray(x, np.float32)
  return out


def export(model: UniTalking, params, out: str, cfg_json: dict | None = None, dtype=None) -> None:
  """dtype: None / float32, or bfloat16 (ml_dtypes) for every weight."""
  os.makedirs(out, exist_ok=True)
  save_wan_dit(WanDiT(model.config.video), wan_params(params), os.path.join(out, "video_stream"), dtype=dtype)
  rest = rest_params(params)
  dt = np.dtype(dtype or np.float32)
  io.write_safetensors(os.path.join(out, "unitalking_rest.safetensors"),
                       [(k, v.shape, dt, (lambda v=v: v)) for k, v in sorted(rest.items())])
  # the model config itself (torch_model.config_from_export reads it first; the training config may follow)
  cfg_json = {**(cfg_json or {}), "unitalking_model": dataclasses.asdict(model.config)}
  io.write_json(os.path.join(out, "unitalking_config.json"), cfg_json)


def write_release(model: UniTalking, params, cfg, out: str, dtype=None) -> None:
  """The pipeline directory (unitalking_jax/release.py) of a trained model; cfg: its training config."""
  from unitalking_jax import data as data_lib
  from unitalking_jax import release
  codecs = data_lib.codecs(cfg)   # checks data.text first: the tiny syllable path only
  tdir = os.path.join(out, release.TRANSFORMER)
  export(model, params, tdir, json.loads(cfg.to_json()), dtype)
  save_wan_dit(WanDiT(model.config.audio), wan_params(params, "audio"), os.path.join(tdir, release.AUDIO_STREAM),
               dtype=dtype)
  release.write_components(out, cfg, codecs, model.config)


def check_out(out: str) -> str:
  """--out as an absolute path, checked before the checkpoint is read: ConfigError when it is a file, or a
  non-empty directory that holds no UniTalking release (a release is overwritten in place)."""
  out = os.path.abspath(out)
  if os.path.exists(out) and not os.path.isdir(out):
    raise ConfigError(f"--out {out} is an existing file: expected the release directory to write")
  if os.path.isdir(out) and os.listdir(out) and not any(
      os.path.exists(os.path.join(out, f)) for f in ("unitalking_config.json", "model_index.json")):
    raise ConfigError(f"--out {out} is a non-empty directory that holds no UniTalking release: give a new or "
                      f"empty directory")
  return out


def main():
  from shared.checkpoint import restore
  from unitalking_jax.model import model_from_config
  out = check_out(FLAGS.out)
  r = restore(FLAGS.workdir, model_fn=model_from_config)
  dtype = None if FLAGS.dtype == "float32" else ml_dtypes.bfloat16
  write_release(r.model, r.params, r.config, cli.make_dir(out, "--out"), dtype)
  print(f"wrote {out}")


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "Training workdir.")
  flags.DEFINE_string("out", None, "Output directory (the release).")
  flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Transformer weight dtype in the release.")
  flags.mark_flags_as_required(["workdir", "out"])
  cli.run(main)
