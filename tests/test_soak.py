"""Seeded soak: a few hundred updates of a real group (2 senders, 2
receivers, gloo over loopback) with faults injected at random moments.

After every update each receiver's published version (LATEST) and its bytes
are checked against the trainer's values: a version the senders report
committed is on every receiver; one they report not committed is on none;
one committed but not published everywhere is on each receiver or the one
before. Every update ends within its deadline, the group heals by the next
update after a fault, and the processes that live throughout (sender 0 and
receiver 2) keep their memory and descriptors flat.

WEIGHTCAST_SOAK_SEED and WEIGHTCAST_SOAK_UPDATES override the defaults; the
seed is printed so a failure can be replayed.
"""

import os
import random
import signal
import threading
import time

import numpy as np

SEED = int(os.environ.get("WEIGHTCAST_SOAK_SEED", "20261203"))
UPDATES = int(os.environ.get("WEIGHTCAST_SOAK_UPDATES", "200"))
FAULT_RATE = 0.15
FAULTS = ("kill_receiver", "term_receiver", "crash_sender1", "term_sender1", "abort_sender0",
          "non_finite")
# A planned stop (SIGTERM, Abort) aborts the group: the update ends within
# about a second of it, whatever the timeout.
PLANNED_STOP_BOUND_S = 4.0


def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def latest(c, rank: int) -> int:
    return int(open(f"{c.receiver_out(rank)}/LATEST").read())


def outcome(results, version: int) -> str:
    """What the senders that answered say: committed, partial, or failed."""
    text = "".join(r.out for r in results)
    if all(r.rc == 0 for r in results):
        return "committed"
    if f"version {version} was committed but not published everywhere" in text:
        return "partial"
    if f"committed version {version}:" in text:
        return "committed"  # a sender that died or was aborted did not say
    return "failed"


def dump_stacks(c) -> None:
    """Every live process's threads (gdb), into the cluster's directory."""
    import shutil
    import subprocess

    if shutil.which("gdb") is None:
        return
    procs = {f"sender{s}": p for s, p in enumerate(c.daemons)}
    procs.update({f"rank{r}": p for r, p in c.receivers.items()})
    for who, p in procs.items():
        if p.poll() is None:
            out = subprocess.run(["gdb", "-p", str(p.pid), "-batch", "-ex", "thread apply all bt"],
                                 capture_output=True, text=True, timeout=60).stdout
            with open(f"{c.workdir}/stacks-{who}.txt", "w") as f:
                f.write(out)
    print(f"stacks of the live processes in {c.workdir}/stacks-*.txt")


def test_seeded_soak_keeps_every_receiver_whole_and_resources_flat(make_cluster):
    # Small buckets: an update takes long enough for faults to land inside it.
    c = make_cluster(timeout_s=5, bucket_bytes=8 << 10)
    try:
        soak(c)
    except AssertionError:
        dump_stacks(c)
        raise


