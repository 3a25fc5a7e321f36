"""scripts/latent_image_agreement.py: whether the latent log error and the image PSNR put the same setting closer."""

from repo_scripts import load_script


def _row(label, log, psnr, prompt="a", seed=0, group="development"):
    return {"group": group, "prompt": prompt, "seed": seed, "label": label, "log": log, "psnr": psnr}


def test_agreement_counts_the_images_where_both_metrics_pick_the_same_setting():
    module = load_script("latent_image_agreement")
    rows = [_row("plan", -5.0, 60.0, "a"), _row("linear", -5.5, 63.0, "a"),  # both: linear closer
            _row("plan", -5.0, 62.0, "b"), _row("linear", -4.0, 55.0, "b"),  # both: plan closer
            _row("plan", -5.0, 60.0, "c"), _row("linear", -4.9, 61.0, "c"),  # latent: plan, image: linear
            _row("plan", -5.0, 60.0, "d")]  # no pair
    assert module.agreement(rows, "plan", "linear") == (2, 1)


def test_means_are_per_group_and_setting_with_the_log_error_in_db():
    module = load_script("latent_image_agreement")
    rows = [_row("plan", -2.302585, 40.0, "a"), _row("plan", -2.302585, 50.0, "b"),
            _row("plan", -4.60517, 70.0, "a", group="calibration")]
    lines = module.means(rows)
    assert len(lines) == 2
    assert "development" in lines[0] and "( 20.00 dB)" in lines[0] and "PSNR  45.00" in lines[0]
    assert "calibration" in lines[1] and "( 40.00 dB)" in lines[1]


def test_the_settings_are_the_twin_plan_and_lemica_schedules_of_the_case():
    module = load_script("latent_image_agreement")
    got = module.settings("unipc", 50, [25, 12])
    assert [label for label, *_ in got] == ["plan25", "plan12", "etc25", "linear25", "etc12", "linear12"]
    assert got[0][2]["profile"].endswith("solvers-50/unipc-schedules/profiles/etc-plus.json")
    assert got[2][2]["profile"].endswith("dev-schedules/unipc-50/lemica_seed_per_prompt.json")
    assert module.settings("euler", 28, [14])[0][2]["profile"].endswith("adherence-28-schedules/profiles/etc-plus.json")
