"""Who may drive a daemon, and what a caller may make it read (issue 11,
items 16 and 17), tried as the unprivileged user `nobody` against a daemon
running as root, the way a hostile local user would: with the real
binaries, a real unix socket and the kernel's own credentials.

Needs root (to act as `nobody` with setpriv); skips otherwise."""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from weightcast_testing.cluster import default_bin_dir, free_port

NOBODY = 65534
TEAM = 4242  # a group only the test's `nobody` is put in

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="acting as another user needs root and setpriv")


@pytest.fixture
def world():
    """A directory every user may enter (pytest's tmp_path is root's alone),
    with a copy of weightcastctl that `nobody` can run."""
    d = tempfile.mkdtemp(prefix="wc-access-", dir="/tmp")
    os.chmod(d, 0o755)
    shutil.copy(os.path.join(default_bin_dir(), "weightcastctl"), f"{d}/weightcastctl")
    os.chmod(f"{d}/weightcastctl", 0o755)
    procs = []
    yield d, procs
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=15)
    shutil.rmtree(d)


def start_daemon(d, procs, name, *flags, env=None):
    log = open(f"{d}/{name}.log", "w")
    p = subprocess.Popen([os.path.join(default_bin_dir(), "weightcastd"), *flags],
                         stdout=log, stderr=subprocess.STDOUT, env=env or os.environ.copy())
    procs.append(p)
    return p


def ctl(d, addr, *args, as_nobody=False, groups=(), env=None, extra=()):
    cmd = [f"{d}/weightcastctl", "--addr", addr, "--rpc-timeout", "5", *extra, *args]
    if as_nobody:
        ids = ["--reuid", str(NOBODY), "--regid", str(NOBODY)]
        ids += ["--groups", ",".join(map(str, groups))] if groups else ["--clear-groups"]
        cmd = ["setpriv", *ids, *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=d,
                          env=env or {k: v for k, v in os.environ.items()
                                      if not k.startswith("WEIGHTCAST_")})


def wait_up(d, addr, **kw):
    deadline = time.time() + 20
    while True:
        p = ctl(d, addr, "status", **kw)
        if p.returncode == 0:
            return
        assert time.time() < deadline, p.stderr
        time.sleep(0.1)


def descriptor(d, name, path, elems=4):
    doc = f"{d}/{name}.json"
    with open(doc, "w") as f:
        json.dump({"tensors": [{"name": name, "dtype": "F32", "shape": [elems],
                                "shm": {"path": path, "offset": 0}}]}, f)
    os.chmod(doc, 0o644)
    return doc


def data_file(path, mode, owner=0, group=0):
    with open(path, "wb") as f:
        f.write(b"\x01" * 16)
    os.chown(path, owner, group)
    os.chmod(path, mode)
    return path


