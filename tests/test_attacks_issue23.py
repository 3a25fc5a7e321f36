"""The attacks of issue 23 that the focused tests (test_profile_store, test_bench, test_budget_nan, test_inputs,
test_zero_effect, test_install) do not already make: each must end in a clear line, never a silent wrong run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import etcdiff
from etcdiff.calibration.profile import SHIPPED_DIR


def _copy(tmp_path: Path, name: str, edit=None) -> Path:
    doc = json.loads((SHIPPED_DIR / name).read_text(encoding="utf-8"))
    if edit is not None:
        edit(doc)
    out = tmp_path / name
    out.write_text(json.dumps(doc), encoding="utf-8")
    return out


@pytest.mark.parametrize("method, setting, extra", [("meancache", "profile", {"calls": 17}),
                                                    ("ertacache", "profile", {}), ("sencache", "tables", {})])
def test_a_future_format_given_by_path_is_refused(pipe, tmp_path, method, setting, extra):
    path = _copy(tmp_path, f"digits_50steps_{method}.json", lambda d: d.update(format=99))
    with pytest.raises(ValueError, match="format 99 was written by a newer etcdiff"):
        etcdiff.enable(pipe, method, **{setting: str(path)}, **extra)


@pytest.mark.parametrize("method, setting, extra", [("meancache", "profile", {"calls": 17}),
                                                    ("ertacache", "profile", {})])
def test_another_models_profile_given_by_path_is_named(pipe, method, setting, extra):
    path = SHIPPED_DIR / f"scenes_50steps_{method}.json"
    with pytest.warns(UserWarning, match="calibrated on 'scenes', not on this pipeline's model 'digits'"):
        etcdiff.enable(pipe, method, **{setting: str(path)}, **extra)


def test_nan_inside_a_method_profile_given_by_path_is_refused(pipe, tmp_path):
    def poison(doc):
        doc["settings"]["profile"]["tolerance"] = math.nan

    path = _copy(tmp_path, "digits_50steps_etc-plus.json", poison)
    with pytest.raises(ValueError, match=r"settings\.profile\.tolerance is not a finite number"):
        etcdiff.enable(pipe, "etc-plus", profile=str(path), calls=12)


def test_an_unreadable_user_profile_is_named(pipe, tmp_path, monkeypatch):
    folder = tmp_path / "profiles"
    folder.mkdir()
    monkeypatch.setenv("ETCDIFF_PROFILE_DIR", str(folder))
    target = _copy(folder, "digits_50steps_meancache.json")
    real = Path.read_text

    def unreadable(self, *a, **k):  # chmod 000 does not stop root, who runs these tests in CI
        if self == target:
            raise PermissionError(13, "Permission denied")
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", unreadable)
    with pytest.warns(UserWarning, match=r"digits_50steps_meancache\.json cannot be read \(Permission denied\)"):
        etcdiff.enable(pipe, "meancache")
    with pytest.raises(ValueError, match="cannot be read"):
        pipe([1], num_inference_steps=50)


def test_max_window_zero_is_a_clear_error_not_an_index_error():
    prof = json.loads((SHIPPED_DIR / "digits_50steps_etc-plus.json").read_text(encoding="utf-8"))["settings"]["profile"]
    prof["max_window"] = 0
    with pytest.raises(ValueError, match="max_window must be an integer >= 1"):
        etcdiff.make_policy("etc-plus", profile=prof, calls=12)
