"""``nightscan follow-up``: the per-patient longitudinal step on demand, and its evaluation against ground truth."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from nightscan.settings import Settings

log = logging.getLogger("nightscan")

DEFAULT_EVAL_OUT = Path("bench/results/longitudinal_eval.json")


@click.group("follow-up", invoke_without_command=True)
@click.option("--patient-key", default=None, help="One patient: its stored key (64 hex) or its PatientID.")
@click.option("--all", "all_patients", is_flag=True, help="Every patient with a done analysis.")
@click.option("--model", default=None, help="Detector name@version. Default: every model with done analyses.")
@click.pass_context
def follow_up(ctx: click.Context, patient_key: str | None, all_patients: bool, model: str | None) -> None:
    """Track each patient's nodules across studies and assess them (Lung-RADS, Brock, VDT); idempotent."""
    if ctx.invoked_subcommand is not None:
        return
    if (patient_key is None) == (not all_patients):
        raise click.UsageError("give exactly one of --patient-key K or --all (or a subcommand: evaluate)")
    settings: Settings = ctx.obj
    from sqlalchemy import select

    from db.longitudinal import patients_to_follow
    from db.models import Patient
    from nightscan.pseudonym import patient_key as keyed
    from nightscan.runtime import session_factory
    from workers.followup import update_patient

    factory = session_factory(settings)
    with factory() as session:
        patient_id = None
        if patient_key is not None:
            for key in (patient_key.strip().lower(), keyed(patient_key, settings.pseudonym_key.get_secret_value())):
                patient_id = session.scalar(select(Patient.id).where(Patient.patient_key == key))
                if patient_id is not None:
                    break
            if patient_id is None:
                raise click.BadParameter("no patient has this key or PatientID", param_hint="--patient-key")
        pairs = patients_to_follow(session, model=model, patient_id=patient_id)
    if not pairs:
        click.echo("nothing to do: no done analysis" + (f" for {model}" if model else ""))
        return
    categories: dict[str, int] = {}
    for pid, ref in pairs:
        report = update_patient(factory, pid, ref)
        label = report.lungrads or "none"
        categories[label] = categories.get(label, 0) + 1
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(categories.items()))
    click.echo(f"followed {len(pairs)} patient-model pair(s); latest Lung-RADS {summary}")


