"""Matching nodules across two studies: alignment, gate, Hungarian assignment (REFERENCE.md section 3)."""

from __future__ import annotations

import pytest

from screening import LocatedNodule, MatchResult, gate_mm, match_nodules

SHIFT = (5.0, -3.0, 20.0)


def shifted(x: float, y: float, z: float) -> tuple[float, float, float]:
    return (x + SHIFT[0], y + SHIFT[1], z + SHIFT[2])


@pytest.mark.parametrize(
    ("a", "b", "gate"),
    [(4.0, 4.0, 10.0), (6.0, 3.0, 10.0), (8.0, 5.0, 12.0), (5.0, 10.0, 15.0), (30.0, 12.0, 15.0)],
)
def test_gate_scales_with_the_larger_diameter(a: float, b: float, gate: float) -> None:
    assert gate_mm(a, b) == pytest.approx(gate)


def test_shifted_study_with_new_resolved_and_distractor() -> None:
    prior = [
        LocatedNodule((-80.0, 20.0, -150.0), 6.0),  # 0: followed (moved 2 mm)
        LocatedNodule((70.0, -10.0, -120.0), 9.0),  # 1: followed
        LocatedNodule((40.0, 40.0, -200.0), 5.0),  # 2: resolved
        LocatedNodule((-30.0, -30.0, -100.0), 4.0),  # 3: resolved; a current nodule lies 11 mm away (gate 10)
    ]
    current = [
        LocatedNodule(shifted(70.5, -10.0, -119.0), 10.0),  # 0 -> prior 1
        LocatedNodule(shifted(-30.0, -19.0, -100.0), 4.0),  # 1: distractor, 11 mm from prior 3: new
        LocatedNodule(shifted(-80.0, 22.0, -150.0), 6.5),  # 2 -> prior 0
        LocatedNodule(shifted(0.0, 60.0, -180.0), 4.0),  # 3: new
    ]
    result = match_nodules(current, prior, translation_mm=SHIFT)
    assert [(pair.current_index, pair.prior_index) for pair in result.pairs] == [(0, 1), (2, 0)]
    assert result.pairs[0].distance_mm == pytest.approx((0.5**2 + 1.0**2) ** 0.5)
    assert result.pairs[0].gate_mm == pytest.approx(15.0)
    assert result.pairs[1].distance_mm == pytest.approx(2.0)
    assert result.new == (1, 3)
    assert result.resolved == (2, 3)


def test_without_alignment_a_shifted_study_matches_nothing() -> None:
    prior = [LocatedNodule((0.0, 0.0, 0.0), 6.0)]
    current = [LocatedNodule(shifted(0.0, 0.0, 0.0), 6.0)]
    assert match_nodules(current, prior) == MatchResult(pairs=(), new=(0,), resolved=(0,))
    assert len(match_nodules(current, prior, translation_mm=SHIFT).pairs) == 1


def test_gate_edge_is_inclusive() -> None:
    prior = [LocatedNodule((0.0, 0.0, 0.0), 4.0), LocatedNodule((100.0, 0.0, 0.0), 4.0)]
    current = [LocatedNodule((10.0, 0.0, 0.0), 4.0), LocatedNodule((110.01, 0.0, 0.0), 4.0)]
    result = match_nodules(current, prior)
    assert [(pair.current_index, pair.prior_index) for pair in result.pairs] == [(0, 0)]
    assert result.new == (1,)
    assert result.resolved == (1,)


def test_assignment_is_global_not_greedy() -> None:
    # Greedy nearest-first would pair current 0 with prior 0 (1 mm) and leave current 1 unmatched;
    # the Hungarian assignment keeps both pairs within the 10 mm gate.
    prior = [LocatedNodule((4.0, 0.0, 0.0), 4.0), LocatedNodule((14.0, 0.0, 0.0), 4.0)]
    current = [LocatedNodule((5.0, 0.0, 0.0), 4.0), LocatedNodule((-5.0, 0.0, 0.0), 4.0)]
    result = match_nodules(current, prior)
    assert [(pair.current_index, pair.prior_index) for pair in result.pairs] == [(0, 1), (1, 0)]
    assert result.new == () and result.resolved == ()


def test_closest_of_two_candidates_wins() -> None:
    prior = [LocatedNodule((0.0, 0.0, 0.0), 5.0), LocatedNodule((6.0, 0.0, 0.0), 5.0)]
    current = [LocatedNodule((5.0, 0.0, 0.0), 5.0)]
    result = match_nodules(current, prior)
    assert [(pair.current_index, pair.prior_index) for pair in result.pairs] == [(0, 1)]
    assert result.resolved == (0,)


@pytest.mark.parametrize(
    ("current", "prior", "new", "resolved"),
    [
        ([], [], (), ()),
        ([LocatedNodule((0.0, 0.0, 0.0), 5.0)], [], (0,), ()),
        ([], [LocatedNodule((0.0, 0.0, 0.0), 5.0), LocatedNodule((50.0, 0.0, 0.0), 5.0)], (), (0, 1)),
    ],
    ids=["both-empty", "first-study-nodule", "all-resolved"],
)
def test_empty_sides(
    current: list[LocatedNodule], prior: list[LocatedNodule], new: tuple[int, ...], resolved: tuple[int, ...]
) -> None:
    assert match_nodules(current, prior) == MatchResult(pairs=(), new=new, resolved=resolved)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: LocatedNodule((0.0, 0.0), 5.0), ValueError, r"centre_mm must have 3 values \(x, y, z\), got 2"),
        (lambda: LocatedNodule((0.0, float("nan"), 0.0), 5.0), ValueError, r"centre_mm\[1\] must be finite"),
        (lambda: LocatedNodule("0,0,0", 5.0), TypeError, "centre_mm must be a sequence of 3 numbers"),
        (lambda: LocatedNodule((0.0, 0.0, 0.0), 0.0), ValueError, "diameter_mm must be > 0, got 0.0"),
        (lambda: gate_mm(-1.0, 5.0), ValueError, "diameter_a_mm must be > 0, got -1.0"),
        (
            lambda: match_nodules([LocatedNodule((0.0, 0.0, 0.0), 5.0)], [], translation_mm=(1.0, 2.0)),
            ValueError,
            "translation_mm must have 3 values",
        ),
        (lambda: match_nodules([((0.0, 0.0, 0.0), 5.0)], []), TypeError, r"current\[0\] must be a LocatedNodule"),
    ],
)
def test_validation(call: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        call()  # type: ignore[operator]
