"""GPU inventory from NVML."""

from appliance.gpu.inventory import GPU, Inventory, NvmlSource, StaticSource

__all__ = ["GPU", "Inventory", "NvmlSource", "StaticSource"]
