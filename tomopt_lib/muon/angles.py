"""Conversions between the muon direction angles (volume frame: theta from the *negative* z axis, phi anticlockwise
from +x; theta_x, theta_y the projected angles, tan theta_x = d_x / |d_z|) and the unit direction of flight
d = (sin(theta) cos(phi), sin(theta) sin(phi), -cos(theta)). Also static methods of ``MuonBatch`` (TomOpt's API)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "direction_from_theta_phi",
    "theta_x_from_theta_phi",
    "theta_y_from_theta_phi",
    "theta_from_theta_xy",
    "phi_from_theta_xy",
    "theta_phi_from_direction",
]


def direction_from_theta_phi(theta: Tensor, phi: Tensor) -> Tensor:
    """d = (sin(theta) cos(phi), sin(theta) sin(phi), -cos(theta)), shape (..., 3)."""
    st = torch.sin(theta)
    return torch.stack([st * torch.cos(phi), st * torch.sin(phi), -torch.cos(theta)], dim=-1)


def theta_x_from_theta_phi(theta: Tensor, phi: Tensor) -> Tensor:
    """theta_x = atan(tan(theta) cos(phi)); NaN for theta >= pi/2."""
    out = torch.atan(torch.tan(theta) * torch.cos(phi))
    return torch.where(theta >= math.pi / 2, torch.full_like(out, float("nan")), out)


def theta_y_from_theta_phi(theta: Tensor, phi: Tensor) -> Tensor:
    """theta_y = atan(tan(theta) sin(phi)); NaN for theta >= pi/2."""
    out = torch.atan(torch.tan(theta) * torch.sin(phi))
    return torch.where(theta >= math.pi / 2, torch.full_like(out, float("nan")), out)


def theta_from_theta_xy(theta_x: Tensor, theta_y: Tensor) -> Tensor:
    """theta = atan(sqrt(tan^2 theta_x + tan^2 theta_y)); NaN when |theta_x| or |theta_y| >= pi/2."""
    out = torch.atan(torch.sqrt(torch.tan(theta_x) ** 2 + torch.tan(theta_y) ** 2))
    bad = (theta_x.abs() >= math.pi / 2) | (theta_y.abs() >= math.pi / 2)
    return torch.where(bad, torch.full_like(out, float("nan")), out)


def phi_from_theta_xy(theta_x: Tensor, theta_y: Tensor) -> Tensor:
    """phi = atan2(tan theta_y, tan theta_x) mapped to [0, 2 pi); NaN when |theta_x| or |theta_y| >= pi/2."""
    out = torch.remainder(torch.atan2(torch.tan(theta_y), torch.tan(theta_x)), 2 * math.pi)
    bad = (theta_x.abs() >= math.pi / 2) | (theta_y.abs() >= math.pi / 2)
    return torch.where(bad, torch.full_like(out, float("nan")), out)


def theta_phi_from_direction(direction: Tensor) -> tuple[Tensor, Tensor]:
    """Inverse of ``direction_from_theta_phi`` for (..., 3) vectors (any norm > 0).

    theta = atan2(hypot(d_x, d_y), -d_z): unlike acos(-d_z) this keeps full precision for near-vertical tracks
    (acos loses ~sqrt(eps) there, 3e-4 rad in float32).
    """
    theta = torch.atan2(torch.hypot(direction[..., 0], direction[..., 1]), -direction[..., 2])
    phi = torch.remainder(torch.atan2(direction[..., 1], direction[..., 0]), 2 * math.pi)
    return theta, phi
