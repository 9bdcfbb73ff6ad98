"""The machine a report's figures were measured on. Every benchmark and evaluation report carries
it: timings mean little without the CPU, the core count, the memory and the load at the time."""

from __future__ import annotations

import os
import platform


def machine(torch_device=None) -> dict:
    """CPU model, cores, memory, Python, platform and the 1/5/15-min load average now; with
    ``torch_device`` also torch's version and threads, the device and the GPU's name."""
    try:
        cpu = next(
            (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
            platform.processor(),
        )
        mem = next((line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal")), "0")
    except OSError:  # not Linux
        cpu, mem = platform.processor(), "0"
    out = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_gib": round(int(mem) / 2**20, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }
    if torch_device is not None:
        import torch

        out.update(torch=torch.__version__, torch_threads=torch.get_num_threads(), device=str(torch_device))
        if torch.device(torch_device).type == "cuda":
            out["gpu"] = torch.cuda.get_device_name(torch_device)
    return out
