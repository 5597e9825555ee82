"""The paper's char-only baseline at tiny size: tiny.py without the pinyin decoder (α = 1)."""
from configs.vsr_pin.tiny import get_config as _tiny


def get_config(arg: str = ""):
  del arg
  return _tiny("char_only")
