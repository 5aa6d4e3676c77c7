"""The trainer sidecar with CUDA tensors (GPU machine; skips elsewhere): a
model on the GPU registered through CUDA IPC, published over NCCL to a
receiver on the same GPU, byte for byte; a reallocated parameter is
registered again (new handle) and its new bytes arrive."""

from weightcast_testing.gpu import cuda_torch

torch = cuda_torch()

from safetensors.torch import load_file  # noqa: E402

from weightcast.control import GroupConfig, Sidecar  # noqa: E402
from weightcast.trainer import TrainerSidecar  # noqa: E402


def test_cuda_parameters_go_through_ipc_and_a_reallocated_one_is_registered_again(
        make_cluster, tmp_path):
    c = make_cluster(num_senders=1, num_receivers=1, nccl_one_gpu=True, timeout_s=60)
    c.start_daemons()
    Sidecar(c.sock(0)).init(GroupConfig(host="127.0.0.1", port=c.port, num_senders=1,
                                        inference_world_size=1, token=c.token, timeout_s=60,
                                        transport="nccl", cuda_device=0), 0)
    c.start_receiver(1, extra=["--cuda-device", "0"])
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.Linear(96, 32)).to(
        device="cuda", dtype=torch.bfloat16)
    sc = TrainerSidecar(c.sock(0), shm_dir=str(tmp_path))
    assert sc.register(model, config={"model_type": "dense"}) == 4
    for version in (1, 2):
        if version == 2:
            old = model[0].weight.data_ptr()
            model[0].weight.data = model[0].weight.data * 3   # new storage
            assert model[0].weight.data_ptr() != old
        sc.publish(version, wait="committed", progress=False)
        path = c.wait_for_step(1, version)
        got = {}
        import json
        import os
        index = json.load(open(os.path.join(path, "model.safetensors.index.json")))
        for shard in set(index["weight_map"].values()):
            got.update(load_file(os.path.join(path, shard)))
        for name, t in model.state_dict().items():
            assert torch.equal(got[name].view(torch.int16), t.cpu().view(torch.int16)), \
                (version, name)
    sc.close()
