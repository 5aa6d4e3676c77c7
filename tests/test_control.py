"""The control service's validation, through weightcastctl: every bad input
gets a clear error naming what is wrong, and the daemon stays usable."""

import json
import os
import shutil

from weightcast.shm import ShmTensorFile
from weightcast_testing.cluster import REPO


def test_update_before_init_is_a_failed_precondition(make_cluster):
    c = make_cluster()
    c.start_daemons()
    r = c.ctl(0, "update", "--version", "1")
    assert r.rc == 1
    assert "before InitBroadcaster" in r.err
    assert "code 9" in r.err  # FAILED_PRECONDITION


def test_init_is_idempotent_and_refuses_conflicts_until_abort(make_cluster):
    c = make_cluster(num_senders=1, num_receivers=1)
    c.start_daemons()
    assert c.init(0).rc == 0
    assert c.init(0).rc == 0  # same config: no-op
    r = c.init(0, **{"--bucket-bytes": 1 << 20})
    assert r.rc == 1 and "different configuration" in r.err
    assert c.ctl(0, "abort").rc == 0
    assert c.init(0, **{"--bucket-bytes": 1 << 20}).rc == 0


def test_init_validates_fields(make_cluster):
    c = make_cluster(num_senders=1, num_receivers=1)
    c.start_daemons()
    cases = {
        "--bucket-bytes": (100, "bucket_bytes"),
        "--transport": ("carrier-pigeon", "transport"),
        "--sender-rank": (3, "sender_rank"),
        "--inference-world-size": (0, "inference_world_size"),
        "--rank-offset": (5, "rank_offset"),
        "--timeout": ("nan", "timeout_s"),  # NaN would make every wait endless
    }
    for flag, (value, field) in cases.items():
        r = c.init(0, **{flag: value})
        assert r.rc == 1, flag
        assert field in r.err and "code 3" in r.err, r.err  # INVALID_ARGUMENT
    assert c.init(0).rc == 0


def write_desc(path, tensors):
    with open(path, "w") as f:
        json.dump({"tensors": tensors}, f)


def test_register_rejects_bad_descriptors_naming_the_tensor(make_cluster, tmp_path):
    c = make_cluster(num_senders=1, num_receivers=1)
    c.start_daemons()
    f = ShmTensorFile.create(str(tmp_path / "t.bin"), [("a", "BF16", (4, 5))])
    ok = {"name": "a", "dtype": "BF16", "shape": [4, 5], "shm": {"path": f.path, "offset": 0}}
    bad_cases = [
        (dict(ok, dtype="BF17"), "unknown dtype"),
        (dict(ok, name=""), "empty"),
        (dict(ok, shape=[4, 500]), "'a'"),                                # past the end
        (dict(ok, shm={"path": f.path, "offset": 1 << 20}), "'a'"),        # offset out of range
        (dict(ok, shm={"path": str(tmp_path / "missing.bin"), "offset": 0}), "missing.bin"),
        (dict(ok, shape=[4, -5]), "negative"),
        (dict(ok, name="__metadata__"), "reserved by the safetensors format"),
    ]
    desc = str(tmp_path / "d.json")
    for tensor, needle in bad_cases:
        write_desc(desc, [tensor])
        r = c.ctl(0, "register", "--descriptors", desc)
        assert r.rc == 1, tensor
        assert needle in r.err, (needle, r.err)
    write_desc(desc, [ok, ok])
    r = c.ctl(0, "register", "--descriptors", desc)
    assert r.rc == 1 and "appears twice" in r.err
    # A malformed file is a usage error of the CLI (exit 2), naming the entry.
    with open(desc, "w") as fh:
        fh.write('{"tensors": [{"name": "x"}]}')
    r = c.ctl(0, "register", "--descriptors", desc)
    assert r.rc == 2 and "tensors[0]" in r.err
    write_desc(desc, [dict(ok, shape=[4, 2.5])])  # not truncated to 2
    r = c.ctl(0, "register", "--descriptors", desc)
    assert r.rc == 2 and "tensors[0]" in r.err and "must be integers" in r.err, r.err
    # Nothing bad was kept; the good one registers.
    write_desc(desc, [ok])
    r = c.ctl(0, "register", "--descriptors", desc)
    assert r.rc == 0 and "registered: 1 tensors" in r.out
    f.close()


