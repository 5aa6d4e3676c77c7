#!/usr/bin/env bash
# One task of weightcast-group.sbatch: a sender sidecar (initialized and
# left running for the orchestrator's Update calls) or a receiver.
set -euo pipefail
rank=${SLURM_PROCID:?run under srun}
# The group token travels in the environment, never on a command line.
export WEIGHTCAST_TOKEN="$WC_TOKEN"
if (( rank < WC_SENDERS )); then
  sock="unix:${TMPDIR:-/tmp}/weightcast-${SLURM_JOB_ID}-${rank}.sock"
  "$WC_BIN/weightcastd" --listen "$sock" &
  daemon=$!
  trap 'kill -TERM $daemon; wait $daemon' TERM INT
  for _ in $(seq 100); do "$WC_BIN/weightcastctl" --addr "$sock" status >/dev/null 2>&1 && break; sleep 0.1; done
  "$WC_BIN/weightcastctl" --addr "$sock" init --host "$WC_HOST" --port "$WC_PORT" \
    --sender-rank "$rank" --num-senders "$WC_SENDERS" \
    --inference-world-size "$WC_INFERENCE" \
    --data-host "$(hostname -i | awk '{print $1}')"
  echo "sender $rank ready on $sock"
  wait $daemon
else
  exec "$WC_BIN/weightcast-recv" --rendezvous "$WC_HOST:$WC_PORT" \
    --rank-offset "$rank" --out "$WC_OUT/rank$rank" \
    --bind-host "$(hostname -i | awk '{print $1}')"
fi
