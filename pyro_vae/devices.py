"""Which device a command runs on: ``cpu``, ``cuda`` or ``cuda:N``, checked against the GPUs this machine has."""
from __future__ import annotations

import torch

from pyro_vae.errors import PyroVAEError


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``, checked against the GPUs this machine has."""
    kind, _, index = str(name).partition(":")
    if kind not in ("cpu", "cuda") or (index and (kind == "cpu" or not index.isdigit())):
        raise PyroVAEError(f"unknown device {name!r}; choose cpu, cuda or cuda:N")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise PyroVAEError(f"--device {name} was asked for, but no CUDA GPU is available here; use --device cpu")
        if index and int(index) >= count:
            raise PyroVAEError(f"--device {name} was asked for, but this machine has {count} GPU(s): cuda:0 to "
                               f"cuda:{count - 1}")
    return torch.device(name)
