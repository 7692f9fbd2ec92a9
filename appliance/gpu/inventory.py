"""What GPUs this server has, read from NVML (pynvml, from ``nvidia-ml-py``).

A server without an NVIDIA driver is normal, not an error: the inventory is
empty and ``reason`` says why, with nothing printed. The source is an
interface so tests (and the scheduler's placement tests) can simulate GPUs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class GPU:
    index: int
    uuid: str
    name: str
    memory_total: int
    memory_used: int
    utilization: int  # percent, over NVML's last sample period

    @property
    def memory_free(self) -> int:
        return max(0, self.memory_total - self.memory_used)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["memory_free"] = self.memory_free
        return d


@dataclass(frozen=True)
class Inventory:
    gpus: tuple[GPU, ...] = ()
    driver: str | None = None
    reason: str | None = None  # why there are none, when there are none
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "driver": self.driver,
            "reason": self.reason,
            "gpus": [g.as_dict() for g in self.gpus],
        }


class InventorySource(Protocol):
    def read(self) -> Inventory: ...


class StaticSource:
    """A fixed inventory: simulated GPUs for tests and for planning."""

    def __init__(self, gpus: list[GPU] | tuple[GPU, ...], driver: str = "simulated") -> None:
        self._inventory = Inventory(
            gpus=tuple(gpus), driver=driver, reason=None if gpus else "no GPU on this server"
        )

    def read(self) -> Inventory:
        return self._inventory


class NvmlSource:
    """Reads the real inventory. Every call re-reads memory and utilisation."""

    def read(self) -> Inventory:
        try:
            import pynvml
        except ImportError:
            return Inventory(reason="no GPU on this server (nvidia-ml-py is not installed)")
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            return Inventory(reason=_no_driver_text(exc))
        try:
            driver = _text(pynvml.nvmlSystemGetDriverVersion())
            gpus = []
            for i in range(pynvml.nvmlDeviceGetCount()):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                mem = pynvml.nvmlDeviceGetMemoryInfo(h)
                try:
                    util = int(pynvml.nvmlDeviceGetUtilizationRates(h).gpu)
                except pynvml.NVMLError:
                    util = 0
                gpus.append(
                    GPU(
                        index=i,
                        uuid=_text(pynvml.nvmlDeviceGetUUID(h)),
                        name=_text(pynvml.nvmlDeviceGetName(h)),
                        memory_total=int(mem.total),
                        memory_used=int(mem.used),
                        utilization=util,
                    )
                )
            return Inventory(
                gpus=tuple(gpus),
                driver=driver,
                reason=None if gpus else "no GPU on this server (NVML found no devices)",
            )
        except pynvml.NVMLError as exc:
            return Inventory(reason=f"GPU inventory failed (NVML: {_nvml_text(exc)})")
        finally:
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError:
                pass


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# NVML's return codes for "there is no driver to talk to" (nvml.h).
_NVML_NO_PERMISSION = 4
_NVML_DRIVER_NOT_LOADED = 9
_NVML_LIBRARY_NOT_FOUND = 12


def _no_driver_text(exc: Exception) -> str:
    """What a failed nvmlInit means, in words a user understands (NVML's own message for
    a host without a driver is "NVML Shared Library Not Found")."""
    code = getattr(exc, "value", None)
    if code == _NVML_LIBRARY_NOT_FOUND:
        return ("no GPU on this server: no NVIDIA driver found (libnvidia-ml.so is not "
                "installed); jobs and serving run on the CPU")
    if code == _NVML_DRIVER_NOT_LOADED:
        return ("no GPU on this server: the NVIDIA driver is installed but not loaded "
                "(try nvidia-smi); jobs and serving run on the CPU")
    if code == _NVML_NO_PERMISSION:
        return "no GPU on this server: permission denied opening the NVIDIA driver"
    return f"no GPU on this server (NVML: {_nvml_text(exc)})"


def _nvml_text(exc: Exception) -> str:
    return str(exc) or type(exc).__name__
