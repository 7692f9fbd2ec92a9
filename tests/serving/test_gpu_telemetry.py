"""GPU telemetry on the serving daemon's /metrics, with DCGM's names, from simulated GPUs."""

from __future__ import annotations

from helpers.serving import MemorySource, Servers, call

from appliance.gpu.telemetry import (
    CachedTelemetry,
    GpuSample,
    NvmlTelemetry,
    StaticTelemetry,
    Telemetry,
    render,
)

MIB = 1024 * 1024
H100 = GpuSample(index=0, uuid="GPU-aaaa", name="NVIDIA H100", utilization=97.0,
                 memory_used=20_000 * MIB, memory_total=81_559 * MIB, power_w=312.5,
                 temperature_c=61.0, sm_active=0.42, processes=((4242, 18_000 * MIB),))
T4 = GpuSample(index=1, uuid="GPU-bbbb", name="Tesla T4", utilization=0.0,
               memory_used=0, memory_total=15_360 * MIB)  # no GPM, no power reading


def test_render_names_the_fields_as_dcgm_exporter_does() -> None:
    text = render(Telemetry((H100, T4)))
    h100 = 'gpu="0",UUID="GPU-aaaa",modelName="NVIDIA H100"'
    assert f"DCGM_FI_DEV_GPU_UTIL{{{h100}}} 97" in text
    assert f"DCGM_FI_PROF_SM_ACTIVE{{{h100}}} 0.42" in text
    assert f"DCGM_FI_DEV_FB_USED{{{h100}}} 20000" in text
    assert f"DCGM_FI_DEV_FB_FREE{{{h100}}} 61559" in text
    assert f"DCGM_FI_DEV_POWER_USAGE{{{h100}}} 312.5" in text
    assert f"DCGM_FI_DEV_GPU_TEMP{{{h100}}} 61" in text
    assert f'appliance_gpu_process_memory_bytes{{{h100},pid="4242"}} {18_000 * MIB}' in text
    # What a GPU does not report is left out, not published as zero.
    t4 = 'gpu="1",UUID="GPU-bbbb",modelName="Tesla T4"'
    assert f"DCGM_FI_DEV_FB_FREE{{{t4}}} 15360" in text
    assert f"DCGM_FI_PROF_SM_ACTIVE{{{t4}}}" not in text
    assert f"DCGM_FI_DEV_POWER_USAGE{{{t4}}}" not in text


def test_a_host_without_a_gpu_publishes_empty_families() -> None:
    text = render(NvmlTelemetry().read())  # no NVIDIA driver on the test machines
    assert "# TYPE DCGM_FI_DEV_GPU_UTIL gauge" in text
    assert "DCGM_FI_DEV_GPU_UTIL{" not in text


def test_readings_are_cached_between_scrapes() -> None:
    reads = []

    class Counting(StaticTelemetry):
        def read(self) -> Telemetry:
            reads.append(1)
            return super().read()

    cached = CachedTelemetry(Counting([H100]), max_age_s=3600)
    for _ in range(5):
        assert cached.read().gpus == (H100,)
    assert len(reads) == 1
    assert CachedTelemetry(Counting([H100]), max_age_s=0).read() and len(reads) == 2


def test_the_serving_daemon_publishes_them_on_metrics(servers: Servers,
                                                      source: MemorySource) -> None:
    server = servers(source)
    server.app.telemetry = StaticTelemetry([H100])
    status, _, raw = call(server, "GET", "/metrics")
    text = raw.decode()
    assert status == 200
    assert 'DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-aaaa",modelName="NVIDIA H100"} 97' in text
    assert 'nv_inference_request_success' in text  # beside the serving metrics
