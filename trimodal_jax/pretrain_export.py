"""`python -m trimodal_jax.pretrain_export --workdir W --out DIR [--step S] [--dtype float32|bfloat16] [--evaluate]`

Writes a stand-in pretraining run's (trimodal_jax/pretrain.py) encoder / LM ALONE in its family's native layout
with shared.weights.save_pretrained, so configs/trimodal/tiny.py reads it with --config.init.<name>.path=DIR:

  sign   swin3d    config.json + model.safetensors in torchvision's swin3d keys (features only: the gloss head is
                   not written; init.sign prefix sign_encoder)
  lip    avhubert  fairseq av_hubert keys, the ResNet's BatchNorm running statistics included (init.lip prefix
                   lip_encoder: params and batch_stats)
  audio  whisper   the transformers WhisperEncoder keys (init.audio prefix audio_encoder)
  llm    llm       a transformers LLaMA directory (init.llm prefix llm; the tiny model's LoRA leaves stay
                   missing: allow_missing)
plus DIR/standin.json: what the directory stands in for, the run, its step and its last held-out metrics (from
W/metrics.jsonl). The heads (gloss classifier, CTC) are training scaffolding and are not written.
"""
from __future__ import annotations

import json
import os

import jax
import numpy as np

from shared.errors import CheckpointError

ROLES = {
    "sign": ("swin3d", "Video Swin-T pretrained on isolated-sign recognition (ISLR)",
             "isolated gloss classification on SynthCue sign clips (train split)"),
    "lip": ("avhubert", "AV-HuBERT Large (self-supervised on lips)",
            "VSR-CTC over characters on SynthCue speech mouth crops (train split)"),
    "audio": ("whisper", "the Whisper-medium encoder (supervised ASR)",
              "ASR-CTC over characters on SynthCue speech log-mels (train split)"),
    "llm": ("llm", "LLaMA-3.2-3B", "next-token LM on SynthCue sentences (train split)"),
}


def family_module(cfg):
  """-> (the exported module, the param prefix) of a pretrain config."""
  from shared.models.avhubert import AVHubertVideo
  from shared.models.llm import LLM
  from shared.models.swin3d import SwinTransformer3d
  from shared.models.whisper import WhisperEncoder
  from trimodal_jax.pretrain import PREFIX, model_config
  m, name = model_config(cfg), cfg.pretrain
  module = {"sign": lambda: SwinTransformer3d(m.sign), "lip": lambda: AVHubertVideo(m.lip),
            "audio": lambda: WhisperEncoder(m.audio), "llm": lambda: LLM(m.llm.replace(lora=None))}[name]()
  return module, PREFIX[name]


def exported_variables(cfg, params, model_state):
  """The subtree save_pretrained writes: params[prefix] ({"params", "batch_stats"} for the lip encoder)."""
  _, prefix = family_module(cfg)
  p = jax.tree.map(np.asarray, params[prefix])
  if cfg.pretrain != "lip":
    return p
  stats = (model_state or {}).get("batch_stats", {}).get(prefix)
  if stats is None:
    raise CheckpointError(f"the lip run's model_state has no batch_stats/{prefix}: the AV-HuBERT ResNet's "
                          "running statistics are needed")
  return {"params": p, "batch_stats": jax.tree.map(np.asarray, stats)}


def last_eval(workdir: str) -> dict:
  """The last eval/* line of W/metrics.jsonl ({} when none)."""
  path = os.path.join(workdir, "metrics.jsonl")
  out: dict = {}
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        rec = json.loads(line)
        ev = {k[len("eval/"):]: v for k, v in rec.items() if k.startswith("eval/")}
        if ev:
          out = {"step": rec.get("step"), **ev}
  return out


def write(cfg, params, model_state, out: str, *, dtype: str = "float32", step: int | None = None,
          workdir: str = "") -> str:
  """save_pretrained of the stand-in's encoder / LM into `out` (+ standin.json) -> out."""
  from shared.weights import save_pretrained
  from trimodal_jax.pretrain import NAMES
  if cfg.get("pretrain") not in NAMES:
    raise CheckpointError(f"{workdir or 'config'}: pretrain={cfg.get('pretrain')!r} is not a stand-in pretraining "
                          f"run (expected one of {NAMES})")
  module, prefix = family_module(cfg)
  save_pretrained(module, exported_variables(cfg, params, model_state), out,
                  dtype=None if dtype == "float32" else dtype)
  family, stands_for, how = ROLES[cfg.pretrain]
  with open(os.path.join(out, "standin.json"), "w") as f:
    json.dump({"standin": cfg.pretrain, "family": family, "stands_in_for": stands_for, "pretraining": how,
               "init_entry": f"--config.init.{cfg.pretrain}.path={os.path.abspath(out)} (prefix {prefix})",
               "workdir": os.path.abspath(workdir) if workdir else "", "step": step,
               "held_out": last_eval(workdir) if workdir else {}}, f, indent=1)
  return out


def export(workdir: str, out: str, *, step: int | None = None, dtype: str = "float32", evaluate: bool = False
           ) -> str:
  """Restores W's checkpoint (the newest, or `step`) and writes `out`; evaluate=True first computes the held-out
  metric of that checkpoint (trimodal_jax.pretrain.evaluate; a run stopped before its eval step has none in
  metrics.jsonl) and records it in standin.json."""
  from shared.checkpoint import restore
  r = restore(workdir, step)
  held = None
  if evaluate:
    from trimodal_jax.pretrain import evaluate as evaluate_run
    held = {"step": int(r.step), **evaluate_run(r.config, {"params": r.params, **r.model_state})}
    print(json.dumps(held), flush=True)
  write(r.config, r.params, r.model_state, out, dtype=dtype, step=int(r.step), workdir=workdir)
  if held is not None:
    path = os.path.join(out, "standin.json")
    info = json.load(open(path))
    info["held_out"] = held
    with open(path, "w") as f:
      json.dump(info, f, indent=1)
  return out


def main(_=None):
  from absl import flags
  from shared import cli
  cli.export_main(export, evaluate=flags.FLAGS.evaluate)


if __name__ == "__main__":
  from absl import flags
  from shared import cli
  cli.define_export_flags()
  flags.DEFINE_boolean("evaluate", False, "Compute the held-out metric of the checkpoint (data.eval_split) and "
                       "record it in standin.json.")
  cli.run(main)
