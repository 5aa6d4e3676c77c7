"""The GPU tests' gate (issue 12): without a GPU they skip, saying so; with
WC_REQUIRE_GPU=1 (scripts/gpu-run) they fail instead; and a CUDA driver that
is installed but unusable is an error, never "no GPU". Run on this
machine's real CUDA runtime: a GPU unit test binary and a Python GPU test."""

import os
import subprocess
import sys

import pytest

from weightcast_testing.cluster import REPO

GTEST = os.path.join(REPO, "bazel-bin", "kernels", "kernels_gpu_test")


def has_gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


pytestmark = pytest.mark.skipif(has_gpu(), reason="checks the gate on a machine without a GPU")


def run(cmd, **env):
    e = {k: v for k, v in os.environ.items() if k != "WC_REQUIRE_GPU"}
    e.update(env)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=e)


def test_gpu_unit_tests_skip_without_a_gpu_and_fail_when_one_is_required():
    assert os.access(GTEST, os.X_OK), f"{GTEST} missing: bazel build //kernels:kernels_gpu_test"
    p = run([GTEST])
    assert p.returncode == 0, p.stdout[-2000:]
    assert "no CUDA device on this machine" in p.stdout and "[  SKIPPED ]" in p.stdout
    assert "[  FAILED  ]" not in p.stdout
    p = run([GTEST], WC_REQUIRE_GPU="1")
    assert p.returncode != 0
    assert "WC_REQUIRE_GPU=1 requires one" in p.stdout and "[  FAILED  ]" in p.stdout


def test_an_installed_but_unusable_driver_is_not_taken_for_no_gpu(tmp_path):
    # A libcuda.so.1 that loads but is no driver: what a broken or
    # mismatched driver install looks like to the runtime.
    src = tmp_path / "fake.c"
    src.write_text("int weightcast_not_a_driver(void) { return 0; }\n")
    lib = tmp_path / "libcuda.so.1"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True, timeout=60)
    p = run([GTEST, "--gtest_filter=*"], LD_LIBRARY_PATH=str(tmp_path))
    assert p.returncode != 0, p.stdout[-2000:]
    assert "cudaGetDeviceCount" in p.stdout and "[  SKIPPED ]" not in p.stdout, p.stdout[-2000:]


def test_python_gpu_tests_skip_without_a_gpu_and_fail_when_one_is_required():
    test = os.path.join(REPO, "tests", "test_gpu_trainer.py")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test]
    p = run(cmd)
    # 5: nothing collected (the module skipped itself)
    assert p.returncode in (0, 5) and "skipped" in p.stdout, p.stdout[-2000:]
    p = run(cmd, WC_REQUIRE_GPU="1")
    assert p.returncode != 0, p.stdout[-2000:]
    assert "WC_REQUIRE_GPU=1 requires one" in p.stdout + p.stderr
