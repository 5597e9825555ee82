"""SynthCue phonology: initials, finals, visemes, cued-speech hand shapes and positions.

A toneless pinyin syllable = initial (21 consonants or none) + final (1-3 vowel/nasal phones).

Lips: every initial belongs to one viseme group whose lip target (opening, width, rounding) is
identical inside the group: b/p/m, f, d/t/n/l, g/k/h, j/q/x, zh/ch/sh/r, z/c/s. Vowel phones have
their own lip targets; u/v(ü) and the nasal codas n/ng look the same, so e.g. an/ang, in/ing,
u/ü are lip-identical.

Cued speech (Cornett's scheme, Mandarin-like): 8 hand shapes code the initial, 5 hand positions the
final. Shapes are assigned so that the consonants of one viseme group all get different shapes
(the hand separates what the lips confuse), and a shape is shared only by consonants the lips tell
apart. Positions are assigned the same way over lip-identical finals.
"""
from __future__ import annotations

import numpy as np

INITIALS = ("", "b", "p", "m", "f", "d", "t", "n", "l", "g", "k", "h",
            "j", "q", "x", "zh", "ch", "sh", "r", "z", "c", "s")

# viseme group per initial, and its lip target (opening, width, rounding).
VISEME_GROUPS = (("b", "p", "m"), ("f",), ("d", "t", "n", "l"), ("g", "k", "h"),
                 ("j", "q", "x"), ("zh", "ch", "sh", "r"), ("z", "c", "s"))
VISEME_LIPS = np.array([
    [0.00, 0.50, 0.10],   # bilabial closure
    [0.08, 0.62, 0.00],   # labiodental: lower lip under the teeth
    [0.30, 0.56, 0.00],   # alveolar
    [0.46, 0.50, 0.12],   # velar
    [0.18, 0.82, 0.00],   # palatal: spread
    [0.24, 0.40, 0.62],   # retroflex: protruded
    [0.10, 0.88, 0.00],   # dental: spread, teeth close
], np.float32)
INITIAL_VISEME = {i: g for g, grp in enumerate(VISEME_GROUPS) for i in grp}

# 8 hand shapes as extended fingers (thumb, index, middle, ring, pinky).
HAND_SHAPES = np.array([
    [0, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 1, 1, 1], [0, 1, 1, 1, 1],
    [1, 1, 1, 1, 1], [1, 0, 0, 0, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0],
], np.float32)
INITIAL_SHAPE = {"b": 0, "p": 1, "m": 2, "f": 3, "d": 4, "t": 5, "n": 6, "l": 7,
                 "g": 0, "k": 1, "h": 2, "j": 3, "q": 4, "x": 5,
                 "zh": 6, "ch": 7, "sh": 0, "r": 1, "z": 2, "c": 3, "s": 4, "": 5}

# 5 hand positions in face units (face centre (0,0), face half-width 1, y down).
POSITION_NAMES = ("side", "mouth", "chin", "cheek", "throat")
HAND_POSITIONS = np.array([[1.55, 0.35], [0.45, 0.62], [0.05, 1.12], [0.70, 0.05], [0.05, 1.65]],
                          np.float32)
HAND_REST = np.array([1.9, 2.6], np.float32)

# Vowel / nasal phones: formants F1, F2, F3 (Hz, adult male), lips (opening, width, rounding).
PHONES = {
    "a": ((800, 1250, 2600), (1.00, 0.66, 0.04)),
    "o": ((520, 900, 2500), (0.62, 0.36, 0.85)),
    "e": ((520, 1350, 2500), (0.50, 0.56, 0.10)),
    "E": ((580, 1850, 2600), (0.55, 0.80, 0.00)),
    "i": ((290, 2250, 3000), (0.20, 0.96, 0.00)),
    "u": ((320, 750, 2300), (0.22, 0.30, 1.00)),
    "v": ((290, 1900, 2400), (0.22, 0.30, 1.00)),   # ü: the lips of u
    "n": ((300, 1600, 2600), (0.26, 0.56, 0.05)),
    "N": ((300, 1000, 2400), (0.26, 0.56, 0.05)),   # ng: the lips of n
}
NASAL_PHONES = ("n", "N")
FINALS = {
    "a": "a", "o": "o", "e": "e", "i": "i", "u": "u", "v": "v", "ai": "ai", "ei": "Ei",
    "ao": "au", "ou": "ou", "an": "an", "en": "en", "ang": "aN", "eng": "eN", "ong": "oN",
    "ia": "ia", "ie": "iE", "iao": "iau", "iu": "iou", "ian": "iEn", "in": "in", "iang": "iaN",
    "ing": "iN", "iong": "ioN", "ua": "ua", "uo": "uo", "uai": "uai", "ui": "uEi", "uan": "uan",
    "un": "uen", "uang": "uaN", "ve": "vE", "van": "vEn", "vn": "vn",
}
FINAL_NAMES = tuple(FINALS)
_ZERO = dict(yi="i", ya="ia", yan="ian", yang="iang", yao="iao", ye="ie", yin="in", ying="ing",
             yong="iong", you="iu", yu="v", yue="ve", yuan="van", yun="vn", wu="u", wa="ua",
             wo="uo", wai="uai", wei="ui", wan="uan", wen="un", wang="uang")

