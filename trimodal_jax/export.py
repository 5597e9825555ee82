"""`python -m trimodal_jax.export --workdir DIR --out R [--step S] [--dtype float32|bfloat16] [--with_llm]`

Writes a tri-modal checkpoint as a release PyTorch users load:
  R/llm_adapter/        the LLM's LoRA as a PEFT adapter (adapter_config.json + adapter_model.safetensors, keys
                        base_model.model.model.layers.{i}.self_attn.{q,k,v,o}_proj.lora_{A,B}.weight):
                        PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(BASE), R/llm_adapter);
                        base_model_name_or_path = the config's init.llm.path when the run kept that base frozen
                        (train.llm "lora"), else R/llm (absolute path)
  R/llm/                the LLM without LoRA (its base weights) in transformers LlamaForCausalLM layout: written
                        when the base is this run's (train.llm "all", or no init.llm.path: fresh weights), or with
                        --with_llm; a frozen published base is not copied (release.json names it)
  R/sign_encoder/       Video Swin in torchvision's swin3d keys (shared.weights swin3d family: model_type
                        "swin3d"; no head: torchvision's load_state_dict(strict=False) misses head.* only)
  R/lip_encoder/        the AV-HuBERT video path in fairseq av_hubert keys, with the ResNet's BatchNorm
                        running statistics from the run's model_state (model_type "av_hubert")
  R/audio_encoder/      the Whisper encoder, transformers WhisperEncoder layout (model_type "whisper")
  R/adapters.safetensors  length adapters and mapping network, torch layouts (metadata "format":
                        "trimodal_adapters"):
                          {sign,lip,audio}_adapter.weight [D, D, k]  torch.nn.Conv1d(D, D, k, stride=k) (no padding)
                          {sign,lip,audio}_adapter.bias   [D]
                          mapping.fc1.weight [H, Ds+Dv+Da], mapping.fc1.bias [H]   torch.nn.Linear
                          mapping.fc2.weight [E, H],        mapping.fc2.bias [E]   (act between: release.json)
                        Conv1d reads [B, D, T] (channels first); the concatenation order is sign, lip, audio,
                        an absent modality's slice exact zeros (the task's masking)
  R/tokenizer/          the tokenizer (transformers save_pretrained)
  R/release.json        what is where, the step, dtype, the prompt and instruction ids per task, the task ->
                        modalities table, strides, widths, mapping sizes, input geometry (fps, sample rate, mel
                        frames per video frame, sign size + Kinetics mean / std, lip crop) and decode settings
Encoders and the LLM read back with shared.weights.load_pretrained.
"""
from __future__ import annotations

import json
import os

import jax
import numpy as np
from absl import flags

from shared import cli


def adapter_tensors(params, dtype=None) -> dict:
  """The adapters + mapping of a TriModal params tree -> {torch key: np.ndarray} (module docstring)."""
  cast = (lambda x: np.asarray(x, np.float32)) if dtype is None else (
      lambda x: np.asarray(jax.numpy.asarray(x, dtype)))
  out = {}
  for m in ("sign", "lip", "audio"):
    a = params[f"{m}_adapter"]
    out[f"{m}_adapter.weight"] = np.ascontiguousarray(cast(a["kernel"]).transpose(2, 1, 0))   # [k,in,out]->[out,in,k]
    out[f"{m}_adapter.bias"] = np.ascontiguousarray(cast(a["bias"]))
  for fc in ("fc1", "fc2"):
    d = params["mapping"][fc]
    out[f"mapping.{fc}.weight"] = np.ascontiguousarray(cast(d["kernel"]).T)
    out[f"mapping.{fc}.bias"] = np.ascontiguousarray(cast(d["bias"]))
  return out


