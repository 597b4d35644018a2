"""A ranking as people read it: a Markdown table, a bar chart per score, and ``ranking.json``."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..atomic import check_output_path, write_atomic
from ..errors import OutputError
from ..evaluation.plots import new_figure
from .base import SCORES
from .ranking import Ranking

JSON_FILE = "ranking.json"
MARKDOWN_FILE = "ranking.md"
PLOT_FILE = "ranking.png"


def _value(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def markdown_table(ranking: Ranking) -> str:
    """One row per candidate, best first; n/a scores are explained below the table."""
    names = list(SCORES)
    lines = ["| rank | candidate | " + " | ".join(SCORES[n].title for n in names) + " | seconds |",
             "|---|---|" + "---|" * len(names) + "---|"]
    for result in ranking.results:
        cells = [str(result.rank or "-"), f"`{result.candidate}`", *(_value(result.scores.get(n)) for n in names),
                 f"{result.seconds:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    notes = sorted({f"{SCORES[n].title}: {r.notes[n]}" for r in ranking.results for n in r.notes})
    return "\n".join(lines + ([""] + [f"n/a: {note}." for note in notes] if notes else []))


def summary(ranking: Ranking) -> str:
    return (f"Ranked by {SCORES[ranking.rank_by].title} on {ranking.num_samples} examples of {ranking.data} "
            f"({ranking.num_classes} classes); frozen features, higher is better. Best: `{ranking.best().candidate}`.")


def save_ranking_plot(ranking: Ranking, path: Path) -> Path:
    """One panel per score, one bar per candidate (n/a candidates have no bar)."""
    from matplotlib import colormaps

    names = list(SCORES)
    labels = [r.candidate.rsplit("/", 1)[-1] if not r.candidate.startswith("random:") else
              "random:" + r.candidate.rsplit("/", 1)[-1] for r in ranking.results]
    figure = new_figure(3.2 * len(names), 1.2 + 0.45 * len(labels) + 1.5)
    axes = figure.subplots(1, len(names), squeeze=False)
    colours = [colormaps["tab10"](i % 10) for i in range(len(labels))]
    for panel, name in zip(axes[0], names):
        values = [r.scores.get(name) for r in ranking.results]
        for index, value in enumerate(values):
            if value is not None:
                panel.barh(index, value, color=colours[index])
            else:
                panel.text(0, index, "n/a", va="center", fontsize=8, color="grey")
        panel.set_yticks(range(len(labels)), labels=labels if panel is axes[0][0] else [""] * len(labels),
                         fontsize=8)
        panel.invert_yaxis()
        panel.axvline(0, color="black", linewidth=0.5)
        panel.set_title(SCORES[name].title + (" (ranked by)" if name == ranking.rank_by else ""), fontsize=10)
        panel.grid(axis="x", alpha=0.3)
    figure.suptitle(f"Transferability on {Path(ranking.data).name} ({ranking.num_samples} examples, higher is better)",
                    fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix,
                                     delete=False) as handle:
        temporary = Path(handle.name)
    try:
        figure.savefig(temporary, dpi=100)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)  # left only when saving or renaming failed
    return path


def check_output(directory: Path, overwrite: bool) -> None:
    """``--output`` must be (or become) a folder we may write; a finished ranking (``ranking.json``) is kept unless
    ``overwrite``. Checked before any features are computed."""
    directory = check_output_path(directory, "--output", folder=True)
    if (directory / JSON_FILE).is_file() and not overwrite:
        raise OutputError(f"'{directory}' already holds a finished ranking ({JSON_FILE}). Pass --overwrite to "
                          "replace it, or choose another --output folder.")


def write_ranking(ranking: Ranking, directory: Path, overwrite: bool = False) -> Path:
    """``ranking.png`` and ``ranking.md``, then ``ranking.json`` last (it marks the folder finished)."""
    directory = Path(directory)
    check_output(directory, overwrite)
    save_ranking_plot(ranking, directory / PLOT_FILE)
    write_atomic(directory / MARKDOWN_FILE, f"# Backbone ranking\n\n{summary(ranking)}\n\n{markdown_table(ranking)}\n")
    return write_atomic(directory / JSON_FILE, json.dumps(ranking.to_dict(), indent=2) + "\n")
