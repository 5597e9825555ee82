"""UniCUE tiny, `no_pose` (see configs/unicue/tiny.py for what the words mean); further words and paths go after
the colon, e.g. --config configs/unicue/no_pose.py:csr=W/csr_rel,vae=W/vae_rel."""
from configs.unicue.tiny import get_config as _tiny


def get_config(arg: str = ""):
  return _tiny("no_pose" + ("," + arg if arg else ""))
