"""Two-phase publish: everything that can fail happens before the group's
vote, and what each receiver holds afterwards is reported back. Real
daemons and receivers, gloo over loopback; the full disk is a real tmpfs."""

import json
import os
import shutil
import subprocess
import time

import pytest


def status(cluster, s):
    r = cluster.ctl(s, "status", "--json")
    assert r.rc == 0, r.err
    return json.loads(r.out)


def receivers_in_status(cluster, s=0):
    return {r["rank"]: r["version"] for r in status(cluster, s)["receivers"]}


def latest(cluster, rank):
    return int(open(f"{cluster.receiver_out(rank)}/LATEST").read())


def pages(path):
    """4 KiB pages the regular files under `path` take on a tmpfs."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += -(-os.path.getsize(os.path.join(root, f)) // 4096)
    return total


def restart_receiver(cluster, rank):
    p = cluster.receivers[rank]
    p.terminate()
    p.wait(timeout=20)
    cluster.start_receiver(rank)
    time.sleep(2)  # it claims its rank and marks the generation for re-forming


def test_a_disk_that_fills_after_the_data_fails_the_vote_and_no_rank_moves(make_cluster):
    """Rank 3's disk has room for version 2's shards and nothing more: its
    index cannot be written. That must fail before the vote, so neither
    receiver publishes version 2 (before, rank 2 published it while rank 3
    failed after the vote: the fleet held two versions). With no room for
    the shards either, the version is refused as it begins. Room again, the
    next version reaches both."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    c = make_cluster()
    c.start()
    c.register()
    c.write_version(1)
    assert all(r.rc == 0 for r in c.update(1))
    c.verify(3, 1)
    out = c.receiver_out(3)
    # Exactly version 1's files plus version 2's shards (same sizes) fit.
    step1 = f"{out}/step_1"
    shards = sum(-(-os.path.getsize(f"{step1}/{f}") // 4096)
                 for f in os.listdir(step1) if f.endswith(".safetensors"))
    size = (pages(out) + shards) * 4096
    c.receivers[3].terminate()
    c.receivers[3].wait(timeout=20)
    shutil.move(out, out + ".v1")
    os.makedirs(out)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", out],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        subprocess.run(["cp", "-a", f"{out}.v1/.", out], check=True)
        c.start_receiver(3)
        time.sleep(2)
        c.write_version(2)
        results = c.update(2)
        for r in results:
            assert r.rc == 1, r.out + r.err
            assert "failed version 2" in r.out, r.out
            assert "rank 3" in r.out and "No space left on device" in r.out, r.out
        for rank in (2, 3):
            assert latest(c, rank) == 1, f"rank {rank} moved"
            assert not os.path.exists(f"{c.receiver_out(rank)}/step_2")
            c.verify(rank, 1)
        assert receivers_in_status(c) == {2: 1, 3: 1}
        assert status(c, 0)["last_committed_version"] == 1
        # A plain full disk (no room for the shards): refused when the version
        # begins, before a byte is written.
        subprocess.run(["mount", "-o", f"remount,size={pages(out) * 4096}", out], check=True)
        c.write_version(3)
        results = c.update(3)
        for r in results:
            assert r.rc == 1, r.out + r.err
            assert "rank 3" in r.out and "reserving" in r.out, r.out
        for rank in (2, 3):
            assert latest(c, rank) == 1, f"rank {rank} moved"
        # Room again: the group is usable and both receivers take version 4.
        subprocess.run(["mount", "-o", f"remount,size={size * 4}", out], check=True)
        c.write_version(4)
        results = c.update(4)
        assert all(r.rc == 0 for r in results), [r.out + r.err for r in results]
        for rank in (2, 3):
            c.verify(rank, 4)
        assert receivers_in_status(c) == {2: 4, 3: 4}
    finally:
        c.stop()
        subprocess.run(["umount", "-l", out], capture_output=True)


def test_a_receiver_that_fails_to_publish_after_the_vote_is_reported(make_cluster):
    """Rank 3 fails to publish version 2 after the group voted for it. Every
    sender's update fails naming rank 3 and the version it still holds;
    status shows each receiver's published version; the next version reaches
    both (rank 3 catches up)."""
    c = make_cluster()
    c.recv_args = {3: ["--test-fail-publish", "--test-fault-version", "2"]}
    c.start()
    c.register()
    c.write_version(1)
    results = c.update(1)
    assert all(r.rc == 0 for r in results), [r.out + r.err for r in results]
    assert receivers_in_status(c) == {2: 1, 3: 1}
    c.write_version(2)
    results = c.update(2)
    for r in results:
        assert r.rc == 1, r.out + r.err
        assert "version 2 was committed but not published everywhere" in r.out, r.out
        assert "rank 3 holds version 1" in r.out, r.out
        assert "rank 2 holds version 2\n" in r.out, r.out
    c.verify(2, 2)
    assert latest(c, 2) == 2
    assert latest(c, 3) == 1 and not os.path.exists(f"{c.receiver_out(3)}/step_2")
    for s in range(c.num_senders):
        assert receivers_in_status(c, s) == {2: 2, 3: 1}
        st = status(c, s)
        assert st["last_committed_version"] == 2  # the group voted for it
        assert "rank 3" in st["last_error"]
    # The same version again is refused by the senders: it was committed.
    assert all(r.rc != 0 for r in c.update(2))
    c.write_version(3)
    results = c.update(3)
    assert all(r.rc == 0 for r in results), [r.out + r.err for r in results]
    for rank in (2, 3):
        c.verify(rank, 3)
    assert receivers_in_status(c) == {2: 3, 3: 3}


def test_status_shows_published_versions_across_sender_and_receiver_restarts(make_cluster):
    """Status shows what each receiver publishes even before it takes part
    in an update again: after sender 0 is re-initialised (a new rendezvous)
    and receiver 3 restarted (it reports its directory's LATEST)."""
    c = make_cluster()
    c.start()
    c.register()
    c.write_version(1)
    assert all(r.rc == 0 for r in c.update(1))
    for s in range(c.num_senders):
        assert c.ctl(s, "abort").rc == 0
    for s in range(c.num_senders):
        assert c.init(s).rc == 0
    restart_receiver(c, 3)
    # Sender 0's new rendezvous learns both: rank 2 tells it once it sees the
    # new incarnation, the restarted rank 3 reads its LATEST.
    deadline = time.time() + 15
    while receivers_in_status(c) != {2: 1, 3: 1}:
        assert time.time() < deadline, receivers_in_status(c)
        time.sleep(0.2)
