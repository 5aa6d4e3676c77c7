import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "python"))

import pytest  # noqa: E402

from weightcast_testing.cluster import Cluster, default_bin_dir  # noqa: E402
from weightcast_testing.modelgen import MoeModelSpec  # noqa: E402


def pytest_configure(config):
    for name in ("weightcastd", "weightcastctl", "weightcast-recv"):
        path = os.path.join(default_bin_dir(), name)
        if not os.access(path, os.X_OK):
            raise pytest.UsageError(
                f"{path} missing: build with `bazel build //cmd:all` (scripts/test does)")


@pytest.fixture
def make_cluster(tmp_path):
    made = []

    def make(**kwargs):
        kwargs.setdefault("model", MoeModelSpec.tiny())
        kwargs.setdefault("bucket_bytes", 64 << 10)
        kwargs.setdefault("timeout_s", 10)
        c = Cluster(workdir=str(tmp_path / f"c{len(made)}"), **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()
