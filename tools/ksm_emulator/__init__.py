"""Keeper Secrets Manager emulator: the real KSM wire protocol on loopback, for tests and benchmarks."""

from ksm_emulator.server import EmulatorServer
from ksm_emulator.state import Vault

__all__ = ["EmulatorServer", "Vault"]
