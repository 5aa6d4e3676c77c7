"""Model generator and multi-process harness shared by the demo and the tests."""
