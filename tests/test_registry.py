"""One registry: a new method is one module (here, the policy class below) plus one ``register`` line, and it
runs through ``etcdiff.enable``, ``etcdiff generate`` and ``etcdiff bench`` with no other edit."""

import json

import pytest
import torch

import etcdiff
from etcdiff.cli import main
from etcdiff.policies.step.base import StepPolicy


class EveryNth(StepPolicy):
    """The toy method's module: run the model on every ``every``-th step (and the first two and the last),
    reuse the last output elsewhere."""

    name = "toy-every"

    def __init__(self, every: int = 3) -> None:
        super().__init__()
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"toy-every: every must be a positive integer, got {every!r}.")
        self.every = every

    def params(self):
        return {"every": self.every}

    def should_compute(self, step, latents=None):
        self._check_step(step)
        return step < 2 or step == self.num_steps - 1 or step % self.every == 0


@pytest.fixture()
def toy():
    method = etcdiff.register(etcdiff.Method(  # the one line (wrapped)
        "toy-every", "step", "a toy for the registry test", "whole output, unchanged", "no",
        schema=lambda: EveryNth, threshold=None))
    yield method
    etcdiff.unregister("toy-every")


def expected(steps: int, every: int) -> list[int]:
    return [i for i in range(steps) if i < 2 or i == steps - 1 or i % every == 0]


def test_a_registered_toy_runs_through_enable(toy, pipe):
    assert "toy-every" in etcdiff.METHODS and toy.settings_names() == ["every"]
    policy = etcdiff.enable(pipe, "toy-every", every=4)
    assert isinstance(policy, EveryNth)
    pipe(prompt="5", num_inference_steps=12, generator=torch.Generator().manual_seed(0), output_type="np")
    assert etcdiff.last_report(pipe).computed_steps == expected(12, 4)
    with pytest.raises(ValueError, match="unknown setting 'evry' for method 'toy-every'. Did you mean 'every'"):
        etcdiff.enable(pipe, "toy-every", evry=4)


def test_a_registered_toy_runs_through_generate(toy, tmp_path, capsys):
    out = tmp_path / "toy.png"
    assert main(["generate", "--model", "digits", "--prompt", "2", "--method", "toy-every", "--set", "every=3", "--steps", "9",
                 "--out", str(out)]) == 0
    assert out.is_file()
    assert f"computed steps: {expected(9, 3)}" in capsys.readouterr().out


def test_a_registered_toy_runs_through_bench(toy, tmp_path, capsys):
    out, prompts = tmp_path / "bench", tmp_path / "prompts.txt"
    prompts.write_text("1\n")
    assert main(["bench", "--model", "digits", "--settings", "toy-every:every=2,4", "--prompts", str(prompts), "--seeds", "0",
                 "--steps", "8", "--repeats", "1", "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    results = json.loads((out / "results.json").read_text())
    rows = [r for r in results["summary"] if r["method"] == "toy-every"]
    assert len(rows) == 2
    assert sorted(r["nfe"] for r in rows) == sorted(len(expected(8, e)) for e in (2, 4))  # batched CFG: 1 call a step


def test_a_name_taken_twice_is_refused(toy):
    with pytest.raises(ValueError, match="registered already"):
        etcdiff.register(toy)
