"""What a result must carry to be trusted later: versions, device and source revision."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import subprocess
from pathlib import Path

import torch

import benchsuite

_LIBRARIES = ("torch", "torchvision", "numpy", "xarray", "monai", "statsmodels", "pydantic", "pluggy", "h5netcdf")


def versions(distributions: set[str] = frozenset()) -> dict[str, str]:
    """Versions of Python, the key libraries and the given plugin distributions."""
    found = {"python": platform.python_version(), "benchsuite": benchsuite.__version__}
    for name in sorted(set(_LIBRARIES) | set(distributions)):
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            found[name] = "not installed"
    return found


def device_description() -> str:
    """The accelerator if there is one, else the CPU model and core count."""
    if torch.cuda.is_available():
        names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
        return f"cuda: {', '.join(names)} (CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {cpu}, {os.cpu_count()} cores"


def git_revision() -> str:
    """The git commit of the benchsuite source tree (with '-dirty' if modified), or ''."""
    source = Path(benchsuite.__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return ""
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=source, capture_output=True, text=True, timeout=5
        )
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return ""
