"""cc_grpc_proto: C++ (and gRPC) code for one .proto, from Debian's protoc."""

def cc_grpc_proto(name, src, grpc = True):
    base = src[:-len(".proto")]
    outs = [base + ".pb.h", base + ".pb.cc"]
    cmd = "protoc -Iproto --cpp_out=$(GENDIR)/proto "
    if grpc:
        outs += [base + ".grpc.pb.h", base + ".grpc.pb.cc"]
        cmd += "--grpc_out=$(GENDIR)/proto --plugin=protoc-gen-grpc=/usr/bin/grpc_cpp_plugin "
    native.genrule(
        name = name + "_gen",
        srcs = [src],
        outs = outs,
        cmd = cmd + "$(location " + src + ")",
    )
    native.cc_library(
        name = name + "_cc_proto",
        srcs = [o for o in outs if o.endswith(".cc")],
        hdrs = [o for o in outs if o.endswith(".h")],
        includes = ["."],
        deps = ["//tools:grpc"],
    )
