"""transformers is the oracle for every golden family (tests/golden): the
checkpoint weightcast-convert writes from transformers' state_dict loads with
from_pretrained and gives exactly the logits of transformers' own model
holding that state_dict, computed on the same machine.

The logits recorded when the golden models were made (logits.bin) are
checked too, but within a few bf16 roundings: CPU kernels round bf16
matmuls differently from one machine to the next (on an AMD EPYC box most
families differ from the recorded values in a few percent of the logits,
by up to 0.5% of the largest one, with or without weightcast)."""

import json
import os
import subprocess

import numpy as np
import pytest
import torch
import transformers

from weightcast_testing.cluster import REPO, default_bin_dir

MODELS = os.path.join(REPO, "tests", "golden", "models")
CASES = sorted(os.listdir(MODELS)) if os.path.isdir(MODELS) else []


def convert(case: str, out) -> str:
    d = os.path.join(MODELS, case)
    p = subprocess.run([os.path.join(default_bin_dir(), "weightcast-convert"),
                        "--in", os.path.join(d, "state_dict"), "--out", str(out),
                        "--source-layout", "fused", "--model-config", os.path.join(d, "config.json")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return os.path.join(str(out), "step_1")


def logits_of(model, ids):
    with torch.no_grad():
        return model(ids).logits.float().numpy()


def transformers_own_model(d: str, config_class):
    """The golden model as transformers holds it: built from its config and
    given the original state_dict, every key."""
    from safetensors.torch import load_file

    config = config_class.from_pretrained(d)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    model.load_state_dict(load_file(os.path.join(d, "state_dict", "model.safetensors")),
                          strict=True)
    return model


@pytest.mark.parametrize("case", CASES)
def test_the_checkpoint_weightcast_writes_gives_transformers_logits(case, tmp_path):
    d = os.path.join(MODELS, case)
    made = json.load(open(os.path.join(d, "made_with.json")))
    step = convert(case, tmp_path)
    # Read the config with the class the model was made with: kimi_k2's
    # model_type is unknown to transformers (it is DeepSeek-V3's model, and
    # its per-expert keys load through DeepSeek-V3's conversion).
    config_class = getattr(transformers, made["config_class"])
    config = config_class.from_pretrained(step)
    config.model_type = config_class.model_type
    model = transformers.AutoModelForCausalLM.from_pretrained(step, config=config,
                                                              dtype=torch.bfloat16).eval()
    ids = torch.tensor(json.load(open(os.path.join(d, "input_ids.json"))))
    ours = logits_of(model, ids)
    theirs = logits_of(transformers_own_model(d, config_class), ids)
    np.testing.assert_array_equal(ours, theirs)
    recorded = np.fromfile(os.path.join(d, "logits.bin"), dtype=np.float32).reshape(ours.shape)
    # 2^-6 of the largest logit: a few roundings of bf16 (8 bits of mantissa).
    assert np.abs(theirs - recorded).max() <= 2.0 ** -6 * np.abs(recorded).max()
