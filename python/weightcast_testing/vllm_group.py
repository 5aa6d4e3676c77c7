"""A weightcast group around real vLLM engines, for the tests, the demo and
the benchmark: sender daemons (weightcastd) driven by the Python
orchestrator, trainer sidecars registering a torch model, and vLLM engines
in processes of their own (weightcast_testing.vllm_host)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from weightcast.control import GroupConfig
from weightcast.orchestrator import Orchestrator
from weightcast.trainer import TrainerSidecar
from weightcast_testing.cluster import REPO, default_bin_dir, free_port, spawn_weightcastd



class HostError(RuntimeError):
    def __init__(self, reply: dict):
        self.reply = reply
        super().__init__(f"{reply.get('type')}: {reply.get('error')}")


class VllmHost:
    """One vllm_host process. ``call`` sends a request and returns the reply
    (raising HostError on {"ok": false}); ``submit`` does it on a thread."""

    def __init__(self, model: str, log_path: str, *extra: str, env: dict | None = None,
                 start_timeout_s: float = 300, module: str = "weightcast_testing.vllm_host"):
        self.log = open(log_path, "a")
        full_env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "python"))
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "--model", model, *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
            env=full_env)
        self._lock = threading.Lock()
        self.started = self._read(start_timeout_s)

    def _read(self, timeout_s: float) -> dict:
        result: list = []
        t = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()),
                             daemon=True)
        t.start()
        t.join(timeout_s)
        if not result or not result[0]:
            raise RuntimeError(f"vllm_host gave no reply within {timeout_s} s "
                               f"(exit {self.proc.poll()}); see {self.log.name}")
        reply = json.loads(result[0])
        if not reply.get("ok"):
            raise HostError(reply)
        return reply

    def call(self, op: str, timeout_s: float = 300, **kw) -> dict:
        with self._lock:
            self.proc.stdin.write(json.dumps(dict(kw, op=op)) + "\n")
            self.proc.stdin.flush()
            return self._read(timeout_s)

    def submit(self, op: str, **kw):
        box: dict = {}

        def run():
            try:
                box["reply"] = self.call(op, **kw)
            except BaseException as e:  # noqa: BLE001 - handed to the joiner
                box["error"] = e

        t = threading.Thread(target=run, daemon=True)
        t.start()

        def join(timeout_s: float = 300) -> dict:
            t.join(timeout_s)
            if "error" in box:
                raise box["error"]
            if "reply" not in box:
                raise TimeoutError(f"{op}: no reply within {timeout_s} s")
            return box["reply"]
        return join

    def generate(self, max_tokens: int = 8) -> list:
        return self.call("generate", max_tokens=max_tokens)["outputs"]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call("quit", timeout_s=30)
                self.proc.wait(timeout=30)
            except Exception:  # noqa: BLE001 - then by force
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait()
        self.log.close()


@dataclass
class TrainingGroup:
    """Sender daemons for one torch model, split by contiguous names."""

    workdir: str
    model: object
    num_senders: int = 2
    inference_world_size: int = 1
    timeout_s: float = 20
    token: str = "wc-test"
    format: dict = field(default_factory=dict)   # GroupConfig format fields
    bucket_bytes: int = 256 << 10

    def __post_init__(self):
        from weightcast_testing.tiny_models import split_names  # noqa: PLC0415

        os.makedirs(self.workdir, exist_ok=True)
        self.port = free_port()
        self.receivers: list[subprocess.Popen] = []
        self.daemons = [spawn_weightcastd(self.workdir, s) for s in range(self.num_senders)]
        self.addresses = [f"unix:{self.workdir}/wc{s}.sock" for s in range(self.num_senders)]
        self.group = Orchestrator(self.addresses)
        deadline = time.time() + 20
        while True:
            try:
                self.group.status()
                break
            except Exception:  # noqa: BLE001 - not up yet
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
        self.config = GroupConfig(host="127.0.0.1", port=self.port, num_senders=self.num_senders,
                                  inference_world_size=self.inference_world_size,
                                  token=self.token, timeout_s=self.timeout_s,
                                  bucket_bytes=self.bucket_bytes, **self.format)
        self.group.init(self.config)
        self.sidecars = [TrainerSidecar(a, shm_dir=self.workdir) for a in self.addresses]
        for sc, names in zip(self.sidecars, split_names(self.model, self.num_senders)):
            sc.register(self.model, names=names)

    def start_recv(self, rank: int, *extra: str) -> subprocess.Popen:
        """A weightcast-recv process as inference rank ``rank`` (a checkpoint
        receiver beside the engines; with test hooks, a faulty one)."""
        log = open(f"{self.workdir}/recv{rank}.log", "a")
        p = subprocess.Popen(
            [os.path.join(default_bin_dir(), "weightcast-recv"), "--rendezvous", self.rendezvous,
             "--rank-offset", str(rank), "--out",
             f"{self.workdir}/recv{rank}", "--timeout", str(self.timeout_s), *extra],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "WEIGHTCAST_TOKEN": self.token})
        self.receivers.append(p)
        return p

    @property
    def rendezvous(self) -> str:
        return f"127.0.0.1:{self.port}"

    def init_info(self, first_rank: int | None = None, **kw) -> dict:
        return dict(rendezvous=self.rendezvous, token=self.token, timeout_s=self.timeout_s,
                    first_rank=self.num_senders if first_rank is None else first_rank, **kw)

    def publish(self, version: int, *hosts_ops, deadline_s: float = 120):
        """Syncs the sidecars, then runs the group update and the engines'
        receives together; returns (GroupUpdate or the GroupError raised,
        the hosts' replies or errors)."""
        for sc in self.sidecars:
            sc.sync()
        joins = [host.submit(op, version=version, **kw) for host, op, kw in hosts_ops]
        try:
            result = self.group.update(version, deadline_s=deadline_s)
        except Exception as e:  # noqa: BLE001 - returned to the test
            result = e
        replies = []
        for j in joins:
            try:
                replies.append(j())
            except Exception as e:  # noqa: BLE001 - returned to the test
                replies.append(e)
        return result, replies

    def stop(self) -> None:
        for sc in self.sidecars:
            sc.close()
        self.group.close()
        for d in self.receivers + self.daemons:
            if d.poll() is None:
                d.send_signal(signal.SIGTERM)
        for d in self.receivers + self.daemons:
            try:
                d.wait(timeout=10)
            except subprocess.TimeoutExpired:
                d.kill()
                d.wait()
