"""The ``mil-cv`` run behind the command, once its options are checked: load, print, cross-validate, report.

:mod:`wsistream.mil.cli` parses the options into a :class:`CvRun`; a ``WsiStreamError`` while
the run loads the cohort or trains is printed and becomes exit code 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # torch and scikit-learn are imported when the run starts, so --help stays fast
    from wsistream.mil.cv import NestedCVConfig
    from wsistream.mil.cv_results import CVResult
    from wsistream.mil.data import SlideCohort
    from wsistream.mil.screen import CohortOptions

console = Console(stderr=True)


def print_records(records: Any, what: str, attr: str) -> None:
    """The first 20 excluded or noticed slides with their ``attr`` (the rest are in ``cv_results.json``)."""
    if not records:
        return
    console.print(f"[yellow]{len(records)} slide(s) {what}:[/yellow]")
    for e in list(records)[:20]:
        console.print(f"  - {e.slide_id}: {getattr(e, attr)}")
    if len(records) > 20:
        console.print(f"  ... and {len(records) - 20} more (see cv_results.json)")


def model_kwargs(pairs: list[str]) -> dict[str, Any]:
    """``["attention=nystrom", "num_landmarks=128"]`` -> ``{"attention": "nystrom", "num_landmarks": 128}``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.isidentifier():
            raise typer.BadParameter(f"--model-arg {pair!r}: pass KEY=VALUE, e.g. attention=nystrom")
        value: Any = {"true": True, "false": False, "none": None}.get(text.lower(), text)
        if isinstance(value, str):
            for convert in (int, float):
                try:
                    value = convert(text)
                    break
                except ValueError:
                    continue
        out[key] = value
    return out


@dataclass(frozen=True)
class CohortColumns:
    """The label CSV's columns as the options name them; ``''`` means "not given"."""

    label: str
    patient: str
    time: str
    event: str


@dataclass(frozen=True)
class CvRun:
    """One ``mil-cv`` run once its options are checked: the cohort to load, the model and the CV config."""

    features: Path
    labels: Path
    task: str
    model: str
    columns: CohortColumns
    corrected: bool
    model_arg: tuple[str, ...]
    cfg: NestedCVConfig
    options: CohortOptions

    def execute(self) -> CVResult:
        """Load the cohort, print what it holds, run nested CV; a ``WsiStreamError`` is exit code 2."""
        from tqdm import tqdm

        from wsistream.errors import WsiStreamError
        from wsistream.mil.cv import nested_cross_validation

        bars: list[Any] = []
        n_folds = self.cfg.outer_folds * self.cfg.repeats

        def progress(fold: int, total: int) -> Any:
            if bars:
                bars[-1].close()
            bars.append(tqdm(total=total, desc=f"fold {fold}/{n_folds}", unit="epoch", leave=True))
            return bars[-1].update

        try:
            cohort = self._load_cohort()
            result = nested_cross_validation(
                cohort,
                self.model,
                self.cfg,
                corrected=self.corrected,
                model_kwargs=model_kwargs(list(self.model_arg)),
                progress=progress,
            )
        except WsiStreamError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(code=2) from exc
        finally:
            for b in bars:
                b.close()
        return result

    def _load_cohort(self) -> SlideCohort:
        from wsistream.mil.data import load_cohort

        cols, cfg = self.columns, self.cfg
        cohort = load_cohort(
            self.features,
            self.labels,
            self.task,
            patient_column=cols.patient or None,
            label_column=cols.label,
            time_column=cols.time or None,
            event_column=cols.event or None,
            options=self.options,
        )
        console.print(
            f"cohort: {cohort.n_slides} slides, {cohort.n_patients} patients, d={cohort.dim}, task={self.task}"
            + (f", classes={list(cohort.class_names)}" if cohort.class_names else "")
            + f"; features {'in memory' if cohort.in_memory else 'read from disk per batch'}"
        )
        console.print(f"protocol {cfg.protocol}: tile sampling {cfg.sampling!r}, n_tiles={cfg.n_tiles}")
        for key, dev in cfg.deviations().items():
            console.print(f"  [yellow]deviation: {key}={dev['value']} (protocol: {dev['protocol']})[/yellow]")
        print_records(cohort.exclusions, "excluded", "reason")
        print_records(cohort.notices, "with a notice", "message")
        return cohort


def print_cv_result(result: CVResult, out: Path, task: str) -> None:
    """Write the report to ``out``; print the per-fold table, the summary line and the files written."""
    from wsistream.mil.report import write_report

    paths = write_report(result, out)
    table = Table(title=f"{result.model} - {task}: outer test {result.metric_name}")
    for col in ("repeat", "fold", result.metric_name, "lr", "wd", "epochs", f"inner {result.metric_name}"):
        table.add_column(col)
    for f in result.folds:
        table.add_row(
            f"{f.repeat} (split seed {f.split_seed})",
            str(f.fold),
            f"{f.metric:.3f}",
            f"{f.learning_rate:g}",
            f"{f.weight_decay:g}",
            str(f.epochs),
            f"{f.inner_metric:.3f}",
        )
    Console().print(table)
    Console().print(f"[bold]{result.summary()}[/bold]")
    for key, p in paths.items():
        console.print(f"  {key}: {p}")
