"""TeaCache (Liu et al. 2025): the decision rule, pure Python (no torch, no diffusers).

The block-level integration (:mod:`etcdiff.integration.block.cache`) measures, at every denoiser call, the
relative L1 change of the first block's timestep-modulated input against the previous step's,
``rel(m_t, m_{t-1}) = mean|m_t - m_{t-1}| / mean|m_{t-1}|``, and asks this rule whether the transformer block
stack runs. The rule keeps, per CFG branch (and per sample of a batch), the accumulator

    acc += poly4(rel(m_t, m_{t-1}))          (coefficients highest power first, as numpy.poly1d)

and skips (reuses the stored block-stack residual) while ``acc < threshold``; otherwise the stack runs and
``acc`` is reset to 0. The first and the last step always run (and reset ``acc``).

With a batch (several samples in one call, e.g. batched classifier-free guidance) every sample keeps its own
accumulator; the call skips only when *every* sample would skip, and when it computes all accumulators are
reset (the stack ran for all of them). With one sample this is exactly the published rule.

Published coefficients (numpy.poly1d order, highest power first):

* FLUX.1 (dev/schnell): TeaCache4FLUX, https://github.com/ali-vilab/TeaCache/blob/main/TeaCache4FLUX/teacache_flux.py
  Presets 0.25 / 0.4 / 0.6 / 0.8 give about 1.5x / 1.8x / 2.0x / 2.25x at 28 steps.
* Wan 2.1 (signal: the time embedding ``e``, i.e. diffusers' ``condition_embedder.time_embedder`` output;
  non-"ret_steps" mode): TeaCache4Wan2.1,
  https://github.com/ali-vilab/TeaCache/blob/main/TeaCache4Wan2.1/teacache_generate.py
  (T2V 1.3B, T2V 14B, I2V 14B 480P and 720P).
* HunyuanVideo, LTX-Video, Mochi: TeaCache4HunyuanVideo / TeaCache4LTX-Video / TeaCache4Mochi in the same
  repository; listed for completeness (their families are not hooked by etcdiff yet).

No coefficients were published for DiT, PixArt or SD3: :data:`IDENTITY_COEFFICIENTS` (``poly(x) = x``)
is used there, which needs a threshold chosen for the raw relative change; calibrate with
``etcdiff.integration.block.calibration.calibrate_teacache`` and :func:`fit_teacache_coefficients`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

#: FLUX.1 (TeaCache4FLUX), highest power first.
FLUX_COEFFICIENTS: list[float] = [498.651651, -283.781631, 55.8554382, -3.82021401, 0.264230861]

#: ``poly(x) = x``: the fallback where no coefficients were published (calibration needed).
IDENTITY_COEFFICIENTS: list[float] = [0.0, 0.0, 0.0, 1.0, 0.0]

_TEACACHE_REPO = "https://github.com/ali-vilab/TeaCache"

#: Published coefficients by model name, with where they come from.
TEACACHE_COEFFICIENTS: dict[str, tuple[list[float], str]] = {
    "flux": (FLUX_COEFFICIENTS, f"{_TEACACHE_REPO}/blob/main/TeaCache4FLUX/teacache_flux.py"),
    "wan2.1-t2v-1.3b": (
        [2.39676752e03, -1.31110545e03, 2.01331979e02, -8.29855975e00, 1.37887774e-01],
        f"{_TEACACHE_REPO}/blob/main/TeaCache4Wan2.1/teacache_generate.py",
    ),
    "wan2.1-t2v-14b": (
        [-5784.54975374, 5449.50911966, -1811.16591783, 256.27178429, -13.02252404],
        f"{_TEACACHE_REPO}/blob/main/TeaCache4Wan2.1/teacache_generate.py",
    ),
    "wan2.1-i2v-14b-480p": (
        [-3.02331670e02, 2.23948934e02, -5.25463970e01, 5.87348440e00, -2.01973289e-01],
        f"{_TEACACHE_REPO}/blob/main/TeaCache4Wan2.1/teacache_generate.py",
    ),
    "wan2.1-i2v-14b-720p": (
        [-114.36346466, 65.26524496, -18.82220707, 4.91518089, -0.23412683],
        f"{_TEACACHE_REPO}/blob/main/TeaCache4Wan2.1/teacache_generate.py",
    ),
    "hunyuan-video": (
        [7.33226126e02, -4.01131952e02, 6.75869174e01, -3.14987800e00, 9.61237896e-02],
        f"{_TEACACHE_REPO}/blob/main/TeaCache4HunyuanVideo/teacache_sample_video.py",
    ),
    "ltx-video": (
        [2.14700694e01, -1.28016453e01, 2.31279151e00, 7.92487521e-01, 9.69274326e-03],
        f"{_TEACACHE_REPO}/blob/main/TeaCache4LTX-Video/teacache_ltx.py",
    ),
    "identity": (IDENTITY_COEFFICIENTS, "no published coefficients: poly(x) = x; calibrate with calibrate_teacache"),
}

#: FLUX thresholds from TeaCache4FLUX and their reported speedups at 28 steps.
FLUX_PRESETS: dict[float, float] = {0.25: 1.5, 0.4: 1.8, 0.6: 2.0, 0.8: 2.25}


def poly_eval(coefficients: Sequence[float], x: float) -> float:
    """``numpy.poly1d(coefficients)(x)``: coefficients highest power first (Horner)."""
    y = 0.0
    for c in coefficients:
        y = y * x + float(c)
    return y


def fit_teacache_coefficients(input_changes: Sequence[float], output_changes: Sequence[float]) -> list[float]:
    """Fit the degree-4 rescaling polynomial from input change to output change (``np.polyfit(x, y, 4)``).

    ``input_changes[i]`` is rel(m_t, m_{t-1}) and ``output_changes[i]`` the matching rel(o_t, o_{t-1}) of the
    model output, pooled over steps and prompts of full (uncached) runs. Returns 5 floats, highest power first.
    """
    import numpy as np

    x = np.asarray(list(input_changes), dtype=np.float64)
    y = np.asarray(list(output_changes), dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(
            f"fit_teacache_coefficients: need two equally long 1-D sequences, got {x.shape} and {y.shape}."
        )
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 5 or np.unique(x).size < 5:
        raise ValueError(
            "fit_teacache_coefficients: a degree-4 fit needs at least 5 distinct input changes, got "
            f"{np.unique(x).size}. Record more steps or more prompts."
        )
    return [float(c) for c in np.polyfit(x, y, 4)]


@dataclass
class TeaCacheState:
    """One CFG branch's accumulators (one per sample of the batch)."""

    acc: list[float] = field(default_factory=list)
    last_acc: float | None = None  # the largest accumulator after the last decision (for reports)


