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

from .._package import lazy_names

# functions named like their module: bound here, or the submodule, once imported, would hide them
from .change_point import change_point
from .similarity import similarity

#: public name -> the module that defines it (imported on first use, so that finding a saved profile
#: costs no import of the search, the similarity measures or the plots)
_EXPORTS = {
    **dict.fromkeys(("PipelineDecoder", "guess_modality", "pipeline_decoder"), ".decode"),
    "plot_profile": ".plot",
    **dict.fromkeys(("Profile", "etc_from_profile", "load_profile", "profile_dir", "profile_filename",
                     "profile_identity", "resample_curves", "save_profile"), ".profile"),
    "find_profile": ".profile_store",
    **dict.fromkeys(("min_steps", "tolerance_from_curves"), ".change_point"),
    "step_differences": ".perturbation",
    **dict.fromkeys(("default_prompts", "load_prompts"), ".prompts"),
    **dict.fromkeys(("RecordingPolicy", "record_denoiser_runs", "record_pipeline_runs"), ".runs"),
    **dict.fromkeys(("SearchResult", "calibrate_denoiser", "calibrate_pipeline", "search_trajectories"), ".search"),
}


__getattr__ = lazy_names(__name__, _EXPORTS)

__all__ = [
    "PipelineDecoder", "Profile", "RecordingPolicy", "SearchResult", "calibrate_denoiser", "calibrate_pipeline",
    "change_point", "default_prompts", "etc_from_profile", "find_profile", "guess_modality", "load_profile",
    "load_prompts", "min_steps", "pipeline_decoder", "plot_profile", "profile_dir", "profile_filename",
    "profile_identity", "record_denoiser_runs", "record_pipeline_runs", "resample_curves", "save_profile",
    "search_trajectories", "similarity", "step_differences", "tolerance_from_curves",
]
