"""A weightcast group on one machine: sender daemons, receiver processes and
the trainer's shared-memory files, driven through weightcastctl exactly as an
orchestrator would. Used by the demo (scripts/demo) and the end-to-end tests.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from safetensors.numpy import load_file

from weightcast_testing.modelgen import MoeModelSpec, values
from weightcast.native import checkout_program_dir
from weightcast.shm import ShmTensorFile

# safetensors' numpy backend looks F8_E4M3 up as numpy.float8_e4m3fn; numpy
# has no such type, ml_dtypes does (importing it also registers bfloat16).
# (Optional: the GPU machine's Python may lack it, and its tests read
# checkpoints through torch instead.)
try:
    import ml_dtypes

    if not hasattr(np, "float8_e4m3fn"):
        np.float8_e4m3fn = ml_dtypes.float8_e4m3fn
except ImportError:
    pass

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def default_bin_dir() -> str:
    return os.environ.get("WEIGHTCAST_BIN", checkout_program_dir())


def spawn_weightcastd(workdir: str, s: int, env: dict | None = None,
                      bin_dir: str | None = None, extra: list[str] = ()) -> subprocess.Popen:
    """Sender daemon ``s`` listening on unix:WORKDIR/wc<s>.sock (the daemon
    replaces a stale socket itself), logging to WORKDIR/weightcastd<s>.log."""
    path = f"{workdir}/wc{s}.sock"
    log = open(f"{workdir}/weightcastd{s}.log", "w")
    return subprocess.Popen([os.path.join(bin_dir or default_bin_dir(), "weightcastd"),
                             "--listen", f"unix:{path}", *extra], stdout=log, stderr=log,
                            env=env)


def free_port() -> int:
    """A free port below the ephemeral range. A rendezvous port inside that
    range can be taken, while its daemon restarts, by a client's own
    reconnect (Linux TCP self-connect), and the restarted daemon then cannot
    listen on it; real deployments use a fixed port such as 29501."""
    try:
        low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except OSError:
        low = 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, max(20001, low))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def read_checkpoint(path: str) -> tuple[dict, dict]:
    """(tensors, config) of the checkpoint directory ``path``, read with the
    safetensors package through its index."""
    index = json.load(open(f"{path}/model.safetensors.index.json"))
    got: dict[str, np.ndarray] = {}
    for shard in sorted(set(index["weight_map"].values())):
        got.update(load_file(f"{path}/{shard}"))
    return got, json.load(open(f"{path}/config.json"))


def write_version(files: list[ShmTensorFile], version: int) -> None:
    """The trainers' optimizer step: version ``version``'s values in place."""
    for f in files:
        for name in f.names():
            slot = f.slots[name]
            f.array(name)[...] = values(name, slot.dtype, slot.shape, version)
        f.flush()


@dataclass
class Result:
    rc: int
    out: str
    err: str


@dataclass
class Cluster:
    workdir: str
    num_senders: int = 2
    num_receivers: int = 2
    model: MoeModelSpec = field(default_factory=MoeModelSpec)
    bucket_bytes: int = 4 << 20
    timeout_s: float = 30
    token: str = "demo-token"
    bin_dir: str = field(default_factory=default_bin_dir)
    recv_args: dict = field(default_factory=dict)  # rank -> extra args
    init_args: dict = field(default_factory=dict)  # extra weightcastctl init flags
    daemon_args: dict = field(default_factory=dict)  # sender -> extra weightcastd args
    # NCCL on one GPU: every process its own NCCL_HOSTID, or NCCL refuses two
    # ranks on one device ("Duplicate GPU"); sockets over loopback.
    nccl_one_gpu: bool = False

    def __post_init__(self):
        os.makedirs(self.workdir, exist_ok=True)
        self.port = free_port()
        self.daemons: list[subprocess.Popen] = []
        self.receivers: dict[int, subprocess.Popen] = {}
        self.shm: list[ShmTensorFile] = []
        self.parts = self.model.split(self.num_senders)

    # ---- processes -------------------------------------------------------
    def sock(self, s: int) -> str:
        return f"unix:{self.workdir}/wc{s}.sock"

    def env(self, who: str) -> dict:
        env = dict(os.environ)
        if self.nccl_one_gpu:
            env.update(NCCL_HOSTID=f"weightcast-{who}", NCCL_SOCKET_IFNAME="lo",
                       NCCL_IB_DISABLE="1")
        return env

    def bin(self, name: str) -> str:
        return os.path.join(self.bin_dir, name)

    def ctl(self, s: int, *args: str, timeout: float = 120) -> Result:
        p = subprocess.run([self.bin("weightcastctl"), "--addr", self.sock(s), *args],
                           capture_output=True, text=True, timeout=timeout)
        return Result(p.returncode, p.stdout, p.stderr)

    def start_daemons(self) -> None:
        for s in range(self.num_senders):
            self.daemons.append(spawn_weightcastd(self.workdir, s, self.env(f"sender{s}"),
                                                  self.bin_dir, self.daemon_args.get(s, [])))
        for s in range(self.num_senders):
            deadline = time.time() + 20
            while self.ctl(s, "status").rc != 0:
                if time.time() > deadline:
                    raise RuntimeError(f"weightcastd {s} did not come up")
                time.sleep(0.1)

    def receiver_out(self, rank: int) -> str:
        return f"{self.workdir}/recv{rank}"

    def start_receiver(self, rank: int, extra: list[str] | None = None) -> subprocess.Popen:
        # The token as operators pass it: in the environment, not on argv.
        args = [self.bin("weightcast-recv"), "--rendezvous", f"127.0.0.1:{self.port}",
                "--rank-offset", str(rank), "--out",
                self.receiver_out(rank), "--timeout", str(self.timeout_s),
                "--shard-bytes", str(8 << 20)]
        args += extra if extra is not None else self.recv_args.get(rank, [])
        log = open(f"{self.workdir}/recv{rank}.log", "a")
        env = self.env(f"rank{rank}")
        env["WEIGHTCAST_TOKEN"] = self.token
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.receivers[rank] = p
        return p

    def token_file(self) -> str:
        path = f"{self.workdir}/token"
        if not os.path.exists(path):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.token + "\n")
        return path

    def init(self, s: int, **overrides) -> Result:
        opts = {"--host": "127.0.0.1", "--port": str(self.port), "--sender-rank": str(s),
                "--num-senders": str(self.num_senders),
                "--inference-world-size": str(self.num_receivers),
                "--timeout": str(self.timeout_s), "--bucket-bytes": str(self.bucket_bytes),
                "--token-file": self.token_file()}
        opts.update(self.init_args)
        opts.update(overrides)
        # A value of True is a flag without a value (--allow-non-finite).
        args = [x for k, v in opts.items() for x in ([k] if v is True else [k, str(v)])]
        return self.ctl(s, "init", *args)

    def start(self) -> None:
        self.start_daemons()
        r = self.init(0)
        assert r.rc == 0, r.err
        for s in range(1, self.num_senders):
            r = self.init(s)
            assert r.rc == 0, r.err
        for j in range(self.num_receivers):
            self.start_receiver(self.num_senders + j)

    def crash_and_restart_sender(self, s: int) -> None:
        """Kills sender daemon ``s`` (SIGKILL, as a crash) and starts it again
        as a supervisor would: a fresh daemon, neither initialised nor
        registered. Returns once it answers."""
        self.daemons[s].send_signal(signal.SIGKILL)
        self.daemons[s].wait()
        self.daemons[s] = spawn_weightcastd(self.workdir, s, self.env(f"sender{s}"), self.bin_dir)
        deadline = time.time() + 20
        while self.ctl(s, "status").rc != 0:
            if time.time() > deadline:
                raise RuntimeError(f"weightcastd {s} did not come up")
            time.sleep(0.1)

    def crash_and_restart_senders(self) -> None:
        """Kills every sender daemon (SIGKILL, as a crash), starts them again
        as a supervisor would, re-initializes and re-registers (a new daemon
        knows nothing of the old one's registrations). Receivers keep running."""
        for d in self.daemons:
            d.send_signal(signal.SIGKILL)
            d.wait()
        self.daemons.clear()
        self.start_daemons()
        for s in range(self.num_senders):
            r = self.init(s)
            assert r.rc == 0, r.err
        for f in self.shm:
            f.close()
        self.shm.clear()
        self.register()

    # ---- the trainer's side ----------------------------------------------
    def register(self) -> None:
        for s, part in enumerate(self.parts):
            f = ShmTensorFile.create(f"{self.workdir}/trainer{s}.bin", part)
            self.shm.append(f)
            self.register_sender(s)

    def register_sender(self, s: int) -> None:
        """Registers trainer s's existing shared-memory file with sender s
        (again, after that daemon restarted)."""
        desc = f"{self.workdir}/trainer{s}.json"
        # Every trainer rank knows its model's config (it names the family).
        self.shm[s].write_descriptors(desc, config=self.model.config())
        r = self.ctl(s, "register", "--descriptors", desc)
        assert r.rc == 0, r.err

    def write_version(self, version: int) -> None:
        """The trainer's optimizer step: new values in place."""
        write_version(self.shm, version)

    def update(self, version: int) -> list[Result]:
        with ThreadPoolExecutor(self.num_senders) as pool:
            return list(pool.map(lambda s: self.ctl(s, "update", "--version", str(version)),
                                 range(self.num_senders)))

    def total_bytes(self) -> int:
        return sum(int(np.prod(shape)) * 2 for _, _, shape in self.model.tensors())

    # ---- checks ----------------------------------------------------------
    def wait_for_step(self, rank: int, version: int, timeout: float = 30) -> str:
        path = f"{self.receiver_out(rank)}/step_{version}"
        deadline = time.time() + timeout
        while not os.path.isdir(path):
            if time.time() > deadline:
                raise AssertionError(f"rank {rank}: {path} did not appear")
            time.sleep(0.05)
        return path

    def load(self, rank: int, version: int) -> tuple[dict, dict]:
        """(tensors, config) of rank's checkpoint of `version`, read with the
        safetensors package through the index."""
        return read_checkpoint(self.wait_for_step(rank, version))

    def verify(self, rank: int, version: int) -> str:
        """Checks rank's checkpoint of `version` byte for byte against the
        generator, with the safetensors package as the reader."""
        path = self.wait_for_step(rank, version)
        got, config = read_checkpoint(path)
        expected = {name: (dtype, shape) for name, dtype, shape in self.model.tensors()}
        assert set(got) == set(expected), set(got) ^ set(expected)
        for name, (dtype, shape) in expected.items():
            want = values(name, dtype, shape, version)
            have = got[name]
            assert tuple(have.shape) == tuple(shape), name
            assert have.tobytes() == want.tobytes(), f"{name} differs at version {version}"
        assert config == self.model.config()
        latest = open(f"{self.receiver_out(rank)}/LATEST").read().strip()
        assert int(latest) >= version
        return path

    def stop(self) -> None:
        for p in list(self.receivers.values()) + self.daemons:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in list(self.receivers.values()) + self.daemons:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in self.shm:
            f.close()
        self.shm.clear()
