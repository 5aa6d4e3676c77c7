"""Operating weightcast (issue 14): Prometheus metrics on every sidecar and
receiver, scraped during and after real updates and read with
prometheus_client's own parser; health that follows the group (HTTP and
gRPC); one structured log line per update phase, in JSON on request;
receivers keeping the newest N versions; --version and a help free of
test hooks."""

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from weightcast_testing.cluster import default_bin_dir, free_port


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


def healthz(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def grpc_health(sock):
    import grpc
    from grpc_health.v1 import health_pb2 as health
    from grpc_health.v1 import health_pb2_grpc as health_grpc

    with grpc.insecure_channel(sock) as ch:
        r = health_grpc.HealthStub(ch).Check(health.HealthCheckRequest(service=""), timeout=5)
    return health.HealthCheckResponse.ServingStatus.Name(r.status)


def until(pred, timeout=20, what="condition"):
    deadline = time.time() + timeout
    while True:
        try:
            if pred():
                return
        except (OSError, urllib.error.URLError):  # not listening yet
            pass
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_metrics_health_and_logs_follow_real_updates(make_cluster):
    sender_ports = [free_port(), free_port()]
    recv_ports = {2: free_port(), 3: free_port()}
    c = make_cluster(timeout_s=6)
    c.daemon_args = {s: ["--metrics-listen", f"127.0.0.1:{p}", "--log-format", "json"]
                     for s, p in enumerate(sender_ports)}
    c.recv_args = {r: ["--metrics-listen", f"127.0.0.1:{p}", "--log-format", "json", "--keep", "2"]
                   for r, p in recv_ports.items()}
    c.start_daemons()
    # Uninitialised: not to be sent work.
    code, body = healthz(sender_ports[0])
    assert code == 503 and "not initialized" in body["reason"], body
    assert grpc_health(c.sock(0)) == "NOT_SERVING"
    for s in range(2):
        assert c.init(s).rc == 0
    until(lambda: grpc_health(c.sock(0)) == "SERVING", what="gRPC SERVING after init")
    assert healthz(sender_ports[1]) == (200, {"status": "SERVING"})
    c.register()

    # Version 1 with receiver 3 not there yet: the update waits for it, and
    # a scrape in the middle shows it running.
    c.start_receiver(2)
    until(lambda: healthz(recv_ports[2])[0] == 200, what="receiver 2 healthy")
    c.write_version(1)
    results = {}
    t = threading.Thread(target=lambda: results.update(v1=c.update(1)))
    t.start()
    until(lambda: value(scrape(sender_ports[0]), "weightcast_sender_state", state="updating") == 1,
          what="sender 0 updating")
    c.start_receiver(3)
    t.join(timeout=60)
    assert [r.rc for r in results["v1"]] == [0, 0], [r.err for r in results["v1"]]
    for v in (2, 3):
        c.write_version(v)
        assert [r.rc for r in c.update(v)] == [0, 0]

    total = c.total_bytes()
    for s, port in enumerate(sender_ports):
        m = scrape(port)
        assert value(m, "weightcast_updates_total", outcome="committed") == 3
        assert value(m, "weightcast_update_duration_seconds_count", outcome="committed") == 3
        assert value(m, "weightcast_source_released_seconds_count") == 3
        assert value(m, "weightcast_last_committed_version") == 3
        assert value(m, "weightcast_sender_state", state="idle") == 1
        assert value(m, "weightcast_update_throughput_bytes_per_second") > 0
        for rank in (2, 3):
            assert value(m, "weightcast_receiver_published_version", rank=str(rank)) == 3
        # The bytes each sender reports committed add up to the model.
        assert value(m, "weightcast_update_bytes_total") > 0
        # A gloo group holds no GPU memory; the gauges are there for NCCL
        # ones (test_gpu_e2e.py checks their values on a GPU).
        for g in ("weightcast_gpu_memory_bytes", "weightcast_gpu_memory_peak_bytes",
                  "weightcast_pinned_memory_peak_bytes"):
            assert value(m, g) == 0, g
    for rank, port in recv_ports.items():
        m = scrape(port)
        assert value(m, "weightcast_versions_total", rank=str(rank), outcome="committed") == 3
        assert value(m, "weightcast_published_version", rank=str(rank)) == 3
        assert value(m, "weightcast_received_bytes_total", rank=str(rank)) == 3 * total
        assert value(m, "weightcast_rank_up", rank=str(rank)) == 1
        assert value(m, "weightcast_gpu_memory_peak_bytes") == 0
        assert healthz(port) == (200, {"status": "SERVING"})
        # --keep 2: the two newest versions, LATEST the newest.
        out = c.receiver_out(rank)
        assert sorted(d for d in os.listdir(out) if d.startswith("step_")) == ["step_2", "step_3"]
        assert c.load(rank, 3)[0]

    # One JSON line per phase, with rank, version, bytes and seconds.
    events = [json.loads(line) for line in open(f"{c.workdir}/weightcastd0.log")
              if line.startswith("{")]
    by = {}
    for e in events:
        by.setdefault(e.get("event"), []).append(e)
    assert [e["version"] for e in by["update_committed"]] == [1, 2, 3]
    assert all(e["rank"] == 0 and e["bytes"] > 0 and e["seconds"] > 0 and "generation" in e
               for e in by["update_committed"])
    assert [e["version"] for e in by["update_planned"]] == [1, 2, 3]
    assert [e["version"] for e in by["source_released"]] == [1, 2, 3]
    assert by["generation_change"][0]["generation"] >= 1
    recv_events = [json.loads(line) for line in open(f"{c.workdir}/recv2.log")
                   if line.startswith("{")]
    committed = [e for e in recv_events if e.get("event") == "version_committed"]
    assert [e["version"] for e in committed] == [1, 2, 3] and committed[0]["rank"] == 2

    # A receiver dies: the next update fails, sender 0's health says the
    # group is broken and the failure is counted by code; once the receiver
    # is back a committed update makes it serving again.
    c.receivers[3].kill()
    c.receivers[3].wait()
    c.write_version(4)
    assert all(r.rc != 0 for r in c.update(4))
    code, body = healthz(sender_ports[0])
    assert code == 503 and "group broken" in body["reason"], body
    until(lambda: grpc_health(c.sock(0)) == "NOT_SERVING", what="gRPC NOT_SERVING")
    m = scrape(sender_ports[0])
    assert value(m, "weightcast_updates_total", outcome="failed") == 1
    assert sum(v for (n, _), v in m.items() if n == "weightcast_update_failures_total") == 1
    failed = [json.loads(line) for line in open(f"{c.workdir}/weightcastd0.log")
              if line.startswith("{") and ('"peer_lost"' in line or '"update_failed"' in line)]
    assert failed and failed[-1]["version"] == 4 and failed[-1]["code"], failed
    c.start_receiver(3)
    c.write_version(5)
    until(lambda: all(r.rc == 0 for r in c.update(5)), timeout=60, what="version 5 committed")
    until(lambda: grpc_health(c.sock(0)) == "SERVING", what="SERVING again")
    assert healthz(sender_ports[0])[0] == 200


def test_version_flags_help_and_log_options():
    bins = default_bin_dir()
    for name in ("weightcastd", "weightcastctl", "weightcast-recv", "weightcast-convert"):
        p = subprocess.run([os.path.join(bins, name), "--version"], capture_output=True,
                           text=True, timeout=30)
        assert p.returncode == 0 and p.stdout.strip() == f"{name} 0.1.0", (name, p.stdout, p.stderr)
    p = subprocess.run([os.path.join(bins, "weightcast-recv"), "--help"], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0 and "--test-" not in p.stdout and "--keep" in p.stdout, p.stdout
    assert "--rank" in p.stdout
    for args in (["--log-format", "xml"], ["--log-level", "bogus"]):
        p = subprocess.run([os.path.join(bins, "weightcast-recv"), "--rendezvous", "127.0.0.1:1",
                            "--rank", "1", "--out", "/tmp/x", *args], capture_output=True,
                           text=True, timeout=30, env={"WEIGHTCAST_TOKEN": "t"})
        assert p.returncode == 2 and args[1] in p.stderr, (args, p.stderr)


def test_ctl_group_file_drives_every_sidecar(make_cluster):
    """weightcastctl --group: init (each sidecar its own rank), register (each
    its own descriptors), update, status and abort on every sidecar at once,
    with one labelled report line per sender and the worst exit code."""
    from weightcast.shm import ShmTensorFile

    c = make_cluster(timeout_s=8)
    c.start_daemons()
    sidecars = []
    for s, part in enumerate(c.parts):
        f = ShmTensorFile.create(f"{c.workdir}/trainer{s}.bin", part)
        c.shm.append(f)
        desc = f"{c.workdir}/trainer{s}.json"
        f.write_descriptors(desc, config=c.model.config())
        sidecars.append({"address": c.sock(s), "descriptors": desc})
    group = f"{c.workdir}/group.json"
    json.dump({"sidecars": sidecars}, open(group, "w"))

    def ctl(*args, timeout=120):
        p = subprocess.run([c.bin("weightcastctl"), "--group", group, *args],
                           capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr

    rc, out, err = ctl("init", "--host", "127.0.0.1", "--port", str(c.port),
                       "--inference-world-size", "2", "--timeout", "8",
                       "--bucket-bytes", str(c.bucket_bytes), "--token-file", c.token_file())
    assert rc == 0, (out, err)
    assert out.splitlines()[-1] == "group: init on 2 of 2 sidecars", out
    for s in range(2):
        st = json.loads(c.ctl(s, "status", "--json").out)
        assert st["state"] == "idle" and st["rank"] == s and st["world_size"] == 4, st
    # Each sidecar registered its own trainer's tensors.
    rc, out, err = ctl("register")
    assert rc == 0, (out, err)
    for s in range(2):
        st = json.loads(c.ctl(s, "status", "--json").out)
        assert st["registered_tensors"] == len(c.parts[s]), st
    for rank in (2, 3):
        c.start_receiver(rank)
    for v in (1, 2):
        c.write_version(v)
        rc, out, err = ctl("update", "--version", str(v))
        assert rc == 0, (out, err)
        assert out.splitlines()[-1] == "group: update on 2 of 2 sidecars", out
        assert any(line.startswith(f"sender 0 ({c.sock(0)}): ") for line in out.splitlines())
        assert any(line.startswith(f"sender 1 ({c.sock(1)}): ") for line in out.splitlines())
        for rank in (2, 3):
            c.verify(rank, v)
    rc, out, _ = ctl("status", "--json")
    assert rc == 0, out
    for s in range(2):
        prefix = f"sender {s} ({c.sock(s)}): "
        line = next(x for x in out.splitlines() if x.startswith(prefix))
        st = json.loads(line[len(prefix):])
        assert st["rank"] == s and st["last_committed_version"] == 2, st
        assert sorted((r["rank"], r["version"]) for r in st["receivers"]) == [(2, 2), (3, 2)]

    # One sidecar gone: the others still answer, the report names it and the
    # exit code is the worst (3: unreachable).
    c.daemons[1].kill()
    c.daemons[1].wait()
    rc, out, _ = ctl("status", timeout=60)
    assert rc == 3, out
    assert out.splitlines()[-1] == "group: status on 1 of 2 sidecars", out
    assert any(line.startswith(f"sender 1 ({c.sock(1)}): weightcastctl status: ") and
               "(code 14)" in line for line in out.splitlines()), out
    assert any(line.startswith(f"sender 0 ({c.sock(0)}): ") and "idle" in line
               for line in out.splitlines()), out
    rc, out, _ = ctl("abort", timeout=60)
    assert rc == 3 and out.splitlines()[-1] == "group: abort on 1 of 2 sidecars", out
    assert json.loads(c.ctl(0, "status", "--json").out)["state"] == "uninitialized"

    # A rank given by hand contradicts the file: refused before anything runs.
    rc, _, err = ctl("init", "--sender-rank", "1")
    assert rc == 2 and "place in" in err
    bad = f"{c.workdir}/bad.json"
    open(bad, "w").write('{"sidecars": ["unix:/a", "unix:/a"]}')
    p = subprocess.run([c.bin("weightcastctl"), "--group", bad, "status"], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 2 and "appears twice" in p.stderr


def test_every_binary_takes_its_flags_from_a_config_file(make_cluster):
    """--config FILE (TOML, flags' long names) on every binary: the file sets
    what the command line does not, the command line wins, an unknown key is
    refused naming it."""
    c = make_cluster(timeout_s=8)
    metrics = free_port()
    d = f"{c.workdir}/weightcastd.toml"
    # listen is overridden by the command line (the cluster's own socket).
    open(d, "w").write(f'listen = "unix:{c.workdir}/not-this.sock"\n'
                       f'metrics-listen = "127.0.0.1:{metrics}"\nlog-format = "json"\n')
    c.daemon_args = {0: ["--config", d]}
    c.start_daemons()
    assert not os.path.exists(f"{c.workdir}/not-this.sock")
    until(lambda: healthz(metrics)[0] == 503, what="metrics from the config file")
    # weightcastctl: the init subcommand's options in an [init] table.
    ctl_conf = f"{c.workdir}/ctl.toml"
    open(ctl_conf, "w").write(
        f'[init]\nhost = "127.0.0.1"\nport = {c.port}\ninference-world-size = 2\n'
        f'num-senders = 2\ntimeout = 8\nbucket-bytes = {c.bucket_bytes}\n'
        f'token-file = "{c.token_file()}"\n')
    for s in range(2):
        r = c.ctl(s, "--config", ctl_conf, "init", "--sender-rank", str(s))
        assert r.rc == 0, r.err
        st = json.loads(c.ctl(s, "status", "--json").out)
        assert st["rank"] == s and st["world_size"] == 4, st
    # Another subcommand with the same file: the [init] table does not run init.
    r = c.ctl(0, "--config", ctl_conf, "status", "--json")
    assert r.rc == 0 and json.loads(r.out)["state"] == "idle", (r.out, r.err)
    recv_conf = f"{c.workdir}/recv.toml"
    open(recv_conf, "w").write('keep = 1\nlog-format = "json"\ntimeout = 999\n')
    c.recv_args = {r: ["--config", recv_conf] for r in (2, 3)}
    for rank in (2, 3):
        c.start_receiver(rank)   # its --timeout on the command line beats the file's
    c.register()
    for v in (1, 2):
        c.write_version(v)
        assert [r.rc for r in c.update(v)] == [0, 0]
    for rank in (2, 3):
        c.verify(rank, 2)
        out = c.receiver_out(rank)
        assert sorted(x for x in os.listdir(out) if x.startswith("step_")) == ["step_2"]
        assert any(line.startswith("{") for line in open(f"{c.workdir}/recv{rank}.log"))
    assert any(line.startswith("{") for line in open(f"{c.workdir}/weightcastd0.log"))

    bins = default_bin_dir()
    bad = f"{c.workdir}/bad.toml"
    open(bad, "w").write('keep = 1\nkeeep = 2\n')
    for name in ("weightcastd", "weightcast-recv", "weightcastctl", "weightcast-convert"):
        p = subprocess.run([os.path.join(bins, name), "--help"],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 0 and "--config" in p.stdout, (name, p.stdout)
    p = subprocess.run([os.path.join(bins, "weightcast-recv"), "--config", bad],
                       capture_output=True, text=True, timeout=30, env={"WEIGHTCAST_TOKEN": "t"})
    assert p.returncode == 2 and "keeep" in p.stderr, p.stderr
    p = subprocess.run([os.path.join(bins, "weightcast-recv"), "--config", f"{c.workdir}/none"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "none" in p.stderr, p.stderr


def test_sigterm_mid_update_aborts_it_and_exits_0(make_cluster):
    """A graceful stop: SIGTERM of a sidecar whose update is in flight (a
    receiver is stalled, so it cannot finish) aborts the update, the peer
    sender fails within about a second instead of its timeout, the daemon
    exits 0 within its 5 s shutdown deadline, and every receiver keeps the
    previous version."""
    import signal

    c = make_cluster(timeout_s=20)
    c.start()
    c.register()
    c.write_version(1)
    assert [r.rc for r in c.update(1)] == [0, 0]
    c.receivers[3].send_signal(signal.SIGSTOP)
    try:
        c.write_version(2)
        results = []
        t = threading.Thread(target=lambda: results.extend(c.update(2)))
        t.start()
        until(lambda: json.loads(c.ctl(1, "status", "--json").out)["state"] == "updating",
              what="sender 1 updating")
        time.sleep(0.5)
        stopped = time.monotonic()
        c.daemons[1].send_signal(signal.SIGTERM)
        assert c.daemons[1].wait(timeout=10) == 0
        assert time.monotonic() - stopped < 6
        t.join(timeout=30)
        assert not t.is_alive()
        took = time.monotonic() - stopped
        assert took < 5, f"sender 0 needed {took:.1f} s to fail (timeout 20 s)"
        assert results[0].rc == 1, results[0]
        log = open(f"{c.workdir}/weightcastd1.log").read()
        assert "signal 15: shutting down" in log
    finally:
        c.receivers[3].send_signal(signal.SIGCONT)
    for rank in (2, 3):
        assert open(f"{c.receiver_out(rank)}/LATEST").read().strip() == "1"
        assert not os.path.exists(f"{c.receiver_out(rank)}/step_2")
