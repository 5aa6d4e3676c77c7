"""Python side of the weightcast receiver (ctypes over libweightcast_receiver.so)."""

from weightcast_receiver.client import (DeviceTensor, EngineAdapter, ParameterTargets, Receiver,
                                        ReceiveResult, ReceiveStatus)

__all__ = ["DeviceTensor", "EngineAdapter", "ParameterTargets", "Receiver", "ReceiveResult",
           "ReceiveStatus"]
