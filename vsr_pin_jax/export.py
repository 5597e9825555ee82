"""`python -m vsr_pin_jax.export --workdir DIR --out R [--step S] [--dtype float32|bfloat16] [--refiner RW]`

Writes a stage-I checkpoint as a release PyTorch users load:
  R/funasr/      config.yaml (encoder SANMEncoder, decoder ParaformerSANMDecoder, ctc_conf, model_conf.ctc_weight,
                 token_list) + model.safetensors in FunASR's keys (encoder.*, decoder.*, ctc.ctc_lo.*): FunASR's
                 modules built from config.yaml load it with load_state_dict(strict=True)
  R/frontend/    the visual front end: config.json (model_type conv3d_resnet) + model.safetensors in the
                 CNVSRC 2025 / auto_avsr key names (frontend3D.*, trunk.layer*.*) with BatchNorm running_mean /
                 running_var / num_batches_tracked (shared.weights.load_pretrained reads it back; a config
                 `init` entry loads it at prefix `frontend`)
  R/embed.safetensors   the front end -> encoder projection, `embed.0.weight` [Din, C] / `embed.0.bias` (the
                 CNVSRC baseline's encoder.embed.0)
  R/pinyin_decoder.safetensors + pinyin_decoder.json   the pinyin decoder (dual model) in our tree's '/' names
                 (an MBart-layout decoder half; no PyTorch library has the decoder alone)
  R/tokens/chars.txt, R/tokens/pinyin.txt   one token per line, line i (from 0) = id i
                 (<pad> = CTC blank 0, <bos> = sos 1, <eos> 2, <unk> 3, then the units)
  R/release.json what is where, the step, the vocabulary ids (blank, sos, eos)
  with --refiner RW: R/refiner/ (the PEFT adapter directory, vsr_pin_jax/refiner.py)
"""
from __future__ import annotations

import json
import os

import jax
import numpy as np
from absl import flags

from shared import cli


def export(workdir: str, out: str, *, step: int | None = None, dtype: str = "float32", refiner: str | None = None
           ) -> str:
  from safetensors.numpy import save_file

  from shared.checkpoint import restore
  from shared.models.sanm import CTCHead, SANMDecoder, SANMEncoder
  from shared.nn.resnet import Conv3dResNet
  from shared.weights import save_pretrained
  from shared.weights.init import save_params
  from shared.weights.sanm_family import save_funasr
  from vsr_pin_jax.task import make_task
  r = restore(workdir, step)
  task = make_task(r.config)
  c, vocab = task.model.config, task.vocab
  p = jax.tree.map(np.asarray, r.params)
  np_dtype = None if dtype == "float32" else dtype
  os.makedirs(out, exist_ok=True)
  tokens = list(vocab.chars.tokens)
  save_funasr(os.path.join(out, "funasr"),
              {"encoder": SANMEncoder(c.encoder), "decoder": SANMDecoder(c.decoder),
               "ctc": CTCHead(c.char_vocab, c.encoder.output_size)},
              {"encoder": p["encoder"], "decoder": p["decoder"], "ctc": p["ctc"]},
              config={"token_list": tokens, "model_conf": {"ctc_weight": float(r.config.loss.ctc_weight)}},
              dtype=np_dtype)
  save_pretrained(Conv3dResNet(c.frontend), {"params": p["frontend"],
                                            "batch_stats": jax.tree.map(np.asarray, r.model_state["batch_stats"]
                                                                        ["frontend"])},
                  os.path.join(out, "frontend"), dtype=np_dtype)
  cast = (lambda x: x) if np_dtype is None else (lambda x: np.asarray(jax.numpy.asarray(x, np_dtype)))
  save_file({"embed.0.weight": np.ascontiguousarray(cast(p["embed"]["kernel"]).T),
             "embed.0.bias": np.ascontiguousarray(cast(p["embed"]["bias"]))}, os.path.join(out, "embed.safetensors"))
  files = {"funasr": "funasr/", "frontend": "frontend/", "embed": "embed.safetensors",
           "chars": "tokens/chars.txt", "pinyin": "tokens/pinyin.txt"}
  if c.pinyin:
    save_params(os.path.join(out, "pinyin_decoder.safetensors"), p["pinyin_decoder"], dtype=np_dtype)
    with open(os.path.join(out, "pinyin_decoder.json"), "w") as f:
      json.dump({k: v for k, v in vars(c.pinyin_mbart()).items() if k not in ("lora", "hf_extra")}, f, indent=1)
    files["pinyin_decoder"] = "pinyin_decoder.safetensors"
  os.makedirs(os.path.join(out, "tokens"), exist_ok=True)
  for name, v in (("chars", vocab.chars), ("pinyin", vocab.pinyin)):
    with open(os.path.join(out, "tokens", f"{name}.txt"), "w", encoding="utf-8") as f:
      f.write("\n".join(v.tokens) + "\n")
  if refiner:
    from vsr_pin_jax import refiner as refiner_lib
    refiner_lib.export_refiner(refiner, os.path.join(out, "refiner"))
    files["refiner"] = "refiner/"
  with open(os.path.join(out, "release.json"), "w") as f:
    json.dump({"system": "vsr_pin_jax", "step": int(r.step), "files": files, "dtype": dtype,
               "blank_id": 0, "sos_id": vocab.chars.bos_id, "eos_id": vocab.chars.eos_id,
               "lip_crop": int(r.config.data.crop), "lip_mean": 0.421, "lip_std": 0.165,
               "pinyin": bool(c.pinyin)}, f, indent=1)
  return out


def main():
  cli.export_main(export, refiner=cli.FLAGS.refiner)


if __name__ == "__main__":
  cli.define_export_flags()
  flags.DEFINE_string("refiner", None, "A refiner workdir: also write its PEFT adapter under R/refiner.")
  cli.run(main)
