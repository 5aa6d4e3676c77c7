"""Multi-process end-to-end tests: real daemons, real receivers, gloo over
loopback, driven through weightcastctl as an orchestrator would."""

import json
import time
from concurrent.futures import ThreadPoolExecutor
import os


def status(cluster, s):
    r = cluster.ctl(s, "status", "--json")
    assert r.rc == 0, r.err
    return json.loads(r.out)


def test_updates_arrive_byte_for_byte_on_every_receiver(make_cluster):
    c = make_cluster()
    c.start()
    c.register()
    for version in (1, 2, 3):
        c.write_version(version)
        results = c.update(version)
        for s, r in enumerate(results):
            assert r.rc == 0, f"sender {s}: {r.out}{r.err}"
            assert f"committed version {version}" in r.out
            assert "source released" in r.out
        for rank in (2, 3):
            c.verify(rank, version)
    # Small buckets: many buckets and tensors split across them.
    planned = [line for line in results[0].out.splitlines() if line.startswith("planned")]
    assert planned and int(planned[0].split(" in ")[1].split()[0]) > 4
    for s in (0, 1):
        st = status(c, s)
        assert st["last_committed_version"] == 3
        assert st["updates_committed"] == 3
        assert st["state"] == "idle"
    # Earlier versions stay as they were.
    c.verify(2, 1)


def test_version_must_increase_and_daemon_stays_usable(make_cluster):
    c = make_cluster()
    c.start()
    c.register()
    c.write_version(1)
    assert all(r.rc == 0 for r in c.update(1))
    again = c.ctl(0, "update", "--version", "1")
    assert again.rc == 1
    assert "does not increase" in again.err
    c.write_version(2)
    assert all(r.rc == 0 for r in c.update(2))
    c.verify(3, 2)


def test_corrupted_bucket_is_detected_and_previous_version_kept(make_cluster):
    c = make_cluster()
    c.recv_args = {3: ["--test-corrupt-bucket", "1", "--test-fault-version", "2"]}
    c.start()
    c.register()
    c.write_version(1)
    assert all(r.rc == 0 for r in c.update(1))
    c.write_version(2)
    results = c.update(2)
    for r in results:
        assert r.rc == 1
        assert "failed version 2" in r.out
        assert "rank 3" in r.out and "bucket 1 from sender" in r.out
        assert "checksum mismatch" in r.out
    for rank in (2, 3):
        out = c.receiver_out(rank)
        assert not os.path.exists(f"{out}/step_2"), "aborted version must not be published"
        assert open(f"{out}/LATEST").read().strip() == "1"
        # Each receiver aborts right after the vote, as the senders report.
        deadline = time.time() + 10
        while [d for d in os.listdir(out) if d.startswith(".tmp")]:
            assert time.time() < deadline, os.listdir(out)
            time.sleep(0.05)
        c.verify(rank, 1)
    # The group is still usable.
    c.write_version(3)
    assert all(r.rc == 0 for r in c.update(3))
    for rank in (2, 3):
        c.verify(rank, 3)


def test_receiver_killed_mid_update_fails_in_time_then_rejoins(make_cluster):
    import time

    # Generous for a loaded 2-core CI machine; the bound asserted below is
    # what matters: failure within the timeout, not a hang.
    c = make_cluster(timeout_s=8)
    c.recv_args = {3: ["--test-exit-after-bucket", "2", "--test-fault-version", "2"]}
    c.start()
    c.register()
    c.write_version(1)
    assert all(r.rc == 0 for r in c.update(1))
    c.write_version(2)
    t0 = time.monotonic()
    results = c.update(2)
    elapsed = time.monotonic() - t0
    assert all(r.rc == 1 for r in results), [r.out for r in results]
    # Before any timeout fires: the ranks that see the crash fail at once and
    # mark the generation broken, and the others follow (BrokenWatch).
    assert elapsed < c.timeout_s, f"failure took {elapsed:.1f} s"
    assert c.receivers[3].wait(timeout=10) == 3  # the hook's crash exit
    assert not os.path.exists(f"{c.receiver_out(2)}/step_2")
    c.verify(2, 1)
    # The receiver comes back (as a supervisor would restart it).
    c.start_receiver(3, extra=[])
    c.write_version(3)
    results = c.update(3)
    assert all(r.rc == 0 for r in results), [r.out + r.err for r in results]
    for rank in (2, 3):
        c.verify(rank, 3)
    assert json.loads(c.ctl(0, "status", "--json").out)["updates_failed"] == 1


