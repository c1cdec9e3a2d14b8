"""Look-at cameras around the origin (y up; azimuth 0 = front, on +z; positive azimuth turns toward +x) with
perspective or orthographic projection, as OpenGL matrices."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

# SYNCSDE.md §6.5: 8 cameras at elevation 0, then two at elevation 30 (front and back); view 0 (azimuth −180) is free
PAPER_VIEWS = [(0, a) for a in (-180, -135, -90, -45, 0, 45, 90, 135)] + [(30, 0), (30, 180)]


@dataclass(frozen=True)
class Camera:
    elevation: float  # degrees
    azimuth: float  # degrees
    distance: float = 2.0
    fov: float = 60.0  # degrees (perspective); ortho_scale used when fov is 0
    ortho_scale: float = 1.2

    @property
    def eye(self) -> Tensor:
        e, a = math.radians(self.elevation), math.radians(self.azimuth)
        return self.distance * torch.tensor([math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)])

    def view_matrix(self) -> Tensor:
        eye = self.eye
        forward = -eye / eye.norm()
        up = torch.tensor([0.0, 1.0, 0.0])
        if abs(float(forward @ up)) > 0.999:
            up = torch.tensor([0.0, 0.0, -1.0])
        right = torch.linalg.cross(forward, up)
        right = right / right.norm()
        true_up = torch.linalg.cross(right, forward)
        m = torch.eye(4)
        m[0, :3], m[1, :3], m[2, :3] = right, true_up, -forward
        m[:3, 3] = -m[:3, :3] @ eye
        return m

    def projection_matrix(self, near: float = 0.1, far: float = 10.0) -> Tensor:
        p = torch.zeros(4, 4)
        if self.fov > 0:
            f = 1 / math.tan(math.radians(self.fov) / 2)
            p[0, 0], p[1, 1] = f, f
            p[2, 2], p[2, 3] = (far + near) / (near - far), 2 * far * near / (near - far)
            p[3, 2] = -1
        else:
            p[0, 0] = p[1, 1] = 1 / self.ortho_scale
            p[2, 2], p[2, 3], p[3, 3] = -2 / (far - near), -(far + near) / (far - near), 1
        return p

    def project(self, points: Tensor, size: int) -> Tensor:
        """World points (N, 3) → pixel coordinates (N, 2) as (row, column), origin at the top-left pixel corner."""
        h = torch.cat([points, torch.ones(len(points), 1)], 1) @ (self.projection_matrix() @ self.view_matrix()).T
        ndc = h[:, :2] / h[:, 3:4]
        return torch.stack([(1 - ndc[:, 1]) / 2 * size, (ndc[:, 0] + 1) / 2 * size], 1)