class TeaCache:
    """The TeaCache decision rule for the block-level hooks.

    ``threshold``: skip while the accumulated rescaled change stays below it (FLUX presets 0.25/0.4/0.6/0.8;
    the default 0.25 is the most conservative of them, about 1.5x at 28 steps).
    ``coefficients``: the poly4 rescaling, highest power first; ``None`` takes the published default of the
    hooked model at enable time (:data:`TEACACHE_COEFFICIENTS`), or :data:`IDENTITY_COEFFICIENTS` where none
    was published (then calibrate).
    """

    name = "teacache"
    needs_signal = True
    #: what a saved calibration made at another step count means for this one (``etcdiff.enable`` warns with it)
    steps_fallback_note = ("Its coefficients carry over to another step count (they map one step's input change "
                           "to its output change), but the speed a threshold gives does not: check the reuse rate.")

    def __init__(self, threshold: float = 0.25, coefficients: Sequence[float] | None = None) -> None:
        threshold = float(threshold)
        if not threshold >= 0.0:
            raise ValueError(f"teacache: threshold must be >= 0, got {threshold!r}.")
        self.threshold = threshold
        self.coefficients: list[float] | None = None
        self.coefficients_source: str | None = None
        if coefficients is not None:
            self.set_coefficients(coefficients, "user")
        self.num_steps = 0

    def set_coefficients(self, coefficients: Sequence[float], source: str) -> None:
        coefficients = [float(c) for c in coefficients]
        if not coefficients:
            raise ValueError("teacache: coefficients must not be empty.")
        self.coefficients = coefficients
        self.coefficients_source = source

    def rescale(self, rel_change: float) -> float:
        if self.coefficients is None:
            raise RuntimeError("teacache: no coefficients set; pass coefficients=... or enable it on a model.")
        return poly_eval(self.coefficients, rel_change)

    # -- per generation ---------------------------------------------------------------------------------------
    def begin(self, num_steps: int) -> None:
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"teacache: the number of steps must be a positive integer, got {num_steps!r}.")
        self.num_steps = num_steps

    def new_state(self) -> TeaCacheState:
        return TeaCacheState()

    def decide(self, state: TeaCacheState, step: int, change: Sequence[float] | float | None = None,
               can_skip: bool = True) -> bool:
        """Whether the block stack runs at ``step`` for this branch; updates ``state``.

        ``change``: rel(m_t, m_{t-1}) per sample (or one float); ``None`` when there is no previous input.
        ``can_skip``: ``False`` when no residual is stored yet (then the stack runs whatever the rule says).
        """
        if change is None:
            changes = None
        elif isinstance(change, (int, float)):
            changes = [float(change)]
        else:
            changes = [float(c) for c in change]
        boundary = step <= 0 or step >= self.num_steps - 1
        if boundary or changes is None or not can_skip:
            compute = True
        else:
            if len(state.acc) != len(changes):
                state.acc = [0.0] * len(changes)
            state.acc = [a + self.rescale(c) for a, c in zip(state.acc, changes)]
            # NaN or inf compare False below: the stack runs
            compute = not all(a < t for a, t in zip(state.acc, self.thresholds_for(state, len(state.acc))))
        state.last_acc = max(state.acc) if state.acc else None
        if compute:
            state.acc = [0.0] * (len(changes) if changes is not None else len(state.acc))
        return compute

    def thresholds_for(self, state: TeaCacheState, n: int) -> list[float]:
        """The threshold of each of the ``n`` samples (one for all here; PromptTea sets one per prompt)."""
        return [self.threshold] * n

    def params(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "coefficients": self.coefficients,
                "coefficients_source": self.coefficients_source}

    def __repr__(self) -> str:
        return f"TeaCache(threshold={self.threshold!r}, coefficients={self.coefficients!r})"
