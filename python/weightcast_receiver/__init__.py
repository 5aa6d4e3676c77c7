"""Python side of the weightcast receiver (ctypes over libweightcast_receiver.so)."""

from weightcast_receiver.client import Receiver, ReceiveStatus, EngineAdapter

__all__ = ["Receiver", "ReceiveStatus", "EngineAdapter"]
