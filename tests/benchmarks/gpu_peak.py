"""Peak dense bf16 tensor-core throughput for MFU (vendor datasheets, SXM parts); the
REINSTRUMENT_PEAK_TFLOPS variable overrides it for other devices."""
import os

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def peak_bf16_tflops(device_name: str) -> float:
    """0.0 when unknown (MFU is then not printed)."""
    override = float(os.environ.get("REINSTRUMENT_PEAK_TFLOPS", 0))
    return override or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device_name), 0.0)
