"""Where weightcast's native parts are, and the commands that run them.

A wheel (``scripts/build-wheel``) carries the four programs in
``weightcast/_native/bin/`` and ``libweightcast_receiver.so`` in
``weightcast/_native/``, their shared libraries grafted beside them the way
auditwheel does (``weightcast.libs/``); NCCL, too large to graft, comes from
PyPI's ``nvidia-nccl-cu13`` and is found here. In a checkout the same names
resolve to what Bazel built (``bazel-bin``). ``$WEIGHTCAST_BIN`` (a folder of
the programs) and ``$WEIGHTCAST_RECEIVER_LIB`` override both.

The ``weightcastd``, ``weightcastctl``, ``weightcast-recv`` and
``weightcast-convert`` commands pip installs are ``main`` here: each replaces
itself (exec) with the program, so signals, exit codes and the process id
are the program's own.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys

PROGRAMS = ("weightcastd", "weightcastctl", "weightcast-recv", "weightcast-convert")
RECEIVER_LIB = "libweightcast_receiver.so"

_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_NATIVE = os.path.join(_PACKAGE, "_native")
_REPO = os.path.dirname(os.path.dirname(_PACKAGE))


def packaged() -> bool:
    """True when this package carries its own programs (installed from a wheel)."""
    return os.path.isdir(os.path.join(_NATIVE, "bin"))


def checkout_program_dir() -> str:
    """Where a checkout's Bazel build puts the programs."""
    return os.path.join(_REPO, "bazel-bin", "cmd")


def checkout_receiver_library() -> str:
    """Where a checkout's Bazel build puts libweightcast_receiver.so."""
    return os.path.join(_REPO, "bazel-bin", "receiver", RECEIVER_LIB)


def program(name: str) -> str:
    """The path of one of PROGRAMS."""
    if name not in PROGRAMS:
        raise ValueError(f"{name!r} is not one of {', '.join(PROGRAMS)}")
    if os.environ.get("WEIGHTCAST_BIN"):
        return os.path.join(os.environ["WEIGHTCAST_BIN"], name)
    if packaged():
        return os.path.join(_NATIVE, "bin", name)
    return os.path.join(checkout_program_dir(), name)


def receiver_library() -> str:
    """The path of libweightcast_receiver.so."""
    if os.environ.get("WEIGHTCAST_RECEIVER_LIB"):
        return os.environ["WEIGHTCAST_RECEIVER_LIB"]
    lib = os.path.join(_NATIVE, RECEIVER_LIB)
    return lib if os.path.exists(lib) else checkout_receiver_library()


def nccl_library_dir() -> str | None:
    """The folder of PyPI's NCCL (nvidia-nccl-cu13), when installed."""
    spec = importlib.util.find_spec("nvidia.nccl") if importlib.util.find_spec("nvidia") else None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        lib = os.path.join(root, "lib")
        if os.path.exists(os.path.join(lib, "libnccl.so.2")):
            return lib
    return None


def prepare_receiver_library(path: str) -> None:
    """Before ctypes loads the packaged library: makes its libnccl.so.2
    (PyPI's, not grafted) resolvable by loading it first, globally."""
    if not path.startswith(_NATIVE + os.sep):
        return
    nccl = nccl_library_dir()
    if nccl is None:
        raise OSError(f"{path} needs libnccl.so.2: pip install nvidia-nccl-cu13")
    ctypes.CDLL(os.path.join(nccl, "libnccl.so.2"), mode=ctypes.RTLD_GLOBAL)


def exec_program(name: str, argv: list[str]) -> None:
    """Replaces this process with program ``name`` run with ``argv``."""
    path = program(name)
    env = dict(os.environ)
    if path.startswith(_NATIVE + os.sep):
        nccl = nccl_library_dir()
        if nccl is None:
            sys.exit(f"{name}: libnccl.so.2 not found: pip install nvidia-nccl-cu13")
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (nccl, env.get("LD_LIBRARY_PATH", "")) if p)
    if not os.access(path, os.X_OK):
        sys.exit(f"{name}: {path} is missing (in a checkout: bazel build //cmd:all)")
    os.execve(path, [name, *argv], env)


def main() -> None:
    """The console command: runs the program named like this command."""
    name = os.path.basename(sys.argv[0])
    if name not in PROGRAMS:
        sys.exit(f"weightcast.native: run as one of {', '.join(PROGRAMS)}, not {name!r}")
    exec_program(name, sys.argv[1:])