def test_a_stalled_receiver_fails_the_update_within_its_timeout_and_catches_up(make_cluster):
    """Receiver 3 stops responding (SIGSTOP) before an update: the update
    fails on every sender within a bounded time instead of hanging, rank 2
    keeps version 1, and once rank 3 runs again the group takes version 3
    on both."""
    import signal
    import time

    c = make_cluster(timeout_s=4)
    c.start()
    c.register()
    c.write_version(1)
    assert all(r.rc == 0 for r in c.update(1))
    c.receivers[3].send_signal(signal.SIGSTOP)
    try:
        c.write_version(2)
        t0 = time.monotonic()
        results = c.update(2)
        elapsed = time.monotonic() - t0
        assert all(r.rc == 1 for r in results), [r.out + r.err for r in results]
        assert all("failed version 2" in r.out for r in results), [r.out for r in results]
        # Joining, the manifest and the buckets each wait one timeout at most.
        assert elapsed < 4 * c.timeout_s, f"failure took {elapsed:.1f} s"
        for rank in (2, 3):
            assert open(f"{c.receiver_out(rank)}/LATEST").read().strip() == "1"
        c.verify(2, 1)
    finally:
        c.receivers[3].send_signal(signal.SIGCONT)
    time.sleep(1)
    for version in (3, 4):  # the woken rank may lose one attempt re-forming
        c.write_version(version)
        results = c.update(version)
        if all(r.rc == 0 for r in results):
            break
    assert all(r.rc == 0 for r in results), [r.out + r.err for r in results]
    for rank in (2, 3):
        c.verify(rank, version)


def test_sender_daemon_restart_is_followed_by_running_receivers(make_cluster):
    """The coordinator (sender 0, which also serves the rendezvous) dies and
    is restarted by its supervisor; the receivers keep running and take the
    next version from the new incarnation."""
    c = make_cluster(num_senders=1, num_receivers=2)
    c.parts = c.model.split(1)
    c.start()
    c.register()
    for v in (1, 2, 3):
        c.write_version(v)
        assert all(r.rc == 0 for r in c.update(v))
    c.crash_and_restart_senders()
    c.write_version(4)
    res = c.update(4)
    assert res[0].rc == 0, res[0].out + res[0].err
    for rank in (1, 2):
        c.verify(rank, 4)
        c.verify(rank, 3)


def test_one_receiver_process_can_join_as_several_ranks(make_cluster):
    c = make_cluster(num_receivers=2)
    c.start_daemons()
    for s in range(c.num_senders):
        assert c.init(s).rc == 0
    p = c.start_receiver(2, extra=["--num-ranks", "2"])
    c.register()
    c.write_version(1)
    assert all(r.rc == 0 for r in c.update(1))
    import os
    import time
    base = c.receiver_out(2)
    for rank in (2, 3):
        deadline = time.time() + 10
        while not os.path.exists(f"{base}/rank{rank}/LATEST") and time.time() < deadline:
            time.sleep(0.05)
        assert os.path.isdir(f"{base}/rank{rank}/step_1")
        assert open(f"{base}/rank{rank}/LATEST").read().strip() == "1"
    assert p.poll() is None


