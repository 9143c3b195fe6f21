"""Passive layouts shared by the inference tests (``rad_length_func`` callables of ``Volume.load_rad_length``)."""

import torch

from tomopt_lib.core import X0

__all__ = ["lead_in_beryllium"]


def lead_in_beryllium(*, z, lw, size):
    """TomOpt's reference test volume: 10 x 10 voxels of beryllium with a 5 x 5-voxel lead corner in the layers whose
    tops are 0.4 and 0.5 m."""
    top = float(torch.as_tensor(z).reshape(-1)[0])
    x0 = torch.full((10, 10), X0["beryllium"])
    if abs(top - 0.4) < 1e-6 or abs(top - 0.5) < 1e-6:
        x0[:5, :5] = X0["lead"]
    return x0
