"""The systemd material, for real: systemd-analyze verifies the shipped
units (their ExecStart pointed at the built binaries, every other line as
shipped), and both binaries speak the readiness protocol Type=notify
expects (READY=1 once serving, STOPPING=1 on SIGTERM, then exit 0)."""

import os
import shutil
import signal
import socket
import subprocess

import pytest

from weightcast_testing.cluster import REPO, default_bin_dir

UNITS = os.path.join(REPO, "deploy", "systemd")

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="systemd-analyze is not installed")


def verify(*paths):
    return subprocess.run(["systemd-analyze", "verify", "--man=no", *paths],
                          capture_output=True, text=True, timeout=120)


def test_the_shipped_units_verify_clean(tmp_path):
    bins = default_bin_dir()
    for unit in ("weightcastd@.service", "weightcast-recv.service"):
        text = open(os.path.join(UNITS, unit)).read()
        assert "/usr/local/bin/" in text and "Type=notify" in text and "User=weightcast" in text
        assert "LoadCredential=token:" in text and "--token-file ${CREDENTIALS_DIRECTORY}" in text
        (tmp_path / unit).write_text(text.replace("/usr/local/bin/", bins + "/"))
    # A template is verified as an instance.
    shutil.copy(tmp_path / "weightcastd@.service", tmp_path / "weightcastd@0.service")
    p = verify(str(tmp_path / "weightcastd@0.service"), str(tmp_path / "weightcast-recv.service"))
    assert p.returncode == 0 and p.stdout + p.stderr == "", p.stdout + p.stderr
    # The check can fail: a misspelt key is reported.
    (tmp_path / "bad.service").write_text("[Service]\nTypo=notify\nExecStart=/bin/true\n")
    p = verify(str(tmp_path / "bad.service"))
    assert "Unknown key 'Typo'" in p.stdout + p.stderr


def notify_socket(tmp_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    s.bind(path)
    s.settimeout(20)
    return s, path


def messages_until(sock, word):
    seen = []
    while not any(word in m for m in seen):
        seen.append(sock.recv(4096).decode())
    return seen


def test_daemon_and_receiver_notify_readiness_and_stop_cleanly(tmp_path, make_cluster):
    sock, path = notify_socket(tmp_path)
    env = {**os.environ, "NOTIFY_SOCKET": path, "WEIGHTCAST_TOKEN": "t"}
    listen = f"unix:{tmp_path}/d.sock"
    d = subprocess.Popen([os.path.join(default_bin_dir(), "weightcastd"), "--listen", listen],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        seen = messages_until(sock, "READY=1")
        assert any(f"STATUS=listening on {listen}" in m for m in seen), seen
        # Ready means serving: a call succeeds at once.
        p = subprocess.run([os.path.join(default_bin_dir(), "weightcastctl"), "--addr", listen,
                            "status"], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        d.send_signal(signal.SIGTERM)
        messages_until(sock, "STOPPING=1")
        assert d.wait(timeout=15) == 0
    finally:
        if d.poll() is None:
            d.kill()
    # The receiver: ready once its rank is claimed and it waits for updates.
    c = make_cluster(num_senders=1, num_receivers=1)
    c.start_daemons()
    assert c.init(0).rc == 0
    env["WEIGHTCAST_TOKEN"] = c.token
    r = subprocess.Popen([os.path.join(default_bin_dir(), "weightcast-recv"), "--rendezvous",
                          f"127.0.0.1:{c.port}", "--rank", "1", "--out",
                          str(tmp_path / "out"), "--timeout", "5"],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        seen = messages_until(sock, "READY=1")
        assert any("STATUS=receiving as rank 1" in m for m in seen), seen
        r.send_signal(signal.SIGTERM)
        assert r.wait(timeout=15) == 0
    finally:
        if r.poll() is None:
            r.kill()