# Initial acoustics: manner, noise centre (Hz), noise bandwidth (Hz), aspirated, nasal/approximant
# formants. Manners: stop (closure, burst), affricate (closure, burst, frication), fricative,
# sonorant (voiced, formants), none.
INITIAL_ACOUSTICS = {
    "": ("none", 0, 0, False, None),
    "b": ("stop", 900, 1200, False, None), "p": ("stop", 900, 1200, True, None),
    "m": ("sonorant", 0, 0, False, (250, 1100, 2300)),
    "f": ("fricative", 5500, 3000, False, None),
    "d": ("stop", 3500, 1500, False, None), "t": ("stop", 3500, 1500, True, None),
    "n": ("sonorant", 0, 0, False, (250, 1700, 2600)),
    "l": ("sonorant", 0, 0, False, (380, 1200, 2700)),
    "g": ("stop", 1800, 800, False, None), "k": ("stop", 1800, 800, True, None),
    "h": ("fricative", 1500, 1200, False, None),
    "j": ("affricate", 3400, 1200, False, None), "q": ("affricate", 3400, 1200, True, None),
    "x": ("fricative", 3800, 1600, False, None),
    "zh": ("affricate", 2400, 900, False, None), "ch": ("affricate", 2400, 900, True, None),
    "sh": ("fricative", 2600, 1000, False, None),
    "r": ("sonorant", 0, 0, False, (360, 1300, 1700)),
    "z": ("affricate", 6200, 1500, False, None), "c": ("affricate", 6200, 1500, True, None),
    "s": ("fricative", 6600, 1800, False, None),
}


def split_syllable(syl: str) -> tuple[str, str]:
  """'zhuang' -> ('zh', 'uang'); 'ju' -> ('j', 'v'); 'yue' -> ('', 've'); unknown final: error."""
  if syl in _ZERO:
    return "", _ZERO[syl]
  ini = ""
  for cand in ("zh", "ch", "sh"):
    if syl.startswith(cand):
      ini = cand
      break
  else:
    if syl[:1] in INITIAL_SHAPE and syl[:1] not in ("", "y", "w"):
      ini = syl[:1]
  fin = syl[len(ini):]
  if ini in ("j", "q", "x") and fin.startswith("u"):
    fin = "v" + fin[1:]
  if fin not in FINALS:
    raise ValueError(f"syllable {syl!r}: final {fin!r} is not modelled by SynthCue")
  return ini, fin


def final_lip_signature(fin: str) -> tuple:
  """The sequence of lip targets of a final (what the lips show)."""
  return tuple(PHONES[p][1] for p in FINALS[fin])


def _assign_positions() -> dict[str, int]:
  """Hand position per final: lip-identical finals get different positions."""
  groups: dict[tuple, list[str]] = {}
  for fin in FINAL_NAMES:
    groups.setdefault(final_lip_signature(fin), []).append(fin)
  out = {}
  for gi, fins in enumerate(groups.values()):
    for j, fin in enumerate(fins):
      out[fin] = (gi + j) % len(POSITION_NAMES)
  return out


FINAL_POSITION = _assign_positions()


def syllable_lip_signature(syl: str) -> tuple:
  """What the lips show for a whole syllable: (viseme group or -1, final lip targets)."""
  ini, fin = split_syllable(syl)
  return (INITIAL_VISEME.get(ini, -1), final_lip_signature(fin))
