"""Every golden family (models made by transformers, tests/golden) through
the real daemons: a sender registers transformers' state_dict (fused
layout) as a checkpoint directory, and the receiver's checkpoint holds
exactly what save_pretrained wrote."""

import json
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file

from weightcast_testing.cluster import REPO

MODELS = os.path.join(REPO, "tests", "golden", "models")
CASES = sorted(os.listdir(MODELS)) if os.path.isdir(MODELS) else []


@pytest.mark.parametrize("case", CASES)
def test_family_round_trips_through_the_daemons(make_cluster, tmp_path, case):
    src = tmp_path / "state_dict"
    shutil.copytree(os.path.join(MODELS, case, "state_dict"), src)
    shutil.copy(os.path.join(MODELS, case, "config.json"), src / "config.json")
    c = make_cluster(num_senders=1, num_receivers=1, init_args={"--source-layout": "fused"})
    c.start()
    r = c.ctl(0, "register", "--checkpoint-dir", str(src))
    assert r.rc == 0, r.err
    res = c.update(1)
    assert res[0].rc == 0, res[0].out + res[0].err
    path = c.wait_for_step(1, 1)
    got = {}
    for f in os.listdir(path):
        if f.endswith(".safetensors"):
            got.update(load_file(os.path.join(path, f)))
    want = load_file(os.path.join(MODELS, case, "expected", "model.safetensors"))
    assert set(got) == set(want)
    for k in want:
        assert got[k].shape == want[k].shape and got[k].tobytes() == want[k].tobytes(), k
    assert json.load(open(os.path.join(path, "config.json"))) == json.load(
        open(os.path.join(MODELS, case, "config.json")))


def test_an_unsupported_family_is_refused_at_init(make_cluster):
    c = make_cluster(num_senders=1, num_receivers=1)
    c.start_daemons()
    r = c.init(0, **{"--family": "dbrx"})
    assert r.rc == 1 and "'dbrx' is not supported" in r.err and "code 3" in r.err


def test_a_mismatched_tensor_set_is_refused_before_any_byte_moves(make_cluster, tmp_path):
    # A fused state_dict declared as per-expert: the update fails naming the
    # tensor, the receiver publishes nothing, the daemon stays usable.
    case = "qwen3_moe"
    src = tmp_path / "sd"
    shutil.copytree(os.path.join(MODELS, case, "state_dict"), src)
    shutil.copy(os.path.join(MODELS, case, "config.json"), src / "config.json")
    c = make_cluster(num_senders=1, num_receivers=1)
    c.start()
    assert c.ctl(0, "register", "--checkpoint-dir", str(src)).rc == 0
    res = c.update(1)[0]
    assert res.rc == 1
    assert "mlp.experts.down_proj" in res.out and "source_layout is per-expert" in res.out
    assert not os.path.exists(os.path.join(c.receiver_out(1), "step_1"))
    st = json.loads(c.ctl(0, "status", "--json").out)
    assert st["state"] == "idle" and st["updates_failed"] == 1
