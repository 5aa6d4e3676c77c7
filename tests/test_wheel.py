"""pip install, no Bazel (issue 14): scripts/build-wheel makes the wheel, a
clean venv (nothing but what pip brings) installs it, and its commands and
its receiver library run a real update: two sidecars from the wheel, one
receiver from the wheel's weightcast-recv, one from its Python package
through the packaged libweightcast_receiver.so. The packaged programs link
only the manylinux base libraries, what the wheel grafted and PyPI's NCCL."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from weightcast_testing.modelgen import values

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRAMS = ("weightcastd", "weightcastctl", "weightcast-recv", "weightcast-convert")
# What a manylinux wheel may take from the system (auditwheel's policy
# whitelist, the part these programs use).
BASE = {"linux-vdso.so.1", "libc.so.6", "libm.so.6", "libdl.so.2", "librt.so.1",
        "libpthread.so.0", "libstdc++.so.6", "libgcc_s.so.1", "ld-linux-x86-64.so.2",
        "libz.so.1"}

PY_RECEIVER = r"""
import hashlib, json, sys
from weightcast.receiver import Receiver, ReceiveStatus, receiver_library
print(json.dumps({"lib": receiver_library()}), flush=True)
r = Receiver(sys.argv[1], rank=int(sys.argv[2]), timeout_s=20)
for _ in range(int(sys.argv[3])):
    got = {}
    res = r.next(lambda v, n, c: None,
                 lambda name, dtype, shape, a: got.__setitem__(
                     name, hashlib.sha256(a.tobytes()).hexdigest()),
                 lambda v: None, lambda v: None, wait_s=60)
    assert res.status == ReceiveStatus.COMMITTED, res
    print(json.dumps({"version": res.version, "sha256": got}), flush=True)
r.close()
"""


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    env = dict(os.environ, WEIGHTCAST_WHEEL_MODE="fastbuild")
    p = subprocess.run([os.path.join(REPO, "scripts", "build-wheel"), str(tmp / "dist")],
                       capture_output=True, text=True, timeout=1500, env=env)
    assert p.returncode == 0, p.stderr[-4000:]
    wheel = p.stdout.strip().splitlines()[-1]
    assert os.path.basename(wheel).startswith("weightcast-0.1.0-py3-none-manylinux_2_35_x86_64")
    venv = tmp / "venv"
    # A venv of the system's Python with nothing in it: not the project's.
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True, timeout=300)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                          "--disable-pip-version-check", wheel],
                         capture_output=True, text=True, timeout=1200)
    assert pip.returncode == 0, pip.stderr[-4000:]
    return venv


def site_packages(venv):
    out = subprocess.run([str(venv / "bin" / "python"), "-c",
                          "import weightcast, os; print(os.path.dirname(os.path.dirname("
                          "weightcast.__file__)))"],
                         capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_wheel_carries_programs_linking_only_base_and_grafted_libraries(clean_venv):
    site = site_packages(clean_venv)
    assert not site.startswith(REPO + "/python"), site  # the installed copy, not the checkout
    native = os.path.join(site, "weightcast", "_native")
    nccl = os.path.join(site, "nvidia", "nccl", "lib")
    for path in [os.path.join(native, "bin", p) for p in PROGRAMS] + [
            os.path.join(native, "libweightcast_receiver.so")]:
        ldd = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=60,
                             env={"LD_LIBRARY_PATH": nccl})
        assert ldd.returncode == 0, ldd.stderr
        for line in ldd.stdout.splitlines():
            name, _, where = line.strip().partition(" => ")
            name = name.split()[0]
            where = os.path.normpath(where.split(" (")[0]) if where else ""
            assert "not found" not in line, (path, line)
            if os.path.basename(name) in BASE:
                continue
            assert where.startswith(site + "/weightcast.libs/") or where.startswith(nccl), \
                (os.path.basename(path), line)
    for p in PROGRAMS:
        v = subprocess.run([str(clean_venv / "bin" / p), "--version"], capture_output=True,
                           text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
        assert v.returncode == 0 and v.stdout.strip() == f"{p} 0.1.0", (p, v.stdout, v.stderr)


def test_update_with_the_installed_wheel(clean_venv, make_cluster):
    c = make_cluster(bin_dir=str(clean_venv / "bin"), timeout_s=20)
    c.start_daemons()
    for s in range(2):
        assert c.init(s).rc == 0
    c.start_receiver(2)
    env = {"PATH": "/usr/bin:/bin", "WEIGHTCAST_TOKEN": c.token}
    py = subprocess.Popen([str(clean_venv / "bin" / "python"), "-c", PY_RECEIVER,
                           f"127.0.0.1:{c.port}", "3", "2"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env, cwd="/")
    try:
        first = json.loads(py.stdout.readline() or "{}")
        assert "/weightcast/_native/libweightcast_receiver.so" in first.get("lib", ""), \
            (first, py.stderr.read() if py.poll() is not None else "")
        c.register()
        for v in (1, 2):
            c.write_version(v)
            results = c.update(v)
            assert [r.rc for r in results] == [0, 0], [r.err for r in results]
            c.verify(2, v)
            got = json.loads(py.stdout.readline())
            assert got["version"] == v
            want = {name: hashlib.sha256(np.ascontiguousarray(
                values(name, dtype, shape, v)).tobytes()).hexdigest()
                for name, dtype, shape in c.model.tensors()}
            assert got["sha256"] == want
        assert py.wait(timeout=60) == 0, py.stderr.read()
    finally:
        if py.poll() is None:
            py.kill()
            py.wait()
