"""Nodule measurement from a segmentation: Lung-RADS axes, volume, type, solid component, failure cases."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from models.measurement import (
    NATIVE_GRID,
    WORKING_GRID,
    NoduleMeasurement,
    evaluate_on_phantoms,
    measure_nodule,
    phantom_with_truth,
)
from screening.types import NoduleType
from synth.phantom import make_phantom

LUNG_HU = -850.0
SOLID_HU = 30.0
GLASS_HU = -600.0
EDGE_MM = 0.6  # partial-volume ramp at edges, as the synthetic renderer draws them

Depth = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # signed depth (mm, > 0 inside) at z, y, x


def scene(
    size_mm: float,
    spacing: tuple[float, float, float],
    objects: list[tuple[Depth, float]],
    *,
    noise_hu: float = 15.0,
    seed: int = 0,
) -> np.ndarray:
    """A cube of lung (HU, z y x) of ``size_mm`` at ``spacing``, with ``objects`` (depth function, HU) painted in
    order with a partial-volume edge, never darkening what is there, plus a little noise."""
    shape = tuple(round(size_mm / s) for s in spacing)
    z, y, x = (
        np.arange(n, dtype=np.float64)[tuple(slice(None) if a == i else None for a in range(3))] * s
        for i, (n, s) in enumerate(zip(shape, spacing, strict=True))
    )
    hu = np.full(shape, LUNG_HU)
    for depth, value in objects:
        weight = np.clip(0.5 + depth(z, y, x) / (2 * EDGE_MM), 0.0, 1.0)
        np.maximum(hu, hu + weight * (value - hu), out=hu)
    hu += np.random.default_rng(seed).normal(0.0, noise_hu, shape)
    return hu.astype(np.float32)


def ball(centre_mm: tuple[float, float, float], radius_mm: float) -> Depth:
    cz, cy, cx = centre_mm
    return lambda z, y, x: radius_mm - np.sqrt((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2)


def ellipsoid(centre_mm: tuple[float, float, float], semi_mm: tuple[float, float, float], angle_deg: float) -> Depth:
    """An ellipsoid with semi-axes (z, y', x'), turned by ``angle_deg`` in the axial plane."""
    cz, cy, cx = centre_mm
    a = math.radians(angle_deg)

    def depth(z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        v, u = (y - cy) * math.cos(a) - (x - cx) * math.sin(a), (y - cy) * math.sin(a) + (x - cx) * math.cos(a)
        rho = np.sqrt(((z - cz) / semi_mm[0]) ** 2 + (v / semi_mm[1]) ** 2 + (u / semi_mm[2]) ** 2)
        return (1.0 - rho) * min(semi_mm)

    return depth


def cylinder_along_x(y_mm: float, z_mm: float, radius_mm: float) -> Depth:
    return lambda z, y, x: radius_mm - np.sqrt((z - z_mm) ** 2 + (y - y_mm) ** 2) + 0 * x


def half_space_below_y(y_mm: float) -> Depth:
    """Chest wall: everything with y < ``y_mm``."""
    return lambda z, y, x: y_mm - y + 0 * z + 0 * x


def voxel(centre_mm: tuple[float, float, float], spacing: tuple[float, float, float]) -> tuple[float, float, float]:
    return tuple(c / s for c, s in zip(centre_mm, spacing, strict=True))  # type: ignore[return-value]


def sphere_volume(diameter_mm: float) -> float:
    return math.pi * diameter_mm**3 / 6


ANISOTROPIC = (2.0, 0.7, 0.7)
CENTRE = (30.3, 30.1, 29.8)


def test_a_sphere_at_anisotropic_spacing_measures_its_diameter_and_volume() -> None:
    hu = scene(60.0, ANISOTROPIC, [(ball(CENTRE, 5.0), SOLID_HU)])
    m = measure_nodule(hu, ANISOTROPIC, voxel(CENTRE, ANISOTROPIC))

    assert m.nodule_type is NoduleType.SOLID and m.solid_component_mm is None
    assert m.mean_diameter_mm == pytest.approx(10.0, abs=0.5)
    assert m.long_axis_mm == pytest.approx(10.0, abs=0.5) and m.short_axis_mm == pytest.approx(10.0, abs=0.5)
    assert m.volume_mm3 == pytest.approx(sphere_volume(10.0), rel=0.10)
    assert np.allclose(np.array(m.center_zyx_vox) * ANISOTROPIC, CENTRE, atol=0.5)
    assert m.axial_slice == round(CENTRE[0] / ANISOTROPIC[0])
    assert not m.juxtapleural


ARCHIVE_GRID = (2.5, 1.4, 1.4)  # the longitudinal evaluation's grid: a small nodule spans two or three slices


def test_a_small_nodule_on_thick_slices_measures_the_same_volume_wherever_the_slices_cut_it() -> None:
    """A 6 mm ball is 23 voxels of 2.5 x 1.4 x 1.4 mm: counting whole voxels moved its volume by 17 % as the slices
    moved across it (-5 % to +13 %); the partial volume of its edge voxels moves it by 1 %, which growth over time
    (a volume doubling time) needs far more than the few percent of bias, the same at every visit."""
    errors = []
    for shift in (0.0, 0.4, 0.8, 1.25, 1.7, 2.1):
        centre = (30.0 + shift, 30.3, 29.9)
        hu = scene(60.0, ARCHIVE_GRID, [(ball(centre, 3.0), SOLID_HU)], seed=int(shift * 10))
        m = measure_nodule(hu, ARCHIVE_GRID, voxel(centre, ARCHIVE_GRID))
        errors.append(m.volume_mm3 / sphere_volume(6.0) - 1)
    assert max(errors) - min(errors) < 0.03, errors
    assert max(abs(e) for e in errors) < 0.08, errors


def test_the_volume_leaves_out_a_vessel_touching_the_nodule() -> None:
    centre = (30.0, 30.3, 29.9)
    alone = measure_nodule(
        scene(60.0, ARCHIVE_GRID, [(ball(centre, 4.0), SOLID_HU)]), ARCHIVE_GRID, voxel(centre, ARCHIVE_GRID)
    )
    touched = measure_nodule(
        scene(60.0, ARCHIVE_GRID, [(ball(centre, 4.0), SOLID_HU), (cylinder_along_x(30.3 + 4.8, 30.0, 1.0), SOLID_HU)]),
        ARCHIVE_GRID,
        voxel(centre, ARCHIVE_GRID),
    )
    assert touched.volume_mm3 == pytest.approx(alone.volume_mm3, rel=0.10)
    assert alone.volume_mm3 == pytest.approx(sphere_volume(8.0), rel=0.08)


def test_the_mask_outlines_the_nodule_on_the_input_grid() -> None:
    hu = scene(60.0, ANISOTROPIC, [(ball(CENTRE, 5.0), SOLID_HU)])
    m = measure_nodule(hu, ANISOTROPIC, voxel(CENTRE, ANISOTROPIC))

    assert m.mask.dtype == bool and m.mask.ndim == 3
    assert m.mask.sum() * np.prod(ANISOTROPIC) == pytest.approx(m.volume_mm3, rel=0.10)
    k, i, j = np.argwhere(m.mask).T + np.array(m.mask_origin_zyx_vox)[:, None]
    assert hu[k, i, j].min() > -500  # every voxel of the outline is nodule, none is lung
    assert np.allclose((np.array([k.mean(), i.mean(), j.mean()])) * ANISOTROPIC, CENTRE, atol=0.7)


def test_an_ellipsoid_gives_its_long_and_short_axes_on_the_axial_plane() -> None:
    spacing = (1.25, 0.7, 0.7)
    hu = scene(60.0, spacing, [(ellipsoid(CENTRE, (4.0, 8.0, 5.0), 30.0), SOLID_HU)])
    m = measure_nodule(hu, spacing, voxel(CENTRE, spacing))

    assert m.long_axis_mm == pytest.approx(16.0, abs=0.6)
    assert m.short_axis_mm == pytest.approx(10.0, abs=0.6)
    assert m.mean_diameter_mm == pytest.approx(13.0, abs=0.5)
    assert m.volume_mm3 == pytest.approx(4 / 3 * math.pi * 4 * 8 * 5, rel=0.10)


def test_a_vessel_touching_a_sphere_is_not_merged_with_it() -> None:
    spacing = (1.25, 0.7, 0.7)
    vessel = cylinder_along_x(CENTRE[1] + 5.5, CENTRE[0], 1.5)  # runs past the sphere, merging into its side
    hu = scene(60.0, spacing, [(vessel, 45.0), (ball(CENTRE, 5.0), SOLID_HU)])
    m = measure_nodule(hu, spacing, voxel(CENTRE, spacing))

    assert m.mean_diameter_mm == pytest.approx(10.0, abs=1.0)
    assert m.long_axis_mm < 11.5  # the vessel runs 60 mm across the patch
    assert m.volume_mm3 == pytest.approx(sphere_volume(10.0), rel=0.2)


def test_a_ground_glass_sphere_is_typed_ground_glass() -> None:
    hu = scene(60.0, ANISOTROPIC, [(ball(CENTRE, 6.0), GLASS_HU)])
    m = measure_nodule(hu, ANISOTROPIC, voxel(CENTRE, ANISOTROPIC))

    assert m.nodule_type is NoduleType.GROUND_GLASS and m.solid_component_mm is None
    assert m.mean_diameter_mm == pytest.approx(12.0, abs=0.6)
    assert m.volume_mm3 == pytest.approx(sphere_volume(12.0), rel=0.10)
    assert m.solid_fraction == 0.0


def test_a_part_solid_nodule_is_typed_part_solid_with_its_cores_diameter() -> None:
    spacing = (1.25, 0.7, 0.7)
    hu = scene(60.0, spacing, [(ball(CENTRE, 7.0), GLASS_HU), (ball(CENTRE, 3.0), SOLID_HU)])
    m = measure_nodule(hu, spacing, voxel(CENTRE, spacing))

    assert m.nodule_type is NoduleType.PART_SOLID
    assert m.mean_diameter_mm == pytest.approx(14.0, abs=0.6)
    assert m.solid_component_mm == pytest.approx(6.0, abs=0.8)
    assert 0.0 < m.solid_fraction < 0.3
    measurement = m.to_measurement()
    assert measurement.nodule_type is NoduleType.PART_SOLID and measurement.solid_component_mm == m.solid_component_mm


def test_measured_as_solid_a_part_solid_nodule_is_its_core() -> None:
    spacing = (1.25, 0.7, 0.7)
    hu = scene(60.0, spacing, [(ball(CENTRE, 7.0), GLASS_HU), (ball(CENTRE, 3.0), SOLID_HU)])
    m = measure_nodule(hu, spacing, voxel(CENTRE, spacing), as_solid=True)

    assert m.nodule_type is NoduleType.SOLID and m.solid_component_mm is None
    assert m.mean_diameter_mm == pytest.approx(6.0, abs=0.8)  # the boundary half-way to soft tissue: the core


def test_a_juxtapleural_nodule_is_cut_from_the_wall_and_measured_whole() -> None:
    spacing = (1.25, 0.7, 0.7)
    wall_y = 20.0
    centre = (CENTRE[0], wall_y + 3.0, CENTRE[2])  # a 12 mm nodule, its centre 3 mm inside the lung
    hu = scene(60.0, spacing, [(half_space_below_y(wall_y), 40.0), (ball(centre, 6.0), SOLID_HU)])
    m = measure_nodule(hu, spacing, voxel(centre, spacing))

    assert m.juxtapleural
    assert m.mean_diameter_mm == pytest.approx(12.0, abs=1.0)
    assert m.volume_mm3 == pytest.approx(sphere_volume(12.0), rel=0.25)


def test_a_centre_a_voxel_off_still_finds_the_nodule() -> None:
    hu = scene(60.0, ANISOTROPIC, [(ball(CENTRE, 4.0), SOLID_HU)])
    k, i, j = voxel(CENTRE, ANISOTROPIC)
    m = measure_nodule(hu, ANISOTROPIC, (k + 1, i - 2, j + 2))

    assert m.mean_diameter_mm == pytest.approx(8.0, abs=0.5)


def test_a_nodule_larger_than_the_first_patch_grows_the_patch() -> None:
    spacing = (2.5, 1.0, 1.0)
    centre = (45.0, 45.2, 44.9)
    hu = scene(90.0, spacing, [(ball(centre, 13.0), SOLID_HU)])
    m = measure_nodule(hu, spacing, voxel(centre, spacing), approx_diameter_mm=4.0)  # the first patch is +-12 mm

    assert m.mean_diameter_mm == pytest.approx(26.0, abs=0.8)


def test_an_empty_centre_is_a_clear_error() -> None:
    hu = scene(60.0, ANISOTROPIC, [(ball(CENTRE, 4.0), SOLID_HU)])
    with pytest.raises(ValueError, match=r"no nodule at centre \(5\.0, 10\.0, 10\.0\): no voxel at or above -72\d HU"):
        measure_nodule(hu, ANISOTROPIC, (5.0, 10.0, 10.0))
    with pytest.raises(ValueError, match="outside the volume"):
        measure_nodule(hu, ANISOTROPIC, (5.0, 10.0, 500.0))
    with pytest.raises(ValueError, match="spacing_zyx_mm"):
        measure_nodule(hu, (0.0, 0.7, 0.7), (5.0, 10.0, 10.0))


def test_a_centre_inside_the_chest_wall_is_a_clear_error() -> None:
    spacing = (1.25, 0.7, 0.7)
    hu = scene(60.0, spacing, [(half_space_below_y(30.0), 40.0)])
    with pytest.raises(ValueError, match="only chest wall or mediastinum"):
        measure_nodule(hu, spacing, voxel((30.0, 10.0, 30.0), spacing))


def test_phantom_with_truth_draws_the_same_phantom_as_make_phantom() -> None:
    a = make_phantom(np.random.default_rng([3, 1]), shape_zyx=(24, 64, 64), n_nodules=2)
    b, details = phantom_with_truth(
        np.random.default_rng([3, 1]), shape_zyx=(24, 64, 64), spacing_zyx_mm=(2.5,) * 3, n_nodules=2
    )

    assert np.array_equal(a.hu, b.hu) and a.nodules == b.nodules
    assert [true.mean_diameter_mm for _, true in details] == [n.diameter_mm for n in a.nodules]


@pytest.mark.parametrize("grid", [WORKING_GRID, NATIVE_GRID], ids=["working grid", "native grid"])
def test_synthetic_phantom_nodules_measure_within_the_target_error(grid: tuple) -> None:
    shape_zyx, spacing = grid
    n = 2 if grid is WORKING_GRID else 1
    report = evaluate_on_phantoms(n, 11, shape_zyx=shape_zyx, spacing_zyx_mm=spacing)

    assert report.n_nodules == 4 * n and report.n_failed == 0
    assert report.mean_diameter_mae_mm(6.0) <= 1.0  # issue 6: MAE of the mean diameter <= 1.0 mm (>= 6 mm)
    assert report.type_accuracy() >= 0.75  # (issue 6 asks 0.9 over many nodules; these are a handful)
    assert report.volume_relative_error() <= 0.25
    assert "mean diameter MAE" in report.summary()


def test_measurements_are_plain_values() -> None:
    hu = scene(60.0, ANISOTROPIC, [(ball(CENTRE, 5.0), SOLID_HU)])
    m = measure_nodule(hu, ANISOTROPIC, voxel(CENTRE, ANISOTROPIC))

    assert isinstance(m, NoduleMeasurement)
    for value in (m.long_axis_mm, m.short_axis_mm, m.mean_diameter_mm, m.volume_mm3):
        assert type(value) is float and value == round(value, 1)
    assert all(type(v) is int for v in m.mask_origin_zyx_vox) and type(m.axial_slice) is int


def spike(centre_mm: tuple[float, float, float], direction: tuple[float, float, float], radius_mm: float) -> Depth:
    """A spicule: a tube tapering from 0.8 mm to 0.35 mm radius, radial from ``centre_mm`` along ``direction``
    (z, y, x), from 0.8 to 1.8 times ``radius_mm`` from the centre (as :mod:`synth.nodules` draws them)."""
    c, d = np.array(centre_mm), np.array(direction) / np.linalg.norm(direction)
    start, length = 0.8 * radius_mm, 1.0 * radius_mm

    def depth(z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        offset = [z - c[0], y - c[1], x - c[2]]
        along = sum(o * v for o, v in zip(offset, d, strict=True))
        t = np.clip((along - start) / length, 0.0, 1.0)
        foot = [c[i] + d[i] * (start + t * length) for i in range(3)]
        distance = np.sqrt((z - foot[0]) ** 2 + (y - foot[1]) ** 2 + (x - foot[2]) ** 2)
        return 0.8 + (0.35 - 0.8) * t - distance

    return depth


SPIKES = ((0.0, 1.0, 0.0), (0.0, -0.6, 0.8), (0.3, 0.2, -1.0), (-0.4, -1.0, -0.3), (0.5, 0.5, 0.7))


@pytest.mark.parametrize("spacing", [(1.25, 0.7, 0.7), (2.5, 1.4, 1.4)])
def test_a_spiculated_nodule_is_told_from_a_smooth_one(spacing: tuple[float, float, float]) -> None:
    smooth = scene(60.0, spacing, [(ball(CENTRE, 5.0), SOLID_HU)])
    spiky = scene(60.0, spacing, [*((spike(CENTRE, d, 5.0), SOLID_HU) for d in SPIKES), (ball(CENTRE, 5.0), SOLID_HU)])
    plain = measure_nodule(smooth, spacing, voxel(CENTRE, spacing))
    spiculated = measure_nodule(spiky, spacing, voxel(CENTRE, spacing))

    assert not plain.spiculated and plain.spiculation < 0.3
    assert spiculated.spiculated and spiculated.spiculation > plain.spiculation + 0.3
    assert len(spiculated.spicule_lengths_mm) >= 2
    assert spiculated.to_measurement().spiculated and not spiculated.to_measurement(spiculated=False).spiculated
    assert spiculated.mean_diameter_mm == pytest.approx(10.0, abs=1.0)  # the spicules are not measured as nodule


def test_a_vessel_running_past_a_nodule_is_no_spicule() -> None:
    spacing = (1.25, 0.7, 0.7)
    vessel = cylinder_along_x(CENTRE[1] + 5.5, CENTRE[0], 1.0)
    hu = scene(60.0, spacing, [(vessel, 45.0), (ball(CENTRE, 5.0), SOLID_HU)])
    m = measure_nodule(hu, spacing, voxel(CENTRE, spacing))

    assert not m.spiculated


def test_spiculation_on_phantoms_separates_spiculated_nodules() -> None:
    figures = evaluate_on_phantoms(4, 11, shape_zyx=(100, 256, 256), spacing_zyx_mm=(2.5, 1.4, 1.4))
    assert "spiculation" in figures.spiculation_summary()
    band = figures.spiculation_figures(8.0)
    assert band["spiculated"] >= 2 and band["auc"] > 0.8 and band["specificity"] >= 0.9


def test_solid_components_at_screening_slices_are_not_measured_small() -> None:
    """The core is sampled by 2.5 mm slices like the whole nodule and gets the same correction; a gentle opening
    (at most 1 mm) keeps its rim. Before both, cores of part-solid phantom nodules measured about 0.8 mm small,
    which moved nodules with a component just over 6 or 8 mm down a Lung-RADS category."""
    spacing = (2.5, 1.4, 1.4)
    errors = []
    for i in range(12):
        phantom, details = phantom_with_truth(
            np.random.default_rng([654321, i]), shape_zyx=(100, 256, 256), spacing_zyx_mm=spacing, n_nodules=6
        )
        for truth, (_, true) in zip(phantom.nodules, details, strict=True):
            if true.solid_component_mm is None:
                continue
            m = measure_nodule(phantom.hu, spacing, truth.center_zyx_vox)
            if m.nodule_type is NoduleType.PART_SOLID and m.solid_component_mm:
                errors.append(m.solid_component_mm - true.solid_component_mm)

    assert len(errors) >= 10
    assert abs(float(np.mean(errors))) < 0.4, errors  # was -0.8 mm
    assert float(np.median(np.abs(errors))) < 0.6, errors
