"""mujun scoring: configurable 亩均论英雄 evaluation schemes, dual ratings, multi-year rules.

Pure pandas/numpy, no I/O besides reading scheme YAML files.

>>> from scoring import list_presets
>>> "yongkang" in list_presets()
True
"""

from .engine import countable_land, evaluate
from .explain import explain_text
from .fingerprint import run_fingerprint
from .multiyear import differential_electricity, low_yield_land, multiyear_status, streaks
from .scheme import Scheme, SchemeError, list_presets, load_scheme, parse_scheme, scheme_hash

__all__ = [
    "Scheme",
    "SchemeError",
    "countable_land",
    "differential_electricity",
    "evaluate",
    "explain_text",
    "list_presets",
    "load_scheme",
    "low_yield_land",
    "multiyear_status",
    "parse_scheme",
    "run_fingerprint",
    "scheme_hash",
    "streaks",
]
