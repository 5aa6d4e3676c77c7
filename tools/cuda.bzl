"""cuda_library: compiles .cu files with the toolkit's nvcc into .pic.o files
and wraps them in a cc_library, so host code links them like any other library.

Offline Bazel 4 has no CUDA rules; this is the recipe from docs/BAZEL.md:
one genrule per .cu (nvcc -Xcompiler -fPIC), the objects listed in a
cc_library's srcs, linked against the static CUDA runtime.

  cuda_library(
      name = "pack_cuda",
      srcs = ["pack_cuda.cu"],          # kernels + their host launchers
      hdrs = ["pack_cuda.h"],           # plain host declarations only
      cu_deps = ["cuda_check.h"],       # headers the .cu includes
      deps = [...],                     # cc deps of the header
  )
"""

NVCC = "/usr/local/cuda/bin/nvcc"

# Hopper machine code plus compute_80 PTX (JIT-compiled on anything else).
NVCC_FLAGS = [
    "-Xcompiler -fPIC",
    "-O3",
    "-std=c++20",
    "-I.",
    "-gencode arch=compute_90a,code=sm_90a",
    "-gencode arch=compute_80,code=compute_80",
    "-Xptxas -warn-spills",
    "--expt-relaxed-constexpr",
]

# With --define=cuda=host (scripts/test's host-twin run) every cuda_library
# is its host twin instead: no nvcc objects, the launchers of
# //kernels/host_twin (the CPU twins behind the same functions), and
# //tools:cudart is the twin's CUDA runtime (kernels/host_twin/README.md).
HOST_TWIN = "//tools:cuda_host_twin"

def cuda_library(name, srcs, hdrs = [], cu_deps = [], deps = [], linkopts = [], **kwargs):
    objs = []
    for src in srcs:
        obj = name + "_" + src.replace("/", "_").replace(".cu", ".pic.o")
        native.genrule(
            name = obj.replace(".", "_"),
            srcs = [src] + hdrs + cu_deps,
            outs = [obj],
            cmd = "%s %s -c $(location %s) -o $@" % (NVCC, " ".join(NVCC_FLAGS), src),
        )
        objs.append(obj)
    native.cc_library(
        name = name + "_headers",
        hdrs = hdrs,
        deps = deps + ["@cuda//:headers"],
        **kwargs
    )
    native.cc_library(
        name = name,
        srcs = select({HOST_TWIN: [], "//conditions:default": objs}),
        deps = [":" + name + "_headers", "//tools:cudart"] +
               select({HOST_TWIN: ["//kernels/host_twin:launchers"], "//conditions:default": []}),
        linkopts = linkopts,
        alwayslink = True,
        **kwargs
    )
