"""ETC+ (``etc-plus``), this project's extension of ETC: the policy, the fit of its window errors, and the
resampling that lets one profile serve other step counts."""

from .fit import fit_etc_plus, item_rms, load_etc_plus_profile
from .policy import ETCPlus

__all__ = ["ETCPlus", "fit_etc_plus", "item_rms", "load_etc_plus_profile"]
