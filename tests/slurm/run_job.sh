#!/usr/bin/env bash
# Runs deploy/slurm/weightcast-group.sbatch on a real one-node SLURM (Debian's
# slurm-wlm, started here in a scratch folder, see docs) with 1 sender and 2
# receivers, then drives it as an orchestrator: registers a generated model,
# runs two updates, and checks both receivers' checkpoints byte for byte.
# By hand (needs root and slurm-wlm): tests/slurm/run_job.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
W=$REPO/out/slurm
rm -rf "$W"; mkdir -p "$W"/{state,spool,log}
HOST=$(hostname -s)
cat > "$W/slurm.conf" <<CONF
ClusterName=wc
SlurmctldHost=$HOST(127.0.0.1)
AuthType=auth/none
CredType=cred/none
SlurmUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
StateSaveLocation=$W/state
SlurmdSpoolDir=$W/spool
SlurmctldPidFile=$W/slurmctld.pid
SlurmdPidFile=$W/slurmd.pid
SlurmctldLogFile=$W/log/slurmctld.log
SlurmdLogFile=$W/log/slurmd.log
SlurmdParameters=config_overrides
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=8 RealMemory=4000
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
export SLURM_CONF=$W/slurm.conf
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
cleanup() {
  scancel --quiet "${JOB:-0}" 2>/dev/null || true
  kill "$(cat "$W/slurmd.pid" 2>/dev/null)" "$(cat "$W/slurmctld.pid" 2>/dev/null)" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 60); do sinfo -h -o %T 2>/dev/null | grep -q idle && break; sleep 0.5; done

export WC_SENDERS=1 WC_BIN=$REPO/bazel-bin/cmd WC_OUT=$W/recv WC_TOKEN=slurm-test
export WC_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("",0)); print(s.getsockname()[1])')
JOB=$(sbatch --parsable -N 1 -n 3 --oversubscribe --chdir "$W" deploy/slurm/weightcast-group.sbatch)
echo "job $JOB submitted"
SOCK="unix:/tmp/weightcast-$JOB-0.sock"
for _ in $(seq 120); do grep -qs "sender 0 ready" "$W"/weightcast-"$JOB"-*.log && break; sleep 0.5; done
grep -s "sender 0 ready" "$W"/weightcast-"$JOB"-*.log

python3 - "$SOCK" "$W" <<'PY'
import subprocess, sys, os, json, time
sys.path.insert(0, "python")
from weightcast_testing.modelgen import MoeModelSpec, values
from weightcast.shm import ShmTensorFile
import ml_dtypes  # noqa
from safetensors.numpy import load_file
sock, w = sys.argv[1], sys.argv[2]
ctl = ["bazel-bin/cmd/weightcastctl", "--addr", sock]
m = MoeModelSpec.tiny()
f = ShmTensorFile.create(f"{w}/trainer.bin", m.tensors())
f.write_descriptors(f"{w}/trainer.json", config=m.config())
subprocess.run(ctl + ["register", "--descriptors", f"{w}/trainer.json"], check=True)
for v in (1, 2):
    for name in f.names():
        s = f.slots[name]
        f.array(name)[...] = values(name, s.dtype, s.shape, v)
    f.flush()
    out = subprocess.run(ctl + ["update", "--version", str(v)], capture_output=True, text=True)
    print(out.stdout, end="")
    assert out.returncode == 0, out.stdout + out.stderr
    for rank in (1, 2):
        d = f"{w}/recv/rank{rank}/step_{v}"
        for _ in range(100):
            if os.path.isdir(d): break
            time.sleep(0.1)
        got = {}
        for shard in set(json.load(open(f"{d}/model.safetensors.index.json"))["weight_map"].values()):
            got.update(load_file(f"{d}/{shard}"))
        for name, dtype, shape in m.tensors():
            assert got[name].tobytes() == values(name, dtype, shape, v).tobytes(), (rank, name)
        print(f"rank {rank}: version {v} verified byte for byte in {d}")
print("SLURM job OK")
PY
