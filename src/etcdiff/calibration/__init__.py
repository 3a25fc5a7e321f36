"""Model-specific error tolerance search (ETC paper §3.3): find ETC's tau for a model.

* :func:`calibrate_pipeline` (a diffusers pipeline) and :func:`calibrate_denoiser` (any ``model(x, t, **kw)``
  with a scheduler) run the search and return a :class:`Profile`;
* :func:`save_profile` / :func:`load_profile` / :func:`find_profile` store and find profiles (default folder:
  ``$ETCDIFF_PROFILE_DIR`` or ``~/.cache/etcdiff/profiles``), :func:`plot_profile` draws one;
* :func:`record_pipeline_runs` / :func:`record_denoiser_runs` record full-step runs as trajectories, which
  :func:`search_trajectories` (ETC's tolerance) and other methods' fits read;
* :func:`etc_from_profile` gives the ``ETC`` policy of a profile, for its own step count or another one.

Command line: ``etcdiff calibrate --model demo``.
"""

from .decode import PipelineDecoder, guess_modality, pipeline_decoder
from .plot import plot_profile
from .profile import (
    Profile,
    etc_from_profile,
    load_profile,
    profile_dir,
    profile_filename,
    profile_identity,
    resample_curves,
    save_profile,
)
from .profile_store import find_profile
from .change_point import change_point, min_steps, tolerance_from_curves
from .perturbation import step_differences
from .prompts import default_prompts, load_prompts
from .runs import RecordingPolicy, record_denoiser_runs, record_pipeline_runs
from .search import SearchResult, calibrate_denoiser, calibrate_pipeline, search_trajectories
from .similarity import similarity

__all__ = [
    "PipelineDecoder", "Profile", "RecordingPolicy", "SearchResult", "calibrate_denoiser", "calibrate_pipeline",
    "change_point", "default_prompts", "etc_from_profile", "find_profile", "guess_modality", "load_profile",
    "load_prompts", "min_steps", "pipeline_decoder", "plot_profile", "profile_dir", "profile_filename",
    "profile_identity", "record_denoiser_runs", "record_pipeline_runs", "resample_curves", "save_profile",
    "search_trajectories", "similarity", "step_differences", "tolerance_from_curves",
]
