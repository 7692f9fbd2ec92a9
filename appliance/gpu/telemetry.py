"""GPU telemetry for Prometheus, named after DCGM's fields (as dcgm-exporter publishes
them), read from NVML.

Per GPU: utilisation (``DCGM_FI_DEV_GPU_UTIL``, percent of time a kernel ran), SM
activity where NVML's GPM metrics are supported (``DCGM_FI_PROF_SM_ACTIVE``, a ratio:
GPU_UTIL reads 100% while most SMs idle, so SM activity is what sizing should use),
framebuffer memory used and free (``DCGM_FI_DEV_FB_USED``, ``DCGM_FI_DEV_FB_FREE``,
MiB), power (``DCGM_FI_DEV_POWER_USAGE``, W) and temperature (``DCGM_FI_DEV_GPU_TEMP``,
°C); per process, the GPU memory it holds (``appliance_gpu_process_memory_bytes``). A
reading is cached for ``max_age_s``, so scrapes do not each cost NVML calls. On a host
without a GPU every family is empty.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class GpuSample:
    index: int
    uuid: str
    name: str
    utilization: float  # percent
    memory_used: int  # bytes
    memory_total: int
    power_w: float | None = None
    temperature_c: float | None = None
    sm_active: float | None = None  # 0..1, where GPM is supported
    processes: tuple[tuple[int, int], ...] = ()  # (pid, bytes)


@dataclass(frozen=True)
class Telemetry:
    gpus: tuple[GpuSample, ...] = ()
    read_at: float = field(default_factory=time.time)


class TelemetrySource(Protocol):
    def read(self) -> Telemetry: ...


class StaticTelemetry:
    """Fixed samples: simulated GPUs for tests."""

    def __init__(self, gpus: list[GpuSample]) -> None:
        self.telemetry = Telemetry(tuple(gpus))

    def read(self) -> Telemetry:
        return self.telemetry


class NvmlTelemetry:
    """Reads NVML; a host without the driver gives an empty reading."""

    def read(self) -> Telemetry:
        try:
            import pynvml
        except ImportError:
            return Telemetry()
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError:
            return Telemetry()
        try:
            return Telemetry(tuple(_sample(pynvml, i)
                                   for i in range(pynvml.nvmlDeviceGetCount())))
        except pynvml.NVMLError:
            return Telemetry()
        finally:
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError:
                pass


def _optional(read: Any) -> Any:
    import pynvml

    try:
        return read()
    except pynvml.NVMLError:
        return None


def _sample(pynvml: Any, index: int) -> GpuSample:
    h = pynvml.nvmlDeviceGetHandleByIndex(index)
    mem = pynvml.nvmlDeviceGetMemoryInfo(h)
    util = _optional(lambda: pynvml.nvmlDeviceGetUtilizationRates(h).gpu)
    power = _optional(lambda: pynvml.nvmlDeviceGetPowerUsage(h))  # milliwatts
    temp = _optional(lambda: pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU))
    procs = _optional(lambda: pynvml.nvmlDeviceGetComputeRunningProcesses(h)) or []
    name = pynvml.nvmlDeviceGetName(h)
    uuid = pynvml.nvmlDeviceGetUUID(h)
    return GpuSample(
        index=index, uuid=uuid.decode() if isinstance(uuid, bytes) else str(uuid),
        name=name.decode() if isinstance(name, bytes) else str(name),
        utilization=float(util or 0), memory_used=int(mem.used), memory_total=int(mem.total),
        power_w=None if power is None else power / 1000.0,
        temperature_c=None if temp is None else float(temp),
        sm_active=_sm_active(pynvml, h),
        processes=tuple((int(p.pid), int(p.usedGpuMemory or 0)) for p in procs))


def _sm_active(pynvml: Any, handle: Any) -> float | None:
    """SM activity over a short window from NVML's GPM metrics (Hopper and newer); None
    where the GPU or the driver does not support them."""
    try:
        if not pynvml.nvmlGpmQueryDeviceSupport(handle).isSupportedDevice:
            return None
        first = pynvml.nvmlGpmSampleAlloc()
        second = pynvml.nvmlGpmSampleAlloc()
        try:
            pynvml.nvmlGpmSampleGet(handle, first)
            time.sleep(0.1)
            pynvml.nvmlGpmSampleGet(handle, second)
            metrics = pynvml.c_nvmlGpmMetricsGet_t()
            metrics.version = pynvml.NVML_GPM_METRICS_GET_VERSION
            metrics.numMetrics = 1
            metrics.sample1 = first
            metrics.sample2 = second
            metrics.metrics[0].metricId = pynvml.NVML_GPM_METRIC_SM_UTIL
            pynvml.nvmlGpmMetricsGet(metrics)
            return float(metrics.metrics[0].value) / 100.0
        finally:
            pynvml.nvmlGpmSampleFree(first)
            pynvml.nvmlGpmSampleFree(second)
    except (AttributeError, pynvml.NVMLError):
        return None


class CachedTelemetry:
    """A source read at most once every ``max_age_s``; thread-safe."""

    def __init__(self, source: TelemetrySource, max_age_s: float = 5.0) -> None:
        self.source = source
        self.max_age_s = max_age_s
        self._last: Telemetry | None = None
        self._at = 0.0
        self._lock = threading.Lock()

    def read(self) -> Telemetry:
        with self._lock:
            now = time.monotonic()
            if self._last is None or now - self._at >= self.max_age_s:
                self._last = self.source.read()
                self._at = now
            return self._last


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    """Whole numbers in full (bytes must not round to six digits), others to 10."""
    if float(value).is_integer():
        return str(int(value))
    return format(value, ".10g")


def render(telemetry: Telemetry) -> str:
    """Prometheus text, labelled as dcgm-exporter labels its series."""
    out: list[str] = []
    mib = 1024 * 1024

    def family(name: str, kind: str, help_text: str, rows: list[tuple[str, float]]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(f"{name}{labels} {_number(value)}" for labels, value in rows)

    def labels(g: GpuSample, **extra: str) -> str:
        pairs = {"gpu": str(g.index), "UUID": g.uuid, "modelName": g.name, **extra}
        return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in pairs.items()) + "}"

    gpus = telemetry.gpus
    family("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilisation (%): time a kernel ran.",
           [(labels(g), g.utilization) for g in gpus])
    family("DCGM_FI_PROF_SM_ACTIVE", "gauge",
           "Ratio of cycles an SM had a warp resident (NVML GPM), where supported.",
           [(labels(g), g.sm_active) for g in gpus if g.sm_active is not None])
    family("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (MiB).",
           [(labels(g), g.memory_used // mib) for g in gpus])
    family("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (MiB).",
           [(labels(g), max(0, g.memory_total - g.memory_used) // mib) for g in gpus])
    family("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (W).",
           [(labels(g), g.power_w) for g in gpus if g.power_w is not None])
    family("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (C).",
           [(labels(g), g.temperature_c) for g in gpus if g.temperature_c is not None])
    family("appliance_gpu_process_memory_bytes", "gauge",
           "GPU memory each process holds.",
           [(labels(g, pid=str(pid)), used) for g in gpus for pid, used in g.processes])
    return "\n".join(out) + "\n"