def _release_info(cfg, c, tok, step: int, dtype: str, files: dict, base: str | None) -> dict:
  from shared.models.swin3d import KINETICS_MEAN, KINETICS_STD
  from trimodal_jax import data as data_lib
  from trimodal_jax.model import PROMPTS, TASK_MODALITIES, TASKS
  d = cfg.data
  ins = data_lib.instructions(tok)
  return {
      "system": "trimodal_jax", "step": int(step), "dtype": dtype, "files": files,
      "llm_base": base,
      "tasks": {t: {"prompt": PROMPTS[t], "instruction_ids": [int(i) for i in ins[t]],
                    "modalities": list(TASK_MODALITIES[t])} for t in TASKS},
      "modalities_order": ["sign", "lip", "audio"],
      "strides": {k: int(v) for k, v in c.strides().items()},
      "widths": {k: int(v) for k, v in c.widths().items()},
      "mapping": {"in": int(c.concat_dim), "hidden": int(c.hidden_dim), "out": int(c.llm.hidden_size),
                  "act": c.mapping_act},
      "lora": {"rank": int(c.lora.rank), "alpha": float(c.lora.alpha), "targets": list(c.lora.targets)},
      "inputs": {"fps": int(d.fps), "sample_rate": int(d.sample_rate), "n_mels": int(d.n_mels),
                 "mels_per_frame": data_lib.MELS_PER_FRAME, "sign_size": int(d.sign_size),
                 "sign_mean": list(KINETICS_MEAN), "sign_std": list(KINETICS_STD),
                 "sign_clip_window": int(c.sign.clip_window), "lip_crop": int(d.crop),
                 "max_frames": int(max(d.frame_buckets))},
      "tokens": {"bos": tok.bos_token_id, "eos": tok.eos_token_id, "pad": tok.pad_token_id},
      "decode": {"max_new_tokens": int(cfg.decode.max_new_tokens),
                 "slt": cfg.decode.slt.to_dict(), "speech": cfg.decode.speech.to_dict()},
  }


def export(workdir: str, out: str, *, step: int | None = None, dtype: str = "float32", with_llm: bool = False
           ) -> str:
  from safetensors.numpy import save_file

  from shared.checkpoint import restore
  from shared.models.avhubert import AVHubertVideo
  from shared.models.swin3d import SwinTransformer3d
  from shared.models.whisper import WhisperEncoder
  from shared.weights import save_adapter, save_pretrained
  from trimodal_jax import data as data_lib
  from trimodal_jax.model import llm_module, model_from_config
  r = restore(workdir, step)
  cfg = r.config
  c = model_from_config(cfg).config
  tok = data_lib.tokenizer(cfg)
  p = jax.tree.map(np.asarray, r.params)
  state = jax.tree.map(np.asarray, r.model_state)
  np_dtype = None if dtype == "float32" else dtype
  out = cli.make_dir(out, "--out")
  files = {}
  # LLM: base (+ LoRA as a PEFT adapter)
  llm = llm_module(c)
  init_path = str(cfg.init.llm.path or "") if "init" in cfg and "llm" in cfg.init else ""
  frozen_base = bool(init_path) and cfg.train.llm == "lora"
  base = init_path if frozen_base else None
  if not frozen_base or with_llm:
    save_pretrained(llm, p["llm"], os.path.join(out, "llm"), lora="drop", dtype=np_dtype)
    files["llm"] = "llm/"
    base = base or os.path.join(out, "llm")
  if c.llm.lora is not None:
    save_adapter(llm, p["llm"], os.path.join(out, "llm_adapter"), base_model_name_or_path=base, dtype=np_dtype)
    files["llm_adapter"] = "llm_adapter/"
  # encoders (absent when model.precomputed holds them)
  if "sign_encoder" in p:
    save_pretrained(SwinTransformer3d(c.sign), p["sign_encoder"], os.path.join(out, "sign_encoder"), dtype=np_dtype)
    files["sign_encoder"] = "sign_encoder/"
  if "lip_encoder" in p:
    save_pretrained(AVHubertVideo(c.lip), {"params": p["lip_encoder"],
                                           "batch_stats": state["batch_stats"]["lip_encoder"]},
                    os.path.join(out, "lip_encoder"), dtype=np_dtype)
    files["lip_encoder"] = "lip_encoder/"
  if "audio_encoder" in p:
    save_pretrained(WhisperEncoder(c.audio), p["audio_encoder"], os.path.join(out, "audio_encoder"), dtype=np_dtype)
    files["audio_encoder"] = "audio_encoder/"
  save_file(adapter_tensors(p, np_dtype), os.path.join(out, "adapters.safetensors"),
            metadata={"format": "trimodal_adapters", "mapping_act": c.mapping_act,
                      "order": "sign,lip,audio", "strides": json.dumps({k: int(v) for k, v in c.strides().items()})})
  files["adapters"] = "adapters.safetensors"
  tok.save_pretrained(os.path.join(out, "tokenizer"))
  files["tokenizer"] = "tokenizer/"
  with open(os.path.join(out, "release.json"), "w") as f:
    json.dump(_release_info(cfg, c, tok, r.step, dtype, files, base), f, indent=1, ensure_ascii=False)
  return out


def main():
  cli.export_main(export, with_llm=cli.FLAGS.with_llm)


if __name__ == "__main__":
  cli.define_export_flags()
  flags.DEFINE_boolean("with_llm", False, "Also write R/llm when the run kept a published base frozen (its copy).")
  cli.run(main)
