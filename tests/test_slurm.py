"""The SLURM material run for real (issue 14): a one-node SLURM (slurmctld +
slurmd from Debian's slurm-wlm) takes deploy/slurm/weightcast-group.sbatch
with 2 senders and 2 receivers over gloo and FP8 on, every init option from
a weightcastctl config file; the test, as the orchestrator, finds the
sidecars in the job's group file, registers and updates through
`weightcastctl --group`, and checks what the receivers committed. A
receiver killed mid-job is restarted in place and takes the next version;
the job is not cancelled. scancel stops every task cleanly. Skips only when
SLURM cannot start here, saying why."""

import json
import os
import signal
import subprocess
import time

import pytest

from weightcast.shm import ShmTensorFile
from weightcast_testing.cluster import (default_bin_dir, free_port, read_checkpoint,
                                        write_version)
from weightcast_testing.fp8 import check_fp8_checkpoint
from weightcast_testing.modelgen import MoeModelSpec
from weightcast_testing.slurm import OneNodeSlurm, SlurmUnavailable


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SBATCH = os.path.join(REPO, "deploy", "slurm", "weightcast-group.sbatch")


@pytest.fixture
def slurm(tmp_path):
    s = OneNodeSlurm(str(tmp_path / "slurm"))
    os.makedirs(s.workdir)
    try:
        s.start()
    except SlurmUnavailable as e:
        pytest.skip(f"SLURM cannot start here: {e}")
    yield s
    s.stop()


def until(pred, timeout, what):
    deadline = time.time() + timeout
    while not pred():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def pids_of(pattern):
    p = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return [int(x) for x in p.stdout.split()]


def test_group_job_on_a_real_slurm(slurm, tmp_path):
    out, run, logs = tmp_path / "out", tmp_path / "run", tmp_path / "logs"
    ctl_conf = tmp_path / "ctl.toml"
    ctl_conf.write_text('[init]\nquantization = "fp8-block"\nsource-layout = "per-expert"\n'
                        f'bucket-bytes = {256 << 10}\ntimeout = 20\ntransport = "gloo"\n')
    recv_conf = tmp_path / "recv.toml"
    recv_conf.write_text('log-format = "json"\nkeep = 2\n')
    bins = default_bin_dir()
    env = {"WC_SENDERS": "2", "WC_BIN": bins, "WC_OUT": str(out), "WC_RUN": str(run),
           "WC_PORT": str(free_port()), "WC_CTL_CONFIG": str(ctl_conf),
           "WC_RECV_CONFIG": str(recv_conf), "WC_LOGS": str(logs), "WC_MAX_RESTARTS": "3"}
    job = slurm.sbatch(SBATCH, "--ntasks=4", "--oversubscribe", f"--chdir={tmp_path}",
                       env=env, cwd=str(tmp_path))
    try:
        group = run / "group.json"
        until(lambda: group.exists() or slurm.job_state(job) not in ("PENDING", "RUNNING"),
              90, "the job's group file")
        assert group.exists(), (slurm.job_state(job), [
            (p.name, p.read_text()[-2000:]) for p in logs.glob("*.log")])
        sidecars = json.load(open(group))["sidecars"]
        assert [s["address"] for s in sidecars] == [f"unix:{run}/sender-{r}.sock" for r in (0, 1)]

        # The orchestrator: each trainer rank's half of the model, registered
        # with its sidecar through the group file.
        model = MoeModelSpec.tiny()
        parts = model.split(2)
        shm = []
        for r, part in enumerate(parts):
            f = ShmTensorFile.create(str(tmp_path / f"trainer{r}.bin"), part)
            shm.append(f)
            f.write_descriptors(str(tmp_path / f"trainer{r}.json"), config=model.config())
            sidecars[r]["descriptors"] = str(tmp_path / f"trainer{r}.json")
        orch = tmp_path / "orchestrator.json"
        orch.write_text(json.dumps({"sidecars": sidecars}))

        def ctl(*args):
            p = subprocess.run([os.path.join(bins, "weightcastctl"), "--group", str(orch), *args],
                               capture_output=True, text=True, timeout=180)
            return p.returncode, p.stdout + p.stderr

        rc, text = ctl("register")
        assert rc == 0, text
        write_version(shm, 1)
        rc, text = ctl("update", "--version", "1")
        assert rc == 0, text
        for rank in (2, 3):
            got, config = read_checkpoint(f"{out}/rank{rank}/step_1")
            assert check_fp8_checkpoint(got, config, model, 1) > 0

        # A receiver crashes: its task restarts it in place, it rejoins and
        # takes version 2; the job keeps running.
        victims = pids_of(f"weightcast-recv.*--rank 3 ")
        assert len(victims) == 1, victims
        os.kill(victims[0], signal.SIGKILL)
        until(lambda: pids_of("weightcast-recv.*--rank 3 ") not in ([], victims), 30,
              "receiver 3 restarted")
        assert slurm.job_state(job) == "RUNNING"
        write_version(shm, 2)
        rc, text = ctl("update", "--version", "2")
        assert rc == 0, text
        for rank in (2, 3):
            got, config = read_checkpoint(f"{out}/rank{rank}/step_2")
            check_fp8_checkpoint(got, config, model, 2)
            assert open(out / f"rank{rank}" / "LATEST").read().strip() == "2"
        task3 = (logs / f"weightcast-{job}-task3.log").read_text()
        assert "restarting in place (1 of 3)" in task3, task3[-2000:]
        assert slurm.job_state(job) == "RUNNING"

        # Logs: one file per task, every line labelled with its task.
        for t in range(4):
            lines = (logs / f"weightcast-{job}-task{t}.log").read_text().splitlines()
            assert lines and all(l.startswith(f"{t}: ") for l in lines), (t, lines[:5])
        committed = [json.loads(l[3:]) for l in
                     (logs / f"weightcast-{job}-task2.log").read_text().splitlines()
                     if l[3:].startswith("{") and '"version_committed"' in l]
        assert [e["version"] for e in committed] == [1, 2]

        # scancel: every task stops (SIGTERM), none restarts.
        assert slurm.run("scancel", str(job)).returncode == 0
        until(lambda: slurm.job_state(job) not in ("RUNNING", "COMPLETING"), 60, "job end")
        for t in range(4):
            text = (logs / f"weightcast-{job}-task{t}.log").read_text()
            assert "stopped" in text.splitlines()[-1] or "stopped" in text, (t, text[-1000:])
        until(lambda: not pids_of(f"{run}/sender-") and not pids_of(f"--out {out}/rank"), 30,
              "every daemon gone")
    finally:
        slurm.run("scancel", str(job))
        for f in locals().get("shm", []):
            f.close()
