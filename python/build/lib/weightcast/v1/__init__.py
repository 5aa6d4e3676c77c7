"""Generated gRPC stubs of proto/weightcast/v1/control.proto (scripts/gen-python-stubs)."""