def registered(d, addr):
    p = ctl(d, addr, "status", "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)["registered_tensors"]


def test_the_control_socket_admits_only_the_daemons_user(world):
    d, procs = world
    addr = f"unix:{d}/wc.sock"
    daemon = start_daemon(d, procs, "d", "--listen", addr)
    wait_up(d, addr)
    assert oct(os.stat(f"{d}/wc.sock").st_mode & 0o777) == "0o600"
    # The file mode is the first fence: nobody cannot even connect.
    p = ctl(d, addr, "status", as_nobody=True)
    assert p.returncode == 3, (p.stdout, p.stderr)
    # A careless chmod opens the file; the kernel's peer credentials still
    # say who is calling, and every call is refused, saying why.
    os.chmod(f"{d}/wc.sock", 0o666)
    for args in (("status",), ("abort",), ("update", "--version", "1"),
                 ("init", "--port", str(free_port()))):
        env = {"WEIGHTCAST_TOKEN": "t", "PATH": os.environ["PATH"]}
        p = ctl(d, addr, *args, as_nobody=True, env=env)
        assert p.returncode == 1, (args, p.stdout, p.stderr)
        assert "code 7" in p.stderr and "uid 65534" in p.stderr, (args, p.stderr)
    log = open(f"{d}/d.log").read()
    assert "refused a connection" in log and "uid 65534" in log, log
    # The daemon was not touched: still uninitialised, still serving root.
    assert daemon.poll() is None
    p = ctl(d, addr, "status", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["state"] == "uninitialized", p.stdout


def test_a_caller_registers_only_files_it_may_read(world):
    d, procs = world
    addr = f"unix:{d}/wc.sock"
    start_daemon(d, procs, "d", "--listen", addr, "--control-group", str(TEAM))
    wait_up(d, addr)
    st = os.stat(f"{d}/wc.sock")
    assert (oct(st.st_mode & 0o777), st.st_gid) == ("0o660", TEAM)
    team = dict(as_nobody=True, groups=(TEAM,))
    # A member of the control group is admitted...
    assert ctl(d, addr, "status", **team).returncode == 0
    # ... but nobody outside it.
    assert ctl(d, addr, "status", as_nobody=True).returncode == 3

    secret = data_file(f"{d}/root-only.bin", 0o600)
    p = ctl(d, addr, "register", "--descriptors", descriptor(d, "stolen", secret), **team)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "code 7" in p.stderr and "'stolen'" in p.stderr and secret in p.stderr, p.stderr
    assert "uid 65534" in p.stderr, p.stderr
    # Readable, but behind a directory nobody may enter.
    os.mkdir(f"{d}/private", 0o700)
    hidden = data_file(f"{d}/private/open.bin", 0o644)
    p = ctl(d, addr, "register", "--descriptors", descriptor(d, "hidden", hidden), **team)
    assert p.returncode == 1 and "code 7" in p.stderr, p.stderr
    # A safetensors checkpoint of root's: the same refusal.
    ckpt = f"{d}/private-ckpt"
    os.mkdir(ckpt, 0o700)
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    with open(f"{ckpt}/model.safetensors", "wb") as f:
        f.write(len(header).to_bytes(8, "little") + header + b"\0" * 16)
    p = ctl(d, addr, "register", "--checkpoint-dir", ckpt, **team)
    assert p.returncode == 1 and "code 7" in p.stderr, p.stderr
    assert registered(d, addr) == 0  # nothing of it kept

    # What nobody may read goes in: world-readable, group-readable through
    # its team, and its own file even at 0600.
    for name, path in (("open", data_file(f"{d}/open.bin", 0o644)),
                       ("team", data_file(f"{d}/team.bin", 0o640, group=TEAM)),
                       ("own", data_file(f"{d}/own.bin", 0o600, owner=NOBODY))):
        p = ctl(d, addr, "register", "--descriptors", descriptor(d, name, path), **team)
        assert p.returncode == 0, (name, p.stdout, p.stderr)
    assert registered(d, addr) == 3
    # Root, the daemon's own user, registers what it likes.
    p = ctl(d, addr, "register", "--descriptors", descriptor(d, "rootdoc", secret))
    assert p.returncode == 0, p.stderr
    assert registered(d, addr) == 4


def tls_pair(d):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", f"{d}/key.pem", "-out", f"{d}/cert.pem"],
                   check=True, capture_output=True, timeout=60)
    os.chmod(f"{d}/key.pem", 0o600)
    os.chmod(f"{d}/cert.pem", 0o644)
    return f"{d}/cert.pem", f"{d}/key.pem"


def test_tcp_control_needs_the_token_and_tls_is_verified(world):
    from weightcast.control import Sidecar
    from weightcast.errors import ControlError

    d, procs = world
    with open(f"{d}/ctl-token", "w") as f:
        f.write("ctl-s3cret\n")
    os.chmod(f"{d}/ctl-token", 0o600)
    cert, key = tls_pair(d)
    plain = f"127.0.0.1:{free_port()}"
    tls = f"127.0.0.1:{free_port()}"
    start_daemon(d, procs, "tcp", "--listen", plain, "--control-token-file", f"{d}/ctl-token")
    start_daemon(d, procs, "tls", "--listen", tls, "--control-token-file", f"{d}/ctl-token",
                 "--tls-cert", cert, "--tls-key", key)
    token_env = {"WEIGHTCAST_CONTROL_TOKEN": "ctl-s3cret", "PATH": os.environ["PATH"]}
    wait_up(d, plain, env=token_env)
    # Without the token, or with a wrong one, every call is refused (code 16).
    for env in ({"PATH": os.environ["PATH"]},
                {"WEIGHTCAST_CONTROL_TOKEN": "ctl-s3cre", "PATH": os.environ["PATH"]}):
        for args in (("status",), ("abort",)):
            p = ctl(d, plain, *args, env=env)
            assert p.returncode == 1 and "code 16" in p.stderr, (env, args, p.stderr)
            assert "control token" in p.stderr
    # Nobody holding the token file's path but not its contents gets nothing
    # either: the file is the daemon user's.
    p = ctl(d, plain, "status", as_nobody=True, extra=("--control-token-file", f"{d}/ctl-token"))
    assert p.returncode == 2 and "ctl-token" in p.stderr, p.stderr
    assert ctl(d, plain, "status", "--json", env=token_env).returncode == 0
    assert ctl(d, plain, "status", extra=("--control-token-file", f"{d}/ctl-token")).returncode == 0

    # TLS: verified against the CA; a plaintext client gets nowhere.
    assert ctl(d, tls, "status", env=token_env, extra=("--tls-ca", cert)).returncode == 0
    p = ctl(d, tls, "status", env=token_env)
    assert p.returncode == 3, p.stderr
    p = ctl(d, tls, "status", extra=("--tls-ca", cert))
    assert p.returncode == 1 and "code 16" in p.stderr, p.stderr
    # The Python client, the same way.
    assert Sidecar(tls, control_token="ctl-s3cret", tls_ca=cert).status().state == "uninitialized"
    with pytest.raises(ControlError) as e:
        Sidecar(plain, control_token="wrong").status()
    assert e.value.code.name == "UNAUTHENTICATED"


def test_a_group_needs_its_token(world, tmp_path):
    from weightcast.control import GroupConfig, Sidecar
    from weightcast.errors import ControlError

    d, procs = world
    addr = f"unix:{d}/wc.sock"
    start_daemon(d, procs, "d", "--listen", addr)
    wait_up(d, addr)
    p = ctl(d, addr, "init", "--port", str(free_port()))
    assert p.returncode == 2 and "group token is required" in p.stderr, p.stderr
    with pytest.raises(ControlError) as e:
        Sidecar(addr).init(GroupConfig(host="127.0.0.1", port=free_port(), num_senders=1,
                                       inference_world_size=1, token=""), sender_rank=0)
    assert e.value.code.name == "INVALID_ARGUMENT" and "token" in str(e.value)
    p = subprocess.run([os.path.join(default_bin_dir(), "weightcast-recv"), "--rendezvous",
                        "127.0.0.1:1", "--rank-offset", "1", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=30,
                       env={"PATH": os.environ["PATH"]})
    assert p.returncode == 2 and "group token is required" in p.stderr, p.stderr
