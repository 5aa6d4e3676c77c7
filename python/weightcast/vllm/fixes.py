"""Where vLLM's own reload path is wrong, and what weightcast does about it.
Each fix names the vLLM versions it applies to and is a no-op elsewhere.

AMX tile permission (vLLM 0.32 on x86 CPUs with AMX, Linux >= 5.16)
    vLLM's CPU attention picks its AMX kernel for bf16 with block sizes
    that are multiples of 32, but nothing in the process asks Linux for the
    AMX tile state first (arch_prctl ARCH_REQ_XCOMP_PERM, XTILEDATA): the
    first tile instruction then kills the process with SIGILL, unless some
    oneDNN call happened to ask before (seen with ``vllm serve``, whose
    worker dies at its first request with no traceback). The plugin entry
    point runs in every vLLM process, so ``request_amx_permission`` is
    called from it; the request is idempotent and a no-op without AMX.

CPU MoE experts after a layerwise reload (vLLM 0.32 on CPU)
    On the first load, ``UnquantizedFusedMoEMethod._setup_kernel`` builds
    the kernel and lets the CPU experts pad the intermediate size (to a
    multiple of 32) and prepack the expert weights. On a reload it sees an
    existing kernel (``is_weight_update``) and skips that step, so the new
    weights are copied unpadded and unpacked into the prepacked storage:
    wrong logits, or a shape error when the intermediate size was padded.
    The fix runs the skipped step (``fused_experts.process_weights_after_loading``)
    on the reloaded layer, so what is copied into the kernel's storage is
    padded and prepacked as on a first load. Checked bit-exact against a
    fresh load by tests/test_vllm.py, which also checks that the fix is
    still needed (so it can go when vLLM fixes the reload).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

log = logging.getLogger("weightcast.vllm")

# vLLM releases whose CPU MoE reload skips the prepack.
CPU_MOE_RELOAD_AFFECTED = ("0.32.",)
# Set to 0 to turn the fix off (tests use it to show it is needed).
DISABLE_ENV = "WEIGHTCAST_VLLM_DISABLE_CPU_MOE_FIX"


_ARCH_REQ_XCOMP_PERM = 0x1023
_XFEATURE_XTILEDATA = 18
_SYS_ARCH_PRCTL = 158   # x86-64


def request_amx_permission() -> bool:
    """Asks Linux for the AMX tile state for this process (see the module
    doc). Returns whether it was granted (False: not x86-64 Linux, no AMX)."""
    import platform  # noqa: PLC0415

    if sys.platform != "linux" or platform.machine() != "x86_64":
        return False
    try:
        with open("/proc/cpuinfo") as f:
            if "amx_tile" not in f.read():
                return False
    except OSError:
        return False
    import ctypes  # noqa: PLC0415

    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA) == 0


def _cpu_moe_affected() -> bool:
    import vllm  # noqa: PLC0415
    from vllm.platforms import current_platform  # noqa: PLC0415

    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return False
    return current_platform.is_cpu() and vllm.__version__.startswith(CPU_MOE_RELOAD_AFFECTED)


def _cpu_moe_methods(model):
    """The unquantized FusedMoE methods of ``model`` whose kernel runs on the
    CPU experts and was already built (so a reload would skip the prepack)."""
    from vllm.model_executor.layers.fused_moe.experts.cpu_moe import (  # noqa: PLC0415
        CPUUnquantizedExperts)
    from vllm.model_executor.layers.fused_moe.unquantized_fused_moe_method import (  # noqa: PLC0415
        UnquantizedFusedMoEMethod)

    for module in model.modules():
        qm = getattr(module, "quant_method", None)
        if not isinstance(qm, UnquantizedFusedMoEMethod) or qm.moe_kernel is None:
            continue
        experts = getattr(qm.moe_kernel, "fused_experts", None)
        if isinstance(experts, CPUUnquantizedExperts):
            yield qm, experts


@contextlib.contextmanager
def reload_fixes(model):
    """Wraps one layerwise reload bracket of ``model`` (from before
    ``initialize_layerwise_reload`` to after ``finalize_layerwise_reload``)."""
    patched = []
    if _cpu_moe_affected():
        for qm, experts in _cpu_moe_methods(model):
            original = qm.process_weights_after_loading

            def process(layer, original=original, experts=experts):
                original(layer)
                experts.process_weights_after_loading(layer)

            qm.process_weights_after_loading = process
            patched.append(qm)
        if patched:
            log.debug("weightcast: CPU MoE reload fix on %d layers", len(patched))
    try:
        yield len(patched)
    finally:
        for qm in patched:
            del qm.process_weights_after_loading
