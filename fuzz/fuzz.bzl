"""weightcast_fuzzer: one libFuzzer target per parser of outside input.

  weightcast_fuzzer(name = "wire_fuzzer", srcs = ["wire_fuzzer.cc"], deps = [...])

makes
  :wire_fuzzer         the libFuzzer binary (clang only: --config=asan;
                       tagged manual so ordinary builds skip it),
  :wire_fuzzer_replay  a test, built by any compiler, that runs every input
                       of corpus/wire_fuzzer (the seeds, and every crash a
                       fuzzer found, kept as a regression test) once.
"""

def weightcast_fuzzer(name, srcs, deps):
    native.cc_library(
        name = name + "_lib",
        srcs = srcs,
        deps = deps,
        alwayslink = 1,
    )
    native.cc_test(
        name = name + "_replay",
        deps = [":" + name + "_lib", "//fuzz:replay_main"],
        data = native.glob(["corpus/" + name + "/**"]),
        args = ["fuzz/corpus/" + name],
    )
    native.cc_binary(
        name = name,
        deps = [":" + name + "_lib"],
        linkopts = ["-fsanitize=fuzzer"],
        tags = ["manual"],
    )
