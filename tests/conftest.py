import os
import sys
import tempfile

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# Tests never read or write the user's calibration profiles (~/.cache/etcdiff/profiles).
os.environ["ETCDIFF_PROFILE_DIR"] = tempfile.mkdtemp(prefix="etcdiff-profiles-")


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (pyproject's addopts): a worker per core this process may use, at most 4, since every worker
    holds its own torch and models (about 0.7 GB) and each test runs on one thread anyway."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cores))


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread for every test: tiny models run much faster so on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture()
def pipe():
    """The embedded digits pipeline, quiet, with whatever a test enabled taken off afterwards."""
    import etcdiff
    from etcdiff.digits import DigitsPipeline

    p = DigitsPipeline.from_embedded()
    p.set_progress_bar_config(disable=True)
    yield p
    etcdiff.disable(p)
