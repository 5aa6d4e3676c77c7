#!/usr/bin/env bash
# One task of weightcast-group.sbatch, by SLURM_PROCID: a sender sidecar
# (started, initialised, its address written to WC_RUN/sidecars/RANK.json,
# then left to the orchestrator's register and update calls) or a receiver.
# Either runs in a loop: when it fails (a crash, a lost group it cannot
# rejoin) it is started again in place, up to WC_MAX_RESTARTS times; a
# restarted sender needs registering again (deploy/README.md). SIGTERM
# (scancel, the job's end) stops it for good: the task exits 0.
set -uo pipefail
rank=${SLURM_PROCID:?run under srun}
# The group token travels in a file or the environment, never a command line.
WEIGHTCAST_TOKEN=$(cat "$WC_TOKEN_FILE") || exit 2
export WEIGHTCAST_TOKEN
node=${SLURMD_NODENAME:-$(hostname -s)}
addr=$(scontrol show node "$node" 2>/dev/null | sed -n 's/.*NodeAddr=\([^ ]*\).*/\1/p')
addr=${addr:-$(hostname -i | awk '{print $1}')}
say() { echo "$(date -u +%FT%T) weightcast task $rank: $*"; }

stopping=0
child=0
trap 'stopping=1; (( child )) && kill -TERM $child 2>/dev/null' TERM INT
# The status of the background $child; a trapped signal interrupts a wait,
# so wait again until it has really exited.
wait_child() {
  local rc=0
  wait $child || rc=$?
  while kill -0 $child 2>/dev/null; do rc=0; wait $child || rc=$?; done
  child=0
  return $rc
}
# Runs "$@" in the background (so the trap can stop it), returns its status.
run() {
  "$@" &
  child=$!
  wait_child
}

sender() {
  local sock="$WC_RUN/sender-$rank.sock"
  "$WC_BIN/weightcastd" --listen "unix:$sock" ${WC_DAEMON_CONFIG:+--config "$WC_DAEMON_CONFIG"} &
  child=$!
  local up=0 ready=0
  for _ in $(seq 200); do
    if "$WC_BIN/weightcastctl" --addr "unix:$sock" status >/dev/null 2>&1; then up=1; break; fi
    kill -0 $child 2>/dev/null || break
    sleep 0.1
  done
  if (( up )) && "$WC_BIN/weightcastctl" --addr "unix:$sock" \
      ${WC_CTL_CONFIG:+--config "$WC_CTL_CONFIG"} init --host "$WC_HOST" --port "$WC_PORT" \
      --sender-rank "$rank" --num-senders "$WC_SENDERS" --inference-world-size "$WC_INFERENCE" \
      --data-host "$addr" --token-file "$WC_TOKEN_FILE"; then
    printf '{"address": "unix:%s", "node": "%s"}\n' "$sock" "$node" > "$WC_RUN/sidecars/$rank.tmp"
    mv "$WC_RUN/sidecars/$rank.tmp" "$WC_RUN/sidecars/$rank.json"
    say "sender ready on unix:$sock"
    ready=1
  else
    say "sender did not come up"
    kill -TERM $child 2>/dev/null
  fi
  local rc=0
  wait_child || rc=$?
  (( ready )) || return 1
  return $rc
}

receiver() {
  run "$WC_BIN/weightcast-recv" ${WC_RECV_CONFIG:+--config "$WC_RECV_CONFIG"} \
    --rendezvous "$WC_HOST:$WC_PORT" --rank "$rank" --out "$WC_OUT/rank$rank" --bind-host "$addr"
}

role=receiver
(( rank < WC_SENDERS )) && role=sender
restarts=0
while :; do
  rc=0
  $role || rc=$?
  if (( stopping )); then say "stopped"; exit 0; fi
  if (( rc == 0 )); then say "$role finished"; exit 0; fi
  if (( restarts >= WC_MAX_RESTARTS )); then
    say "$role failed (exit $rc) after $restarts restarts: giving up"
    exit "$rc"
  fi
  restarts=$((restarts + 1))
  say "$role exited with $rc: restarting in place ($restarts of $WC_MAX_RESTARTS)"
  sleep 1
done
