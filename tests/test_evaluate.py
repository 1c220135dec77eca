"""``nightscan models evaluate|show|register|train`` end to end on a tiny synthetic archive (file:// storage)."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from models.candidates import Candidate
from models.evaluate import CandidateClass, RankBy, evaluate_detector, image_keys, measure_with
from models.registry import REGISTRY_PATH, get_entry, load_detector, weights_path
from nightscan.cli import RANK_BY_CHOICES, main
from nightscan.storage import open_storage
from synth.archive import ArchiveOptions, GroundTruth, generate_archive, read_ground_truth
from synth.messy import Mess

REF = "nodule-detector@0.1.0"
CLASSIFIER_REF = "nodule-classifier@0.1.0"
SHAPE, SPACING = "32x96x96", "5x3.5x3.5"  # 160 x 336 x 336 mm: fast, and wide enough for the lungs
SEED = 4242  # an archive seed; the detector was trained on synth.phantom seeds, never on archives


def is_png(path: Path) -> bool:
    """A PNG signature, an IHDR with a positive size, and the IEND chunk at the end."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR" or not data.endswith(b"IEND\xaeB`\x82"):
        return False
    width, height = struct.unpack(">II", data[16:24])
    return width > 0 and height > 0


def strict_json(path: Path) -> dict:
    def refuse(value: str) -> None:
        raise ValueError(f"non-standard JSON constant {value}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    """`nightscan models evaluate` with the shipped detector on a freshly generated 2-patient archive."""
    root = tmp_path_factory.mktemp("cli-eval")
    result = CliRunner().invoke(
        main,
        [
            *f"models evaluate {REF} --generate 2 --seed {SEED} --shape {SHAPE} --spacing {SPACING}".split(),
            *("--archive-dir", str(root / "archive"), "--out", str(root / "out"), "--device", "cpu"),
        ],
        catch_exceptions=False,
    )
    return result, root


def test_cli_evaluation_report_and_plots(cli_run: tuple[object, Path]) -> None:
    result, root = cli_run
    assert result.exit_code == 0, result.output
    assert "CPM, nodules >= 4 mm" in result.output and "held-out archive" in result.output
    out = root / "out"
    report = strict_json(out / "report.json")
    truth = read_ground_truth(out / "truth.json")
    assert truth.seed == SEED and len(truth.studies) == 2

    assert report["model"]["ref"] == REF and report["model"]["sha256"] == get_entry(REF).sha256
    assert report["truth"]["n_studies"] == 2
    assert report["truth"]["n_nodules"] == sum(len(s.nodules) for s in truth.studies) >= 1
    for size in ("ge_4mm", "ge_6mm"):
        det = report["detection"][size]
        assert set(det["froc"]) == {
            "sens@0.125fp",
            "sens@0.25fp",
            "sens@0.5fp",
            "sens@1fp",
            "sens@2fp",
            "sens@4fp",
            "sens@8fp",
            "cpm",
        }
        if det["n_nodules"]:
            values = [*det["froc"].values(), det["sensitivity_at_1fp"], det["at_threshold"]["sensitivity"]]
            assert all(0.0 <= v <= 1.0 for v in values)
            sens = [det["froc"][f"sens@{r}fp"] for r in ("0.125", "0.25", "0.5", "1", "2", "4", "8")]
            assert sens == sorted(sens)  # the FROC never goes down
            assert det["cpm"] == pytest.approx(np.mean(sens))
    assert report["detection"]["fp_per_scan_at_threshold"] >= 0
    by_size = report["detection"]["sensitivity_by_size_at_threshold"]
    assert list(by_size) == ["<4", "4-6", "6-8", "8-15", ">=15"]
    assert sum(b["n"] for b in by_size.values()) == report["truth"]["n_nodules"]
    mae = report["diameter"]["mae_mm_ge_4mm"]
    assert mae is None or 0.0 <= mae < 30.0
    assert report["classification"] is None
    finding_type = report["finding_type"]  # measured by default: the type the workers report
    assert finding_type is None or (
        finding_type["n"] == finding_type["sources"]["measurement"] and 0.0 <= finding_type["accuracy"] <= 1.0
    )
    assert 0 < report["timing"]["seconds_per_study"] < 120
    assert len(report["studies"]) == 2 and all(s["n_candidates"] >= 0 for s in report["studies"])

    assert {"froc", "training_curves"} <= set(report["plots"])
    for name in report["plots"].values():
        assert is_png(out / name), name
    assert report["detection"]["ranked_by"] == "detector" and report["classifier"] is None


def test_cli_evaluation_with_the_classifier_ranked_by_product(cli_run: tuple[object, Path]) -> None:
    _, root = cli_run  # the archive and truth the first run generated
    out = root / "out-classifier"
    result = CliRunner().invoke(
        main,
        [
            *("models", "evaluate", REF, "--archive", (root / "archive").resolve().as_uri()),
            *("--truth", str(root / "out" / "truth.json"), "--out", str(out), "--device", "cpu"),
            *("--classifier", CLASSIFIER_REF, "--rank-by", "product"),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "nodule vs not ROC AUC" in result.output and CLASSIFIER_REF in result.output
    report = strict_json(out / "report.json")
    classifier = get_entry(CLASSIFIER_REF)
    assert report["classifier"] == {
        "ref": CLASSIFIER_REF,
        "sha256": classifier.sha256,
        "threshold": classifier.score_threshold,
    }
    assert report["detection"]["ranked_by"] == "product"
    assert report["detection"]["ranking_score"] == "detector score x classifier nodule probability"
    cls = report["classification"]
    n_kept = sum(s["n_candidates_at_threshold"] for s in report["studies"])
    if n_kept:  # the classifier saw every candidate kept at the detector threshold
        assert cls["candidates"] == n_kept and cls["nodule_vs_not"]["threshold"] == classifier.score_threshold
    for size in ("ge_4mm", "ge_6mm"):
        assert 0.0 <= report["detection"][size]["cpm"] <= 1.0


def test_rank_by_needs_a_classifier(tmp_path: Path) -> None:
    args = ["models", "evaluate", REF, "--generate", "1", "--out", str(tmp_path), "--rank-by", "product"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "--classifier" in result.output
    unknown = CliRunner().invoke(main, [*args, "--classifier", "nodule-classifier@0.0.9"])
    assert unknown.exit_code == 2 and "nodule-classifier@0.0.9" in unknown.output  # before generating anything
    assert not (tmp_path / "truth.json").exists()
    assert tuple(r.value for r in RankBy) == RANK_BY_CHOICES  # the CLI's choices, without importing torch


class FakeDetector:
    """Returns, for the k-th study it sees, a candidate exactly at each true nodule (score 0.9), one false
    positive in a corner above the threshold (0.8) and one below it (0.1)."""

    score_threshold = 0.5
    name, version, sha256 = "fake", "0", "0" * 64

    def __init__(self, truth: GroundTruth) -> None:
        self.studies = iter(truth.studies)

    def detect(
        self, hu: np.ndarray, spacing_zyx_mm: tuple[float, float, float], *, score_threshold: float | None = None
    ) -> list[Candidate]:
        study = next(self.studies)
        assert hu.shape == study.shape_zyx
        nz, ny, nx = hu.shape
        found = [Candidate(n.center_zyx_vox, (n.diameter_mm,) * 3, n.diameter_mm, 0.9) for n in study.nodules]
        return [
            *found,
            Candidate((1.0, 1.0, 1.0), (5, 5, 5), 5.0, 0.8),
            Candidate((nz - 2.0, ny - 2.0, nx - 2.0), (5, 5, 5), 5.0, 0.1),
        ]


def classify(volume: object, candidates: Sequence[Candidate]) -> list[CandidateClass]:
    """Nodule probability 0.95 and type "solid" for the candidates on nodules, 0.3 and no type for the others."""
    return [CandidateClass(0.95, "solid") if c.score == 0.9 else CandidateClass(0.3, None) for c in candidates]


class Measured:
    def __init__(self, mean_diameter_mm: float) -> None:
        self.mean_diameter_mm = mean_diameter_mm


def measure_plus_half_mm(hu: np.ndarray, spacing: tuple, centre: tuple, *, approx_diameter_mm: float) -> Measured:
    """Like models.measurement.measure_nodule: 0.5 mm more than the detector's diameter, none above 15 mm."""
    if approx_diameter_mm > 15.0:
        raise ValueError(f"no nodule at {centre}")
    return Measured(approx_diameter_mm + 0.5)


def test_matching_on_a_hand_made_case(tmp_path: Path) -> None:
    storage = open_storage((tmp_path / "archive").as_uri())
    # Localizer, report, duplicate and truncated objects too: only the "image" objects are the series.
    mess = Mess(localizer=True, structured_report=True, duplicate_upload=True, truncated_file=True)
    options = ArchiveOptions(shape_zyx=(32, 96, 96), spacing_zyx_mm=(5.0, 3.5, 3.5), mess=mess)
    truth = generate_archive(storage.put, n_patients=2, seed=SEED, options=options)
    assert all(len(image_keys(s)) == 32 < len(s.objects) for s in truth.studies)
    nodules = [n for s in truth.studies for n in s.nodules]
    assert nodules and all(n.diameter_mm >= 4.0 for n in nodules), [n.diameter_mm for n in nodules]

    report = evaluate_detector(
        "fake@0",
        storage.url,
        truth,
        tmp_path / "out",
        detector=FakeDetector(truth),
        classify=classify,
        measure=measure_with(measure_plus_half_mm),
        progress=False,
    )
    det = report["detection"]["ge_4mm"]
    # Per scan: every nodule at 0.9, false positives 0.8 and 0.1. FROC corners (0, 0), (0, 1), (1, 1), (2, 1):
    # sensitivity 1 at every LUNA16 rate, CPM 1. At threshold 0.5: all found, 1 false positive per scan.
    assert det["n_nodules"] == len(nodules)
    assert det["cpm"] == pytest.approx(1.0) and det["sensitivity_at_1fp"] == pytest.approx(1.0)
    assert det["at_threshold"] == pytest.approx({"sensitivity": 1.0, "fp_per_scan": 1.0})
    assert det["curve"]["fp_per_scan"] == pytest.approx([0, 0, 1, 2])
    assert report["detection"]["fp_per_scan_at_threshold"] == pytest.approx(1.0)
    for study in report["studies"]:
        assert study["false_positives_at_threshold"] == 1 and study["n_candidates"] == len(study["nodules"]) + 2
        assert all(n["detected_at_threshold"] and n["distance_mm"] < 0.05 for n in study["nodules"])
    # The fake detector's diameters are the true ones; measure adds 0.5 mm, and fails above 15 mm.
    assert report["diameter"]["source"] == "measure"
    assert report["diameter"]["measure_failures"] == sum(n.diameter_mm > 15.0 for n in nodules)
    if any(n.diameter_mm <= 15.0 for n in nodules):
        assert report["diameter"]["mae_mm_ge_4mm"] == pytest.approx(0.5)

    cls = report["classification"]
    # Kept candidates (score >= 0.5): the nodules (probability 0.95) and one false positive per scan (0.3).
    assert cls["candidates"] == len(nodules) + 2
    nvn = cls["nodule_vs_not"]
    assert nvn["roc_auc"] == pytest.approx(1.0) and nvn["accuracy"] == pytest.approx(1.0)
    assert (nvn["tp"], nvn["fp"], nvn["fn"], nvn["tn"]) == (len(nodules), 0, 0, 2)
    assert cls["detection_with_classifier"]["ge_4mm"]["cpm"] == pytest.approx(1.0)
    # Every nodule is called "solid": type accuracy = share of solid nodules; all counts in column 0.
    kinds = [n.kind for n in nodules]
    assert cls["type"]["accuracy"] == pytest.approx(kinds.count("solid") / len(kinds))
    labels = cls["type"]["labels"]
    assert cls["type"]["confusion_matrix"] == [[kinds.count(k), 0, 0] for k in labels]

    written = json.loads((tmp_path / "out" / "report.json").read_text())
    assert written["detection"]["ge_4mm"]["cpm"] == pytest.approx(1.0)
    assert {"froc", "diameter", "roc", "confusion_nodule", "confusion_type"} <= set(report["plots"])
    for name in report["plots"].values():
        assert is_png(tmp_path / "out" / name), name


class Outranked(FakeDetector):
    """Per study: each true nodule at score 0.6, false positives A at 0.9 and B at 0.8 (above the threshold 0.5)
    and C at 0.1, in three corners."""

    def detect(self, hu: np.ndarray, spacing_zyx_mm: tuple, *, score_threshold: float | None = None) -> list:
        study = next(self.studies)
        nz, ny, nx = hu.shape
        return [
            *(Candidate(n.center_zyx_vox, (n.diameter_mm,) * 3, n.diameter_mm, 0.6) for n in study.nodules),
            Candidate((1.0, 1.0, 1.0), (5, 5, 5), 5.0, 0.9),
            Candidate((nz - 2.0, ny - 2.0, nx - 2.0), (5, 5, 5), 5.0, 0.8),
            Candidate((1.0, ny - 2.0, 1.0), (5, 5, 5), 5.0, 0.1),
        ]


# Nodule probability by detector score: nodules 0.9, A 0.7, B 0.2, C 0.3. Products: nodules 0.54, A 0.63,
# B 0.16, C 0.03. So two false positives per scan outrank the nodules by the detector's score, none by the
# probability, one (A) by the product.
PROBABILITY = {0.6: 0.9, 0.9: 0.7, 0.8: 0.2, 0.1: 0.3}


def classify_outranked(volume: object, candidates: Sequence[Candidate]) -> list[CandidateClass]:
    return [CandidateClass(PROBABILITY[c.score], "solid") for c in candidates]


def test_candidates_ranked_by_detector_classifier_or_product(tmp_path: Path) -> None:
    storage = open_storage((tmp_path / "archive").as_uri())
    truth = generate_archive(
        storage.put, n_patients=2, seed=SEED, shape_zyx=(32, 96, 96), spacing_zyx_mm=(5.0, 3.5, 3.5)
    )
    nodules = [n for s in truth.studies for n in s.nodules]
    assert nodules and all(n.diameter_mm >= 4.0 for n in nodules), [n.diameter_mm for n in nodules]
    seen: dict[str, int] = {}

    def counting(volume: object, candidates: Sequence[Candidate]) -> list[CandidateClass]:
        seen[rank_by] = seen.get(rank_by, 0) + len(candidates)
        return classify_outranked(volume, candidates)

    # The sensitivity reaches 1 after 2, 0 and 1 false positives per scan: CPM = share of the LUNA16 rates
    # (1/8 .. 8) at or above that, i.e. 3/7, 7/7 and 4/7.
    expected_cpm = {"detector": 3 / 7, "classifier": 1.0, "product": 4 / 7}
    reports = {}
    for rank_by in expected_cpm:
        reports[rank_by] = evaluate_detector(
            "outranked@0",
            storage.url,
            truth,
            tmp_path / rank_by,
            detector=Outranked(truth),
            classify=counting,
            rank_by=rank_by,
            classifier_threshold=0.5,
            progress=False,
        )
    for rank_by, cpm in expected_cpm.items():
        report = reports[rank_by]
        assert report["detection"]["ranked_by"] == rank_by
        assert report["detection"]["ge_4mm"]["cpm"] == pytest.approx(cpm), rank_by
        assert report["detection"]["ge_4mm"]["n_nodules"] == len(nodules)
        # The operating point stays the detector's at its registry threshold: every nodule, A and B.
        assert report["detection"]["ge_4mm"]["at_threshold"] == pytest.approx({"sensitivity": 1.0, "fp_per_scan": 2.0})
        # Nodule vs not over the candidates kept at the threshold (C excluded), whatever the ranking.
        nvn = report["classification"]["nodule_vs_not"]
        assert (nvn["tp"], nvn["fp"], nvn["fn"], nvn["tn"]) == (len(nodules), 2, 0, 2)
        assert strict_json(tmp_path / rank_by / "report.json")["detection"]["ranked_by"] == rank_by
    # Ranked by the detector, the classifier sees the kept candidates only; otherwise every candidate, C too.
    assert seen == {"detector": len(nodules) + 4, "classifier": len(nodules) + 6, "product": len(nodules) + 6}


def test_ranking_by_the_classifier_needs_a_classify_step(tmp_path: Path) -> None:
    storage = open_storage((tmp_path / "archive").as_uri())
    truth = generate_archive(storage.put, n_patients=1, seed=SEED, shape_zyx=(8, 32, 32))
    with pytest.raises(ValueError, match="'product' needs a classify step"):
        evaluate_detector("x@0", storage.url, truth, tmp_path / "out", detector=Outranked(truth), rank_by="product")
    with pytest.raises(ValueError, match="'volume'"):
        evaluate_detector("x@0", storage.url, truth, tmp_path / "out", detector=Outranked(truth), rank_by="volume")


def test_a_candidate_far_from_every_nodule_is_a_false_positive(tmp_path: Path) -> None:
    storage = open_storage((tmp_path / "archive").as_uri())
    truth = generate_archive(
        storage.put, n_patients=1, seed=SEED, shape_zyx=(32, 96, 96), spacing_zyx_mm=(5.0, 3.5, 3.5)
    )

    class Far(FakeDetector):
        def detect(self, hu: np.ndarray, spacing_zyx_mm: tuple, *, score_threshold: float | None = None) -> list:
            study = next(self.studies)
            # Each candidate one nodule diameter (2 radii) off its nodule along x: a miss and a false positive.
            return [
                Candidate(
                    (n.center_zyx_vox[0], n.center_zyx_vox[1], n.center_zyx_vox[2] + n.diameter_mm / 3.5),
                    (5, 5, 5),
                    5.0,
                    0.9,
                )
                for n in study.nodules
            ]

    report = evaluate_detector("far@0", storage.url, truth, tmp_path / "out", detector=Far(truth), progress=False)
    n = len(truth.studies[0].nodules)
    assert report["detection"]["ge_4mm"]["at_threshold"] == pytest.approx({"sensitivity": 0.0, "fp_per_scan": n})
    assert report["detection"]["ge_4mm"]["cpm"] == 0.0
    assert math.isnan(report["diameter"]["mae_mm_ge_4mm"])
    assert strict_json(tmp_path / "out" / "report.json")["diameter"]["mae_mm_ge_4mm"] is None


def test_register_show_and_refuse_a_duplicate(tmp_path: Path) -> None:
    shipped = get_entry(REF)
    fields = {k: v for k, v in shipped.to_dict().items() if k not in ("sha256", "weights")}
    fields["metrics"] = {"note": "test copy"}
    entry_file = tmp_path / "entry.json"
    entry_file.write_text(json.dumps(fields))
    registry = tmp_path / "reg" / "registry.json"
    registry.parent.mkdir()
    args = ["models", "register", str(weights_path(shipped)), "--entry", str(entry_file), "--registry", str(registry)]
    runner = CliRunner()

    first = runner.invoke(main, [*args, "--version", "9.0.0"])
    assert first.exit_code == 0, first.output
    assert "registered nodule-detector@9.0.0" in first.output
    new = get_entry("nodule-detector@9.0.0", registry)
    assert new.sha256 == shipped.sha256 and new.weights == "weights/nodule-detector-9.0.0.pt"
    assert load_detector("nodule-detector@9.0.0", registry_path=registry).version == "9.0.0"  # hash verified

    shown = runner.invoke(main, ["models", "show", "nodule-detector@9.0.0", "--registry", str(registry)])
    assert shown.exit_code == 0, shown.output
    assert shipped.sha256 in shown.output and "small_faster_rcnn_2p5d" in shown.output and "test copy" in shown.output

    again = runner.invoke(main, [*args, "--version", "9.0.0"])
    assert again.exit_code != 0 and "already registered" in again.output
    unknown = runner.invoke(main, ["models", "show", "nodule-detector@0.0.9", "--registry", str(registry)])
    assert unknown.exit_code != 0 and "0.0.9" in unknown.output


def test_train_forwards_its_arguments_to_the_training_scripts() -> None:
    runner = CliRunner()
    group = runner.invoke(main, ["models", "train", "--help"])
    assert group.exit_code == 0 and "detector" in group.output and "classifier" in group.output
    detector = runner.invoke(main, ["models", "train", "detector", "--help"])
    # argparse's help of models.train, under the command's name; nothing trained
    assert detector.exit_code == 0, detector.output
    assert "usage: nightscan models train detector" in detector.output
    assert all(option in detector.output for option in ("--out", "--seed", "--version", "--n-train-volumes"))
    classifier = runner.invoke(main, ["models", "train", "classifier", "--help"])
    assert classifier.exit_code == 0 and "--patch-cache" in classifier.output
    unknown = runner.invoke(main, ["models", "train", "detector", "--no-such-option"])
    assert unknown.exit_code == 2 and "unrecognized arguments: --no-such-option" in unknown.output


def test_evaluate_needs_an_archive_or_generate(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["models", "evaluate", REF, "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--generate" in result.output


def test_cli_evaluation_recorded_in_the_registry_and_model_card(cli_run: tuple[object, Path], tmp_path: Path) -> None:
    _, root = cli_run
    registry = tmp_path / "registry.json"
    registry.write_text(REGISTRY_PATH.read_text())
    (tmp_path / "weights").symlink_to(weights_path(get_entry(REF)).parent)
    result = CliRunner().invoke(
        main,
        [
            *("models", "evaluate", REF, "--archive", (root / "archive").resolve().as_uri()),
            *("--truth", str(root / "out" / "truth.json"), "--out", str(tmp_path / "out"), "--device", "cpu"),
            *("--registry", str(registry), "--record", "held-out archive"),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    report = strict_json(tmp_path / "out" / "report.json")
    recorded = get_entry(REF, registry).metrics["archive_evaluation"]["held-out archive"]
    assert recorded["detection"]["ge_4mm"]["cpm"] == report["detection"]["ge_4mm"]["cpm"]
    assert recorded["diameter"]["source"] == "measure"  # measured by default
    assert "--record" not in recorded["command"] and recorded["command"].startswith("nightscan models evaluate")
    card = (tmp_path / "MODEL_CARD.md").read_text()
    assert "### held-out archive" in card and "| CPM, nodules >= 4 mm |" in card
    assert get_entry(REF).metrics.get("archive_evaluation", {}).get("held-out archive") is None  # shipped untouched