def test_a_receiver_without_the_group_token_is_refused(make_cluster):
    import subprocess

    c = make_cluster(num_senders=1, num_receivers=1)
    c.start_daemons()
    assert c.init(0).rc == 0
    p = subprocess.run([c.bin("weightcast-recv"), "--rendezvous", f"127.0.0.1:{c.port}",
                        "--rank-offset", "1", "--out", c.receiver_out(1)],
                       capture_output=True, text=True, timeout=30,
                       env={**os.environ, "WEIGHTCAST_TOKEN": "wrong"})
    assert p.returncode == 1
    assert "UNAUTHENTICATED" in p.stdout + p.stderr


def test_receivers_refuse_a_version_that_is_not_newer(make_cluster):
    """A restarted sender no longer knows what was published: receivers
    refuse an old version number before writing anything."""
    import signal

    c = make_cluster(num_senders=1, num_receivers=1)
    c.parts = c.model.split(1)
    c.start()
    c.register()
    c.write_version(5)
    assert c.update(5)[0].rc == 0
    c.crash_and_restart_senders()
    c.write_version(3)
    r = c.update(3)[0]
    assert r.rc == 1 and "not newer than the published version 5" in r.out
    c.verify(1, 5)
    c.write_version(6)
    assert c.update(6)[0].rc == 0
    c.verify(1, 6)


def test_a_discarding_receiver_verifies_and_writes_nothing(make_cluster):
    """weightcast-recv --discard (for benchmarks) still checks every bucket:
    a clean update commits without a checkpoint, a corrupted one is voted
    down."""
    c = make_cluster(num_senders=1, num_receivers=1,
                     recv_args={1: ["--discard", "--test-corrupt-bucket", "0",
                                    "--test-fault-version", "2"]})
    c.start()
    c.register()
    c.write_version(1)
    r = c.update(1)
    assert r[0].rc == 0, r[0].err
    c.write_version(2)
    r = c.update(2)
    assert r[0].rc == 1 and "checksum mismatch" in (r[0].out + r[0].err)
    assert not os.path.exists(c.receiver_out(1))


def test_receivers_outlive_an_abort_of_sender_0_and_take_the_next_version(make_cluster):
    """Aborting sender 0 (its rendezvous goes away) is the senders' planned
    stop: the receivers keep running, log no error exit, and take the next
    version once the senders are initialised again."""
    import time

    c = make_cluster()
    c.start()
    c.register()
    c.write_version(1)
    assert all(r.rc == 0 for r in c.update(1))
    for s in range(c.num_senders):
        assert c.ctl(s, "abort").rc == 0
    time.sleep(3)
    for rank, p in c.receivers.items():
        assert p.poll() is None, f"receiver {rank} exited ({p.returncode}) after sender 0's abort"
    for s in range(c.num_senders):
        assert c.init(s).rc == 0
    c.write_version(2)
    results = c.update(2)
    assert all(r.rc == 0 for r in results), [r.out + r.err for r in results]
    for rank in c.receivers:
        c.verify(rank, 2)


def test_a_version_is_the_whole_model_or_nothing(make_cluster):
    """Sender 1 restarted and initialised without registering (what a
    supervisor's restart does) used to commit a version without its tensors,
    with LATEST pointing at it. Now: a sender with nothing registered refuses
    the update; one that registered only part of its tensors has the version
    refused by the receivers, naming what is missing; a declared new model
    changes the tensor set."""
    from weightcast.shm import ShmTensorFile

    c = make_cluster(timeout_s=8)
    c.start()
    c.register()
    c.write_version(1)
    assert all(r.rc == 0 for r in c.update(1))
    c.crash_and_restart_sender(1)
    assert c.init(1).rc == 0
    r = c.ctl(1, "update", "--version", "2")
    assert r.rc == 1 and "sender 1 has no tensors registered" in r.err, r.out + r.err
    # Sender 1 registers all of its tensors but one.
    part = c.parts[1]
    dropped = part[-1][0]
    f = ShmTensorFile.create(f"{c.workdir}/partial1.bin", part[:-1])
    desc = f"{c.workdir}/partial1.json"
    f.write_descriptors(desc, config=c.model.config())
    assert c.ctl(1, "register", "--descriptors", desc).rc == 0
    results = c.update(2)
    for r in results:
        assert r.rc == 1, r.out + r.err
        assert "is not the model committed at version 1; 1 missing: " + dropped in r.out, r.out
    for rank in c.receivers:
        assert open(f"{c.receiver_out(rank)}/LATEST").read().strip() == "1"
        assert not os.path.exists(f"{c.receiver_out(rank)}/step_2")
        c.verify(rank, 1)
    # Declared as a new model, the same tensor set commits.
    with ThreadPoolExecutor(2) as pool:
        later = pool.submit(c.ctl, 1, "update", "--version", "3")
        first = c.ctl(0, "update", "--version", "3", "--new-model")
        results = [first, later.result()]
    assert all(r.rc == 0 for r in results), [r.out + r.err for r in results]
    tensors, _ = c.load(2, 3)
    assert dropped not in tensors and len(tensors) == len(list(c.model.tensors())) - 1
    f.close()


