"""The trainer's half of weightcast: hand tensors to a weightcastd sidecar."""

from weightcast_trainer.shm import ShmTensorFile, bf16_from_float32, float32_from_bf16

__all__ = ["ShmTensorFile", "bf16_from_float32", "float32_from_bf16"]
