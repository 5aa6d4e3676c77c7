"""A real one-node SLURM (Debian's slurm-wlm: slurmctld + slurmd) in a
scratch folder, as ../shared/reference/SLURM.md found works on these
machines: no munge (auth/none), root as SlurmUser, the node claiming more
CPUs than it has so a few tasks fit. ``OneNodeSlurm.start()`` raises
``SlurmUnavailable`` saying why when it cannot run here."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time

from weightcast_testing.cluster import free_port


class SlurmUnavailable(RuntimeError):
    pass


class OneNodeSlurm:
    def __init__(self, workdir: str, cpus: int = 8):
        self.workdir = workdir
        self.cpus = cpus
        self.conf = os.path.join(workdir, "slurm.conf")
        self.host = socket.gethostname().split(".")[0]
        self.env = dict(os.environ, SLURM_CONF=self.conf)

    def _write_conf(self) -> None:
        d = self.workdir
        for sub in ("state", "spool", "log"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        lines = {
            "ClusterName": "weightcast",
            "SlurmctldHost": f"{self.host}(127.0.0.1)",
            "AuthType": "auth/none", "CredType": "cred/none", "SlurmUser": "root",
            "ProctrackType": "proctrack/linuxproc", "TaskPlugin": "task/none",
            "SelectType": "select/cons_tres", "SelectTypeParameters": "CR_Core",
            "MpiDefault": "none", "ReturnToService": "2",
            "SlurmdParameters": "config_overrides",
            "StateSaveLocation": f"{d}/state", "SlurmdSpoolDir": f"{d}/spool",
            "SlurmctldPidFile": f"{d}/slurmctld.pid", "SlurmdPidFile": f"{d}/slurmd.pid",
            "SlurmctldLogFile": f"{d}/log/slurmctld.log", "SlurmdLogFile": f"{d}/log/slurmd.log",
            "SlurmctldPort": str(free_port()), "SlurmdPort": str(free_port()),
            "JobCompType": "jobcomp/none", "AccountingStorageType": "accounting_storage/none",
        }
        with open(self.conf, "w") as f:
            for k, v in lines.items():
                f.write(f"{k}={v}\n")
            f.write(f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory=4000 "
                    "State=UNKNOWN\n")
            f.write("PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP "
                    "OverSubscribe=FORCE:4\n")

    def _log_tail(self) -> str:
        out = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = os.path.join(self.workdir, "log", name)
            if os.path.exists(path):
                out.append(f"{name}: " + " | ".join(open(path).read().splitlines()[-5:]))
        return "; ".join(out)

    def start(self, timeout: float = 60) -> None:
        for tool in ("slurmctld", "slurmd", "sbatch", "sinfo", "scontrol", "squeue"):
            if shutil.which(tool) is None:
                raise SlurmUnavailable(f"{tool} is not installed (apt-get install slurm-wlm)")
        if os.geteuid() != 0:
            raise SlurmUnavailable("a one-node SLURM without munge runs as root; this is uid "
                                   f"{os.geteuid()}")
        self._write_conf()
        for daemon in ("slurmctld", "slurmd"):
            p = subprocess.run([daemon, "-f", self.conf], env=self.env, capture_output=True,
                               text=True, timeout=60)
            if p.returncode != 0:
                self.stop()
                raise SlurmUnavailable(f"{daemon} did not start (exit {p.returncode}): "
                                       f"{p.stderr.strip()} {self._log_tail()}")
        deadline = time.time() + timeout
        while True:
            p = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env,
                               capture_output=True, text=True, timeout=30)
            if p.returncode == 0 and p.stdout.strip() in ("idle", "mixed", "allocated"):
                return
            if time.time() > deadline:
                state = p.stdout.strip() or p.stderr.strip()
                self.stop()
                raise SlurmUnavailable(f"the node did not become idle in {timeout:.0f} s "
                                       f"({state}); {self._log_tail()}")
            time.sleep(0.5)

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def sbatch(self, script: str, *args: str, env: dict | None = None, cwd: str | None = None
               ) -> int:
        p = subprocess.run(["sbatch", "--parsable", *args, script], env={**self.env, **(env or {})},
                           capture_output=True, text=True, timeout=60, cwd=cwd)
        if p.returncode != 0:
            raise RuntimeError(f"sbatch: {p.stderr.strip()}")
        return int(p.stdout.strip().split(";")[0])

    def job_state(self, job: int) -> str:
        p = self.run("scontrol", "show", "job", str(job))
        m = re.search(r"JobState=(\S+)", p.stdout)
        return m.group(1) if m else "GONE"

    def stop(self) -> None:
        subprocess.run(["scancel", "--full", "--quiet", "-u", "root"], env=self.env,
                       capture_output=True, timeout=30)
        for name in ("slurmd.pid", "slurmctld.pid"):
            path = os.path.join(self.workdir, name)
            try:
                pid = int(open(path).read().strip())
            except (OSError, ValueError):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