def test_second_update_while_one_runs_is_refused(make_cluster):
    import subprocess
    import time

    # Sender 0 of a group whose receiver never shows up: its update waits for
    # the group until the timeout, long enough to try a second one.
    c = make_cluster(num_senders=1, num_receivers=1, timeout_s=4)
    c.start_daemons()
    assert c.init(0).rc == 0
    c.parts = c.model.split(1)
    c.register()
    first = subprocess.Popen([c.bin("weightcastctl"), "--addr", c.sock(0), "update",
                              "--version", "1"], stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    r = c.ctl(0, "update", "--version", "2")
    assert r.rc == 1 and "still being broadcast" in r.err
    out, _ = first.communicate(timeout=30)
    assert first.returncode == 1 and "failed version 1" in out
    st = json.loads(c.ctl(0, "status", "--json").out)
    assert st["state"] == "idle" and st["updates_failed"] == 1


def test_a_deeply_nested_config_is_refused_and_the_daemon_stays_usable(make_cluster, tmp_path):
    # 20,000 levels used to crash weightcastd at the next FP8 update.
    c = make_cluster(num_senders=1, num_receivers=1,
                     init_args={"--quantization": "fp8-block"})
    c.start()
    deep = '{"model_type": "qwen3_moe", "x": ' + "[" * 20000 + "]" * 20000 + "}"
    ckpt = tmp_path / "ckpt"
    shutil.copytree(os.path.join(REPO, "tests", "golden", "models", "llama", "state_dict"), ckpt)
    (ckpt / "config.json").write_text(deep)
    r = c.ctl(0, "register", "--checkpoint-dir", str(ckpt))
    assert r.rc == 1 and f"{ckpt}/config.json: nested 20001 levels deep" in r.err, r.err
    c.register()
    c.write_version(1)
    assert c.update(1)[0].rc == 0
    tensors, _ = c.load(1, 1)
    assert tensors


def test_a_negative_version_is_a_usage_error_and_nothing_is_sent(make_cluster):
    # -1 used to wrap to 2^64-1, commit, and leave every later version stale.
    c = make_cluster(num_senders=1, num_receivers=1)
    c.start()
    c.register()
    c.write_version(1)
    for bad in ("-1", "0", "1.5", "18446744073709551615x"):
        r = c.ctl(0, "update", "--version", bad)
        assert r.rc == 2 and "not a positive integer" in r.err, (bad, r.err)
    r = c.ctl(0, "update", "--version", str(1 << 63))  # above 2^63-1: the daemon refuses
    assert r.rc == 1 and "exceeds the largest version" in r.err, r.err
    assert c.update(1)[0].rc == 0
    tensors, _ = c.load(1, 1)
    assert set(tensors) == {name for name, _, _ in c.model.tensors()}


def test_unreachable_daemon_exit_code(tmp_path):
    import subprocess

    from weightcast_testing.cluster import default_bin_dir
    import os

    p = subprocess.run([os.path.join(default_bin_dir(), "weightcastctl"), "--addr",
                        f"unix:{tmp_path}/nobody.sock", "--rpc-timeout", "2", "status"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 3


def test_daemon_listens_only_on_loopback_unless_asked(tmp_path):
    import os
    import subprocess

    from weightcast_testing.cluster import default_bin_dir

    d = os.path.join(default_bin_dir(), "weightcastd")
    # TCP at all needs a control token; off loopback also --allow-remote and TLS.
    p = subprocess.run([d, "--listen", "127.0.0.1:0"], capture_output=True, text=True,
                       timeout=30, env={k: v for k, v in os.environ.items()
                                        if k != "WEIGHTCAST_CONTROL_TOKEN"})
    assert p.returncode == 2 and "control token" in (p.stdout + p.stderr), p.stdout + p.stderr
    env = {**os.environ, "WEIGHTCAST_CONTROL_TOKEN": "t0ken"}
    p = subprocess.run([d, "--listen", "0.0.0.0:0"], capture_output=True, text=True, timeout=30,
                       env=env)
    assert p.returncode == 2 and "--allow-remote" in (p.stdout + p.stderr)
    p = subprocess.run([d, "--listen", "0.0.0.0:0", "--allow-remote"], capture_output=True,
                       text=True, timeout=30, env=env)
    assert p.returncode == 2 and "needs TLS" in (p.stdout + p.stderr), p.stdout + p.stderr


def test_an_address_in_use_is_refused_and_its_owner_keeps_it(make_cluster, tmp_path):
    # gRPC used to share a TCP port (SO_REUSEPORT, calls split between two
    # daemons), replace a live daemon's unix socket (orphaning it), and let
    # a second group's rendezvous share sender 0's port.
    import signal
    import subprocess

    from weightcast_testing.cluster import default_bin_dir, free_port

    d = os.path.join(default_bin_dir(), "weightcastd")
    tcp_env = {**os.environ, "WEIGHTCAST_CONTROL_TOKEN": "t0ken"}
    c = make_cluster(num_senders=1, num_receivers=1)
    c.start()
    for listen in (c.sock(0), None):
        if listen is None:  # TCP: a first daemon on a port, then a second
            port = free_port()
            listen = f"127.0.0.1:{port}"
            first = subprocess.Popen([d, "--listen", listen], stdout=subprocess.PIPE, text=True,
                                     env=tcp_env)
            assert "listening on" in first.stdout.readline()
        p = subprocess.run([d, "--listen", listen], capture_output=True, text=True, timeout=30,
                           env=tcp_env)
        log = p.stdout + p.stderr  # spdlog writes to stdout
        assert p.returncode == 2, (listen, log)
        assert "another process is listening" in log or "cannot listen" in log, log
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=10)
    # The first daemon still owns its socket and its group.
    assert c.ctl(0, "status").rc == 0
    # A second group whose sender 0 asks for the first group's rendezvous port.
    other = make_cluster(num_senders=1, num_receivers=1)
    other.port = c.port
    other.start_daemons()
    r = other.init(0)
    assert r.rc == 1 and "cannot listen" in r.err, r.err
    c.register()
    c.write_version(1)
    assert c.update(1)[0].rc == 0
    assert c.load(1, 1)[0]
    # A socket nobody listens on any more (its daemon was killed) is replaced.
    c.daemons[0].send_signal(signal.SIGKILL)
    c.daemons[0].wait()
    assert os.path.exists(c.sock(0)[5:])
    p = subprocess.Popen([d, "--listen", c.sock(0)], stdout=subprocess.PIPE, text=True)
    assert "listening on" in p.stdout.readline()
    assert c.ctl(0, "status").rc == 0
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=10)


def test_health_service_serves_only_once_initialized(make_cluster):
    # Uninitialised, a daemon is not to be sent work; tests/test_operations.py
    # covers a broken group.
    import grpc
    import time
    from grpc_health.v1 import health_pb2 as health
    from grpc_health.v1 import health_pb2_grpc as health_grpc

    def check():
        with grpc.insecure_channel(c.sock(0)) as ch:
            return health_grpc.HealthStub(ch).Check(health.HealthCheckRequest(service=""),
                                                    timeout=5).status

    c = make_cluster(num_senders=1, num_receivers=1)
    c.start_daemons()
    assert check() == health.HealthCheckResponse.NOT_SERVING
    assert c.init(0).rc == 0
    deadline = time.time() + 10
    while check() != health.HealthCheckResponse.SERVING:
        assert time.time() < deadline
        time.sleep(0.05)
    assert c.ctl(0, "abort").rc == 0
    deadline = time.time() + 10
    while check() != health.HealthCheckResponse.NOT_SERVING:
        assert time.time() < deadline
        time.sleep(0.05)


def test_daemon_applies_a_text_proto_init_config(tmp_path):
    import json
    import os
    import subprocess
    import time

    from weightcast_testing.cluster import default_bin_dir, free_port

    # The shipped example, pointed at loopback.
    text = open(os.path.join(os.path.dirname(__file__), "..", "deploy", "config",
                             "init-rank0.textproto")).read()
    text = text.replace('"10.0.0.1"', '"127.0.0.1"').replace("29501", str(free_port()))
    cfg = tmp_path / "init.textproto"
    cfg.write_text(text)
    sock = f"unix:{tmp_path}/d.sock"
    d = subprocess.Popen([os.path.join(default_bin_dir(), "weightcastd"), "--listen", sock,
                          "--init-config", str(cfg)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True,
                         env={**os.environ, "WEIGHTCAST_TOKEN": "group-token"})
    try:
        ctl = os.path.join(default_bin_dir(), "weightcastctl")
        for _ in range(100):
            p = subprocess.run([ctl, "--addr", sock, "status", "--json"], capture_output=True,
                               text=True)
            if p.returncode == 0 or d.poll() is not None:
                break
            time.sleep(0.1)
        assert p.returncode == 0, (p.stdout, p.stderr, d.poll(),
                                   d.stdout.read() if d.poll() is not None else "running")
        st = json.loads(p.stdout)
        assert st["state"] == "idle" and st["world_size"] == 24 and st["rank"] == 0
    finally:
        d.terminate()
        d.wait(timeout=10)
    bad = tmp_path / "bad.textproto"
    bad.write_text("sender_rank: oops")
    p = subprocess.run([os.path.join(default_bin_dir(), "weightcastd"), "--listen",
                        f"unix:{tmp_path}/e.sock", "--init-config", str(bad)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "InitBroadcasterRequest" in (p.stdout + p.stderr)


def test_cuda_ipc_descriptors_from_the_trainer_helper(make_cluster, tmp_path):
    """The trainer helper's document (proto3 JSON, base64 handles) goes
    through weightcastctl; the daemon validates it by name, and an update
    over gloo refuses GPU memory before anything is announced."""
    from weightcast.cuda_ipc import descriptors_document

    c = make_cluster(num_senders=1, num_receivers=1)
    c.start_daemons()
    assert c.init(0).rc == 0

    def register(handle: bytes, offset: int, allocation: int):
        doc = descriptors_document([{
            "name": "model.layers.0.mlp.gate.weight", "dtype": "BF16", "shape": [4, 8],
            "cuda_ipc": {"ipc_handle": handle, "offset": offset, "device": 0,
                         "allocation_bytes": allocation}}])
        path = tmp_path / "ipc.json"
        path.write_text(json.dumps(doc))
        return c.ctl(0, "register", "--descriptors", str(path))

    r = register(b"\x01" * 66, 0, 4096)  # torch's own 66-byte framing, not a raw handle
    assert r.rc == 1 and "'model.layers.0.mlp.gate.weight'" in r.err and "64 bytes, got 66" in r.err
    r = register(b"\x01" * 64, 4090, 4096)
    assert r.rc == 1 and "outside its CUDA allocation of 4096 bytes" in r.err
    r = register(b"\x01" * 64, 64, 4096)
    assert r.rc == 0, r.err
    status = json.loads(c.ctl(0, "status", "--json").out)
    assert status["registered_tensors"] == 1
    r = c.ctl(0, "update", "--version", "1")
    assert r.rc == 1 and "is in GPU memory" in (r.out + r.err) and "nccl" in (r.out + r.err)


def test_register_takes_a_deepseek_scale_tensor_count_in_one_request(make_cluster, tmp_path):
    # 100k descriptors are ~12 MB of RegisterTensors: past gRPC's default
    # 4 MiB limit on what a server receives (issue 15).
    c = make_cluster(num_senders=1, num_receivers=1)
    c.start_daemons()
    n = 100_000
    f = ShmTensorFile.create(str(tmp_path / "many.bin"),
                             [(f"model.layers.{i // 768}.mlp.experts.{i % 768}.up_proj.weight",
                               "BF16", (2, 4)) for i in range(n)])
    desc = str(tmp_path / "many.json")
    f.write_descriptors(desc)
    assert os.path.getsize(desc) > 4 << 20
    r = c.ctl(0, "register", "--descriptors", desc)
    assert r.rc == 0, r.err
    assert f"registered: {n} tensors" in r.out
    f.close()