def test_surviving_senders_follow_a_restarted_sender_0(make_cluster):
    """Sender 0 restarted (and was initialised and registered again): the
    other senders, left as they were, take part in the next update (they
    used to fail every update until each was aborted and initialised)."""
    c = make_cluster()
    c.start()
    c.register()
    c.write_version(1)
    assert all(r.rc == 0 for r in c.update(1))
    c.crash_and_restart_sender(0)
    assert c.init(0).rc == 0
    desc = f"{c.workdir}/trainer0.json"
    assert c.ctl(0, "register", "--descriptors", desc).rc == 0
    for version in (2, 3):
        c.write_version(version)
        results = c.update(version)
        assert all(r.rc == 0 for r in results), [r.out + r.err for r in results]
        for rank in c.receivers:
            c.verify(rank, version)


def test_a_second_process_for_a_receiver_rank_is_refused(make_cluster, tmp_path):
    """Two processes joined as one rank used to take turns receiving
    versions while the senders reported every update committed."""
    import subprocess

    c = make_cluster()
    c.start()
    c.register()
    c.write_version(1)
    assert all(r.rc == 0 for r in c.update(1))
    dup = subprocess.run([c.bin("weightcast-recv"), "--rendezvous", f"127.0.0.1:{c.port}",
                          "--token-file", c.token_file(), "--rank-offset", "2", "--out",
                          str(tmp_path / "dup"), "--timeout", "10"],
                         capture_output=True, text=True, timeout=60)
    assert dup.returncode == 1, dup.stdout + dup.stderr
    assert "rank 2 is held by another running process" in dup.stdout + dup.stderr
    for version in (2, 3):
        c.write_version(version)
        assert all(r.rc == 0 for r in c.update(version))
        for rank in c.receivers:
            c.verify(rank, version)
    assert not os.path.exists(tmp_path / "dup" / "step_2")


def test_a_replaced_source_file_is_refused_and_a_fifo_never_wedges_the_daemon(make_cluster):
    """The trainer wrote a new shared-memory file and renamed it over the
    registered one: the daemon kept reading the old inode and committed v2
    with every tensor of that sender still at v1. A FIFO registered as a
    tensor file wedged the daemon (status, update, abort and SIGTERM)."""
    import shutil

    c = make_cluster()
    c.start()
    c.register()
    c.write_version(1)
    assert all(r.rc == 0 for r in c.update(1))
    path = c.shm[1].path
    shutil.copy(path, path + ".new")
    os.replace(path + ".new", path)
    results = c.update(2)
    assert results[1].rc == 1 and "replaced by another file" in results[1].out, results[1].out
    assert path in results[1].out and results[0].rc == 1
    for rank in c.receivers:
        assert open(f"{c.receiver_out(rank)}/LATEST").read().strip() == "1"
    # Registered again, the new file is what goes out.
    for s in range(c.num_senders):
        c.ctl(s, "abort")
        assert c.init(s).rc == 0
    for f in c.shm:
        f.close()
    c.shm.clear()
    c.register()
    c.write_version(3)
    assert all(r.rc == 0 for r in c.update(3))
    for rank in c.receivers:
        c.verify(rank, 3)
    fifo = f"{c.workdir}/tensors.fifo"
    os.mkfifo(fifo)
    desc = f"{c.workdir}/fifo.json"
    with open(desc, "w") as fh:
        json.dump({"tensors": [{"name": "x", "dtype": "F32", "shape": [4],
                                "shm": {"path": fifo, "offset": 0}}]}, fh)
    t0 = time.time()
    r = c.ctl(0, "register", "--descriptors", desc, timeout=30)
    assert r.rc == 1 and "not a regular file" in r.err, r.err
    assert time.time() - t0 < 10
    assert c.ctl(0, "status").rc == 0


