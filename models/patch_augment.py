"""Training views of 3-D context patches, shared by the candidate classifier's and the spiculation model's training.

Patches are stored larger than the model's input (C voxels per side against the model's ``size``) so that a view
can be scaled and shifted without running out of data; :func:`augment_patches` draws random views and
:func:`center_crop` the un-augmented one.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from models.classifier import window


def augment_patches(
    patches_hu: torch.Tensor,
    gen: torch.Generator,
    *,
    size: int,
    window_hu: tuple[float, float],
    max_shift_vox: float,
    max_noise_hu: float,
) -> torch.Tensor:
    """Random training views (B, 1, size, size, size) in [0, 1] of context patches (B, C, C, C) in HU.

    Flips on every axis, 90-degree rotations in the axial plane, isotropic scaling by 0.9..1.1 and shifts of up
    to ``max_shift_vox`` voxels (one trilinear resampling), then HU offset (sd 20 HU), contrast (0.95..1.05) and
    added noise (sd 0..``max_noise_hu`` HU) before windowing to ``window_hu``.
    """
    b, c = patches_hu.shape[0], patches_hu.shape[-1]
    x = patches_hu.float()[:, None]
    # One resampling: theta maps output (x, y, z) to input coordinates = scale * flips @ in-plane rotation.
    turns = torch.randint(0, 4, (b,), generator=gen).double() * (torch.pi / 2)
    cos, sin = torch.cos(turns).round().float(), torch.sin(turns).round().float()
    rotation = torch.zeros(b, 3, 3)
    rotation[:, 0, 0], rotation[:, 0, 1], rotation[:, 1, 0], rotation[:, 1, 1] = cos, -sin, sin, cos
    rotation[:, 2, 2] = 1.0  # theta's rows are (x, y, z): the axial plane is x-y
    flips = torch.where(torch.rand(b, 3, generator=gen) < 0.5, -1.0, 1.0)
    scale = (0.9 + 0.2 * torch.rand(b, generator=gen)) * size / c
    theta = torch.zeros(b, 3, 4)
    theta[:, :, :3] = scale[:, None, None] * flips[:, :, None] * rotation
    theta[:, :, 3] = (torch.rand(b, 3, generator=gen) * 2 - 1) * max_shift_vox * (2 / c)
    grid = F.affine_grid(theta, [b, 1, size, size, size], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    offset = torch.randn(b, 1, 1, 1, 1, generator=gen) * 20.0
    contrast = 0.95 + 0.1 * torch.rand(b, 1, 1, 1, 1, generator=gen)
    noise_sd = max_noise_hu * torch.rand(b, 1, 1, 1, 1, generator=gen)
    x = (x + 1000.0) * contrast - 1000.0 + offset + torch.randn(x.shape, generator=gen) * noise_sd
    return window(x, window_hu)


def center_crop(patches_hu: np.ndarray | torch.Tensor, *, size: int, window_hu: tuple[float, float]) -> torch.Tensor:
    """The un-augmented model input (B, 1, size, size, size) of context patches: the centre crop, windowed."""
    x = torch.as_tensor(patches_hu).float()
    lo = (x.shape[-1] - size) // 2
    return window(x[:, lo : lo + size, lo : lo + size, lo : lo + size], window_hu)[:, None]