@follow_up.command("evaluate")
@click.option("--generate", "n_patients", type=int, default=50, show_default=True, help="Patients in the archive.")
@click.option("--studies", type=click.IntRange(2, 4), default=3, show_default=True, help="Studies per patient.")
@click.option("--seed", type=int, default=2027, show_default=True)
@click.option("--shape", default="100x256x256", show_default=True, help="Voxels per study, ZxYxX.")
@click.option("--spacing", default="2.5x1.4x1.4", show_default=True, help="Voxel size in mm, ZxYxX.")
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Archive, truth and findings database (reused when there). Default: <data_dir>/followup-eval/SEED-N.",
)
@click.option("--synth-workers", type=int, default=2, show_default=True, help="Processes drawing patients.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=str(DEFAULT_EVAL_OUT), show_default=True)
@click.pass_obj
def evaluate(
    settings: Settings,
    n_patients: int,
    studies: int,
    seed: int,
    shape: str,
    spacing: str,
    work_dir: str | None,
    synth_workers: int,
    out_path: str,
) -> None:
    """Score the longitudinal step on a synthetic longitudinal archive against its ground truth.

    The first run writes the archive and runs the detector on every study (about 5-15 s a study on 2 CPU
    cores); later runs with the same options reuse them and only re-run the step and the scoring.
    """
    from nightscan.cli import _triple
    from workers.followup_eval import EvaluationArchive
    from workers.followup_eval import evaluate as run_evaluation

    folder = Path(work_dir) if work_dir else settings.data_dir / "followup-eval" / f"seed-{seed}-p{n_patients}"
    spec = EvaluationArchive(
        work_dir=folder,
        n_patients=n_patients,
        seed=seed,
        studies_per_patient=studies,
        shape_zyx=_triple(shape, int, "--shape"),
        spacing_zyx_mm=_triple(spacing, float, "--spacing"),
    )
    report = run_evaluation(spec, settings, out_path=Path(out_path), synth_workers=synth_workers)
    print_report(report)
    click.echo(f"report: {out_path}")
    from workers.followup_plots import plot_reports

    for path in plot_reports([Path(out_path)], Path(out_path).parent, name=Path(out_path).stem):
        click.echo(f"plot: {path}")


@follow_up.command("plot")
@click.argument("reports", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="bench/results", show_default=True)
@click.option("--name", default="longitudinal_eval", show_default=True, help="File names: NAME_lungrads.png, ...")
def plot(reports: tuple[str, ...], out_dir: str, name: str) -> None:
    """Plot evaluation reports (pooled when several): the Lung-RADS confusion matrix and measured against true VDT,
    with each lesion's VDT range."""
    from workers.followup_plots import plot_reports

    for path in plot_reports([Path(r) for r in reports], Path(out_dir), name=name):
        click.echo(f"plot: {path}")


def print_report(report: dict) -> None:
    """The three figures against the issue's targets, the Lung-RADS causes and the criteria sweep."""
    from rich.console import Console
    from rich.table import Table

    def pct(value: object) -> str:
        return "n/a" if value is None else f"{100 * float(value):.1f} %"

    result = report["result"]
    tracking, vdt = result["tracking"], result["vdt"]
    table = Table(title=f"longitudinal step on {report['archive']['studies']} studies ({report['archive']['model']})")
    for column in ("figure", "measured", "count", "target"):
        table.add_column(column)
    table.add_row(
        "Lung-RADS = truth",
        pct(result["lungrads_accuracy"]),
        f"{result['lungrads_agree']} / {result['studies']}",
        ">= 90 %",
    )
    table.add_row("... the same next step (1-2, 3, 4A, 4B-4X)", pct(result["same_next_step"]), "", "(not a target)")
    table.add_row(
        "lesions in 2+ studies on the right track",
        pct(tracking["accuracy"]),
        f"{tracking['assigned_right']} / {tracking['kept_in_2plus_studies']}",
        ">= 95 %",
    )
    table.add_row(
        "VDT within 25 % (growing, >= 6 mm)",
        pct(vdt["accuracy"]),
        f"{vdt['within_25pct']['lesion']} / {vdt['growing_6mm_plus_kept_twice']}",
        "all",
    )
    if "growth_shown" in vdt:
        shown = vdt["growth_shown"]
        table.add_row(
            "... of those whose growth the volumes show",
            pct(vdt["within_25pct_where_growth_shown"] / shown if shown else None),
            f"{vdt['within_25pct_where_growth_shown']} / {shown}",
            "(not a target)",
        )
        table.add_row(
            "VDT range holds the true VDT",
            pct(
                vdt["range_holds_truth"] / vdt["growing_6mm_plus_kept_twice"]
                if vdt["growing_6mm_plus_kept_twice"]
                else None
            ),
            f"{vdt['range_holds_truth']} / {vdt['growing_6mm_plus_kept_twice']}",
            "(not a target)",
        )
    console = Console(width=max(Console().width, 120))
    console.print(table)
    causes = Table(title="why Lung-RADS differs from the truth")
    causes.add_column("cause")
    causes.add_column("studies")
    for cause, count in result["lungrads_causes"].items():
        causes.add_row(cause, str(count))
    console.print(causes)
    error = result["diameter_error"]["all"]
    if error["nodules"]:
        console.print(
            f"mean diameter of the {error['nodules']} true nodules kept: bias {error['bias_mm']:+.2f} mm, "
            f"RMS {error['rms_mm']:.2f} mm"
        )
    by_noise = report["ceiling"]["lungrads_accuracy_by_noise_mm"]
    limits = ", ".join(f"{noise} mm: {pct(v)}" for noise, v in by_noise.items())
    console.print(f"Lung-RADS from the true nodules measured with Gaussian noise (the measurement's limit): {limits}")
    sweep = Table(
        title="which findings count as nodules (detector score, classifier probability, diameter, their log-odds sum)"
    )
    for column in ("min score", "min p", "min mm", "min log-odds", "Lung-RADS", "tracking", "VDT", "kept FP"):
        sweep.add_column(column)
    for row in report["sweep"]:
        sweep.add_row(
            f"{row['criteria']['min_score']:g}",
            f"{row['criteria']['min_probability']:g}",
            f"{row['criteria']['min_diameter_mm']:g}",
            "-" if row["criteria"].get("min_log_odds") is None else f"{row['criteria']['min_log_odds']:g}",
            pct(row["lungrads_accuracy"]),
            pct(row["tracking"]["accuracy"]),
            pct(row["vdt"]["accuracy"]),
            str(row["detection"]["kept_false_positives"]),
        )
    console.print(sweep)