def test_a_sender_fails_within_its_timeout_when_sender_0_dies(make_cluster):
    """With sender 0 gone, sender 1 used to need 30 s to fail an update with
    timeout_s 8 (its calls to the dead rendezvous waited 30 s each)."""
    import signal

    c = make_cluster(timeout_s=8)
    c.start()
    c.register()
    c.write_version(1)
    assert all(r.rc == 0 for r in c.update(1))
    c.daemons[0].send_signal(signal.SIGKILL)
    c.daemons[0].wait()
    t0 = time.time()
    r = c.ctl(1, "update", "--version", "2", timeout=60)
    took = time.time() - t0
    assert r.rc == 1, r.out + r.err
    assert took < 8 + 4, f"sender 1 took {took:.1f} s to fail"
    for rank in c.receivers:
        assert open(f"{c.receiver_out(rank)}/LATEST").read().strip() == "1"


def test_nonfinite_weight_is_refused_naming_the_tensor_and_allow_non_finite_sends_it(make_cluster):
    """A trainer's tensor holding +inf: the update fails on every sender with
    the tensor and element named, the receivers keep the previous version
    byte for byte, and the group stays usable; with --allow-non-finite the
    same bytes commit."""
    import numpy as np

    c = make_cluster()
    c.start()
    c.register()
    c.write_version(1)
    assert all(r.rc == 0 for r in c.update(1))
    generation = status(c, 0)["generation"]

    # Sender 1's trainer writes version 2 with one +inf in a weight.
    c.write_version(2)
    f = c.shm[1]
    name = next(n for n in f.names() if n.endswith("down_proj.weight"))
    flat = f.array(name).reshape(-1)
    index = flat.size // 2 + 3
    flat[index] = 0x7F80  # bf16 +inf
    f.flush()
    results = c.update(2)
    needle = f"tensor '{name}': non-finite value (+inf) at element {index}"
    for s, r in enumerate(results):
        assert r.rc == 1, f"sender {s}: {r.out}{r.err}"
        assert "failed version 2" in r.out, r.out
        assert needle in r.out, f"sender {s}: {r.out}"
    assert "code 3" in results[1].out + results[1].err  # INVALID_ARGUMENT from the sender that saw it
    assert "rank 1" in results[0].out  # the others name the rank that refused
    for rank in (2, 3):
        out = c.receiver_out(rank)
        assert not os.path.exists(f"{out}/step_2"), "a refused version must not be published"
        assert open(f"{out}/LATEST").read().strip() == "1"
        c.verify(rank, 1)
    for s in (0, 1):
        st = status(c, s)
        assert st["last_committed_version"] == 1 and st["state"] == "idle"
        assert needle in st["last_error"]
    assert status(c, 0)["generation"] == generation  # voted down, nothing broken

    # With the guard off the same bytes go through.
    for s in range(c.num_senders):
        assert c.ctl(s, "abort").rc == 0
    for s in range(c.num_senders):
        r = c.init(s, **{"--allow-non-finite": True})
        assert r.rc == 0, r.err
    results = c.update(3)
    assert all(r.rc == 0 for r in results), [r.out + r.err for r in results]
    for rank in (2, 3):
        got, _ = c.load(rank, 3)
        assert got[name].reshape(-1).view(np.uint16)[index] == 0x7F80
        assert got[name].tobytes() == f.array(name).tobytes()
