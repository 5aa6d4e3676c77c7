"""Format transforms through the real daemons: block FP8 on the wire and the
vLLM FusedMoE layout assembled by a receiver for its TP/EP rank."""

import numpy as np

from weightcast_testing.fp8 import check_fp8_checkpoint
from weightcast_testing.modelgen import values


def test_fp8_update_dequantizes_within_bound_and_names_scales(make_cluster):
    c = make_cluster(init_args={"--quantization": "fp8-block"})
    c.start()
    c.register()
    c.write_version(1)
    assert all(r.rc == 0 for r in c.update(1))
    got, config = c.load(2, 1)
    quantized = check_fp8_checkpoint(got, config, c.model, 1)
    assert quantized == 4 * c.model.layers + 3 * c.model.experts * c.model.layers


def test_receiver_assembles_vllm_w13_w2_for_its_tp_and_ep_rank(make_cluster):
    c = make_cluster(num_receivers=2)
    c.recv_args = {3: ["--layout", "vllm", "--tp-rank", "1", "--tp-size", "2",
                       "--ep-rank", "1", "--ep-size", "4"]}
    c.start()
    c.register()
    c.write_version(1)
    assert all(r.rc == 0 for r in c.update(1))
    c.verify(2, 1)  # the hf receiver is unaffected
    got, _ = c.load(3, 1)
    m = c.model
    E, I, H = m.experts, m.moe_intermediate, m.hidden
    itp = I // 2
    base, rem = divmod(E, 4)
    first, count = 1 * base + min(1, rem), base + (1 < rem)
    for layer in range(m.layers):
        p = f"model.layers.{layer}.mlp.experts"
        assert f"{p}.0.gate_proj.weight" not in got
        w13 = got[f"{p}.w13_weight"].view(np.uint16)
        w2 = got[f"{p}.w2_weight"].view(np.uint16)
        assert w13.shape == (count, 2 * itp, H) and w2.shape == (count, H, itp)
        for le in range(count):
            e = first + le
            gate = values(f"{p}.{e}.gate_proj.weight", "BF16", (I, H), 1)
            up = values(f"{p}.{e}.up_proj.weight", "BF16", (I, H), 1)
            down = values(f"{p}.{e}.down_proj.weight", "BF16", (H, I), 1)
            want13 = np.concatenate([gate[itp:], up[itp:]], axis=0)   # rank 1's rows
            assert np.array_equal(w13[le], want13)
            assert np.array_equal(w2[le], down[:, itp:])
        # Everything else arrives whole.
        name = f"model.layers.{layer}.self_attn.q_proj.weight"
        assert got[name].view(np.uint16).tobytes() == values(
            name, "BF16", (m.heads * m.head_dim, H), 1).tobytes()