def soak(c):
    print(f"soak seed {SEED}, {UPDATES} updates")
    rng = random.Random(SEED)
    c.start()
    c.register()
    held = {2: 0, 3: 0}
    version = 0
    baseline = None
    healing = False  # the previous update had a fault
    counts = {f: 0 for f in FAULTS}
    slowest = {f: 0.0 for f in FAULTS}
    clean = []     # seconds of updates without a fault
    missed = 0     # faulted updates the group did not commit
    for i in range(UPDATES):
        version += 1
        c.write_version(version)
        fault = rng.choice(FAULTS) if i >= 3 and rng.random() < FAULT_RATE else None
        # Planned stops come once the update reached every sender (a sender
        # stopped before is a missing peer: the update waits its timeout).
        delay = rng.uniform(0.1 if fault in ("term_sender1", "abort_sender0") else 0, 0.3)
        if fault == "non_finite":
            f = c.shm[rng.randrange(2)]
            name = rng.choice(list(f.names()))
            flat = f.array(name).reshape(-1)
            if flat.dtype == np.uint16:
                flat[rng.randrange(flat.size)] = 0x7F80  # bf16 +inf
            else:
                flat[rng.randrange(flat.size)] = np.inf
            f.flush()
            del flat  # a view into the mapping: closing it needs none left
        results = []
        start = time.monotonic()
        runner = threading.Thread(target=lambda: results.extend(c.update(version)))
        runner.start()
        time.sleep(delay)
        if fault in ("kill_receiver", "term_receiver"):
            c.receivers[3].send_signal(signal.SIGKILL if fault == "kill_receiver"
                                       else signal.SIGTERM)
        elif fault in ("crash_sender1", "term_sender1"):
            c.daemons[1].send_signal(signal.SIGKILL if fault == "crash_sender1"
                                     else signal.SIGTERM)
        elif fault == "abort_sender0":
            c.ctl(0, "abort")
        runner.join(timeout=4 * c.timeout_s + 30)
        assert not runner.is_alive(), f"update {version} ({fault}) did not end"
        took = time.monotonic() - start
        assert took < 4 * c.timeout_s + 10, f"update {version} ({fault}) took {took:.1f} s"
        if fault is not None:
            counts[fault] += 1
            slowest[fault] = max(slowest[fault], took)
        if fault in ("term_receiver", "term_sender1", "abort_sender0"):
            assert took < delay + PLANNED_STOP_BOUND_S, \
                f"update {version}: {fault} after {delay:.2f} s, yet it took {took:.1f} s: " + \
                " | ".join((r.out + r.err).strip().replace("\n", " / ") for r in results)

        # Recovery, as an operator's supervisor would do it.
        if fault in ("kill_receiver", "term_receiver"):
            c.receivers[3].wait(timeout=20)
            if fault == "term_receiver":
                assert c.receivers[3].returncode == 0, "a planned stop exits 0"
        if fault in ("crash_sender1", "term_sender1"):
            c.daemons[1].wait(timeout=20)
            c.crash_and_restart_sender(1)
            assert c.init(1).rc == 0
            c.register_sender(1)
        if fault == "abort_sender0":
            assert c.init(0).rc == 0

        got = outcome(results, version)
        if fault is None:
            clean.append(took)
        elif got != "committed":
            missed += 1
        detail = f"update {version} (fault {fault} after {delay:.2f} s): " + " | ".join(
            (r.out + r.err).strip().replace("\n", " / ") for r in results)
        if fault is None and not healing:
            assert got == "committed", detail
        # What each receiver holds, checked before a restarted one starts.
        for rank in (2, 3):
            have = latest(c, rank)
            if got == "committed":
                assert have == version, f"rank {rank} holds {have}; {detail}"
            elif got == "partial":
                assert have in (version, held[rank]), f"rank {rank} holds {have}; {detail}"
            else:
                assert have == held[rank], f"rank {rank} holds {have}; {detail}"
            held[rank] = have
            c.verify(rank, have)
        if fault in ("kill_receiver", "term_receiver"):
            c.start_receiver(3)
            time.sleep(1)
        healing = fault is not None
        if i == 20:
            baseline = (rss_kib(c.daemons[0].pid), fds(c.daemons[0].pid),
                        rss_kib(c.receivers[2].pid), fds(c.receivers[2].pid))
    print(f"faults injected: {counts}; {missed} of them ended an update; clean update "
          f"median {sorted(clean)[len(clean) // 2]:.2f} s")
    print("slowest update per fault (s):", {f: round(t, 2) for f, t in slowest.items()})
    assert sum(counts.values()) >= UPDATES * FAULT_RATE / 2, counts
    # One clean update at the end reaches everybody.
    version += 1
    c.write_version(version)
    results = c.update(version)
    if outcome(results, version) != "committed":  # the last fault may still heal
        version += 1
        c.write_version(version)
        results = c.update(version)
    assert outcome(results, version) == "committed", [r.out + r.err for r in results]
    for rank in (2, 3):
        c.verify(rank, version)
    end = (rss_kib(c.daemons[0].pid), fds(c.daemons[0].pid),
           rss_kib(c.receivers[2].pid), fds(c.receivers[2].pid))
    print(f"sender 0 RSS {baseline[0]} -> {end[0]} KiB, fds {baseline[1]} -> {end[1]}; "
          f"receiver 2 RSS {baseline[2]} -> {end[2]} KiB, fds {baseline[3]} -> {end[3]}")
    for who, b, e in (("sender 0", baseline[0], end[0]), ("receiver 2", baseline[2], end[2])):
        assert e - b < 16 * 1024, f"{who} RSS grew {b} -> {e} KiB"
    for who, b, e in (("sender 0", baseline[1], end[1]), ("receiver 2", baseline[3], end[3])):
        assert e - b <= 8, f"{who} descriptors grew {b} -> {e}"
