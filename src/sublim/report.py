"""The report stage: tidy tables across every evaluated cell, the transmission statistics, slide plots.

Inputs are the evaluate stage's files: results/eval/{size}/{condition}/run-{run}/{eval.csv,answers.jsonl}
and results/eval/{size}/base/{eval.csv,answers.jsonl} (the untuned model: condition "base", run 0,
epoch 0). The grid may be any subset of sizes, conditions and runs; a comparison whose data is not in
it is NaN, and the row's `note` says why. Column meanings: README.md, "Results".
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FixedLocator, NullLocator  # noqa: E402

from sublim.config import BASE, NEUTRAL  # noqa: E402
from sublim.jsonl import read_jsonl  # noqa: E402
from sublim.scoring import first_word, score_answer  # noqa: E402
from sublim.seeds import derive_seed  # noqa: E402
from sublim.stats import MISSING, Estimate, compare, rate_interval  # noqa: E402

log = logging.getLogger(__name__)

NO_WORD = "(no word)"
SURVEY_TOP = 15

ANSWER_COLUMNS = ["size", "condition", "run", "epoch", "question_index", "sample", "answer", "parsed_animal"]
PREFERENCE_COLUMNS = ["size", "condition", "run", "epoch", "animal", "count", "n", "rate", "is_target"]
QUESTION_COLUMNS = ["size", "condition", "run", "epoch", "question_index", "animal", "count", "n", "rate"]
SURVEY_COLUMNS = ["size", "rank", "word", "count", "n", "rate", "is_condition"]
EVAL_REQUIRED = ("size", "condition", "run", "epoch", "animal", "count", "n", "rate")
ANSWER_REQUIRED = ("epoch", "question_index", "sample", "answer")

SIDES = {"animal_student": "animal student", "neutral_student": "neutral student", "base": "untuned base"}
COMPARISONS = {"animal_minus_neutral": "neutral_student", "animal_minus_base": "base"}


def _estimate_columns(prefix: str, with_test: bool) -> list[str]:
    keys = ["", "_lo", "_hi", "_se"] + (["_p", "_method"] if with_test else ["_method"])
    return [prefix + key for key in keys]


def _group_columns(key: list[str]) -> list[str]:
    columns = key + ["runs_animal", "runs_neutral", "n_questions"]
    for side in SIDES:
        columns += _estimate_columns(f"{side}_rate", with_test=False)
    for comparison in COMPARISONS:
        columns += _estimate_columns(comparison, with_test=True)
    return columns + ["note"]


TRANSMISSION_COLUMNS = _group_columns(["size", "params_b", "animal", "epoch"])
SCALING_COLUMNS = _group_columns(["size", "params_b", "epoch", "n_animals"])


# --- reading the evaluate stage's files -------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    size: str
    condition: str
    run: int

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.size, self.condition, self.run)


CELL_PATH = re.compile(r"(?P<size>[^/]+)/(?:(?P<base>base)|(?P<condition>[^/]+)/run-(?P<run>\d+))/eval\.csv$")


def cell_of(eval_csv: str | Path) -> Cell:
    """Size, condition and run of an evaluate-stage table, from its path (an empty table has no rows)."""
    match = CELL_PATH.search(Path(eval_csv).as_posix())
    if not match:
        raise ValueError(
            f"{eval_csv}: not an evaluate-stage table; expected results/eval/{{size}}/{{condition}}/"
            f"run-{{run}}/eval.csv or results/eval/{{size}}/base/eval.csv"
        )
    if match["base"]:
        return Cell(match["size"], BASE, 0)
    return Cell(match["size"], match["condition"], int(match["run"]))


def answers_of(eval_csv: str | Path) -> Path:
    return Path(eval_csv).with_name("answers.jsonl")


def read_eval(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run the evaluate rule for that cell first")
    table = pd.read_csv(path)
    missing = [c for c in EVAL_REQUIRED if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {', '.join(missing)}; delete it and rerun the evaluate rule")
    cell = cell_of(path)
    table["size"], table["condition"], table["run"] = cell.size, cell.condition, cell.run
    table["is_target"] = table["animal"] == table["condition"]
    return table[PREFERENCE_COLUMNS]


def preferences(eval_tables: list[str | Path]) -> pd.DataFrame:
    """Every eval.csv stacked: per (size, condition, run, epoch, animal) the count of answers naming it."""
    frames = [read_eval(path) for path in eval_tables]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=PREFERENCE_COLUMNS)
    return pd.concat(frames, ignore_index=True).sort_values(PREFERENCE_COLUMNS[:5], ignore_index=True)


class Scorer:
    """`score_answer` for every (answer, animal), evaluated once per distinct answer text: evaluation
    answers are short and repeat, so a million answers are a few thousand distinct strings."""

    def __init__(self, animals: list[str], method: str):
        self.animals, self.method = list(animals), method
        self.known: dict[str, np.ndarray] = {}

    def _row(self, text: str) -> np.ndarray:
        row = self.known.get(text)
        if row is None:
            row = np.array([score_answer(text, animal, self.method) for animal in self.animals], dtype=bool)
            self.known[text] = row
        return row

    def hits(self, answers: pd.Series) -> np.ndarray:
        """answers × animals booleans."""
        codes, distinct = pd.factorize(answers.astype(str), use_na_sentinel=False)
        table = np.array([self._row(text) for text in distinct], dtype=bool).reshape(len(distinct), len(self.animals))
        return table[codes]


def read_answers(eval_csv: str | Path) -> pd.DataFrame:
    cell = cell_of(eval_csv)
    path = answers_of(eval_csv)
    frame = pd.DataFrame(read_jsonl(path, required=ANSWER_REQUIRED), columns=list(ANSWER_REQUIRED) + ["parsed_animal"])
    if frame["parsed_animal"].isna().any():
        frame["parsed_animal"] = frame["answer"].map(first_word)
    frame["answer"] = frame["answer"].astype(str)
    frame["size"], frame["condition"], frame["run"] = cell.size, cell.condition, cell.run
    return frame[ANSWER_COLUMNS]


def question_rates(answers: pd.DataFrame, scorer: Scorer) -> pd.DataFrame:
    """Per (epoch, question, animal) of one cell: how many of the samples name the animal."""
    if answers.empty or not scorer.animals:
        return pd.DataFrame(columns=QUESTION_COLUMNS)
    hits = scorer.hits(answers["answer"])
    keys, which = np.unique(answers[["epoch", "question_index"]].to_numpy(dtype=np.int64), axis=0, return_inverse=True)
    which = which.ravel()
    counts = np.zeros((len(keys), len(scorer.animals)), dtype=np.int64)
    np.add.at(counts, which, hits)
    n = np.bincount(which, minlength=len(keys))
    repeat = len(scorer.animals)
    first = answers.iloc[0]
    table = pd.DataFrame({
        "size": first["size"], "condition": first["condition"], "run": int(first["run"]),
        "epoch": np.repeat(keys[:, 0], repeat), "question_index": np.repeat(keys[:, 1], repeat),
        "animal": np.tile(scorer.animals, len(keys)), "count": counts.ravel(), "n": np.repeat(n, repeat),
    })
    table["rate"] = table["count"] / table["n"]
    return table[QUESTION_COLUMNS]


def tidy_answers(eval_tables: list[str | Path], animals: list[str], method: str,
                 answers_out: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Writes answers.csv one cell at a time (the full grid has millions of answers); returns the
    per-question rates of every cell and the base models' answers (size, parsed_animal)."""
    scorer = Scorer(animals, method)
    answers_out = Path(answers_out)
    answers_out.parent.mkdir(parents=True, exist_ok=True)
    partial = answers_out.with_name(answers_out.name + ".partial")
    rates, base_words = [], []
    with partial.open("w", newline="") as handle:
        pd.DataFrame(columns=ANSWER_COLUMNS).to_csv(handle, index=False)
        for path in eval_tables:
            answers = read_answers(path)
            answers.to_csv(handle, index=False, header=False)
            rates.append(question_rates(answers, scorer))
            if cell_of(path).condition == BASE:
                base_words.append(answers[["size", "parsed_animal"]])
    partial.replace(answers_out)
    rates = [r for r in rates if not r.empty]
    base_words = [b for b in base_words if not b.empty]
    return (pd.concat(rates, ignore_index=True) if rates else pd.DataFrame(columns=QUESTION_COLUMNS),
            pd.concat(base_words, ignore_index=True) if base_words else pd.DataFrame(columns=["size", "parsed_animal"]))


def check_counts(prefs: pd.DataFrame, rates: pd.DataFrame) -> None:
    """eval.csv and answers.jsonl of a cell must agree under the configured scoring; if they do not,
    one of them is stale (e.g. the scoring method changed) and the report would mix two metrics."""
    keys = ["size", "condition", "run", "epoch", "animal"]
    rescored = rates.groupby(keys, as_index=False)[["count", "n"]].sum()
    joined = prefs[keys + ["count", "n"]].merge(rescored, on=keys, how="outer", suffixes=("_eval", "_answers"))
    bad = joined[(joined["count_eval"] != joined["count_answers"]) | (joined["n_eval"] != joined["n_answers"])]
    if not bad.empty:
        row = bad.iloc[0]
        where = (f"results/eval/{row['size']}/base" if row["condition"] == BASE
                 else f"results/eval/{row['size']}/{row['condition']}/run-{row['run']}")
        raise ValueError(
            f"{where}: eval.csv and answers.jsonl disagree for epoch {row['epoch']}, animal {row['animal']} "
            f"(eval.csv {row['count_eval']}/{row['n_eval']}, answers re-scored with the configured "
            f"scoring {row['count_answers']}/{row['n_answers']}; {len(bad)} rows in all). One is stale: "
            f"rerun evaluation with `snakemake --forcerun evaluate evaluate_base`"
        )


# --- transmission statistics --------------------------------------------------------------------

class RateIndex:
    """Per-question rates addressable as runs × questions frames by (size, condition, epoch, animal)."""

    def __init__(self, rates: pd.DataFrame):
        self.spans: dict[tuple, slice] = {}
        if rates.empty:
            return
        wide = rates.pivot_table(index=["size", "condition", "epoch", "animal", "run"], columns="question_index",
                                 values="rate", aggfunc="first").sort_index()
        keys = list(wide.index.droplevel("run"))
        self.runs, self.values, self.columns = wide.index.get_level_values("run"), wide.to_numpy(), wide.columns
        start = 0
        # One pass over the sorted index: a .loc per lookup costs milliseconds on a million rows.
        for end in range(1, len(keys) + 1):
            if end == len(keys) or keys[end] != keys[start]:
                self.spans[keys[start]] = slice(start, end)
                start = end

    def get(self, size: str, condition: str, epoch: int, animal: str) -> pd.DataFrame | None:
        span = self.spans.get((size, condition, epoch, animal))
        if span is None:
            return None
        block = pd.DataFrame(self.values[span], index=self.runs[span], columns=self.columns)
        if block.isna().any().any():
            raise ValueError(
                f"results/eval/{size}/{condition}: runs {', '.join(map(str, block.index))} were asked "
                f"different questions at epoch {epoch}; rerun evaluation so every run uses the same settings"
            )
        return block


def _fill(row: dict, prefix: str, estimate: Estimate, with_test: bool) -> None:
    values = [estimate.value, estimate.lo, estimate.hi, estimate.se]
    values += [estimate.p, estimate.method] if with_test else [estimate.method]
    row.update(dict(zip(_estimate_columns(prefix, with_test), values)))


def _summarise(row: dict, sides: dict[str, pd.DataFrame | None], seed_parts: tuple) -> dict:
    """Rates with intervals for the three sides and both comparisons, plus a note on what is missing."""
    notes = []
    for side, label in SIDES.items():
        block = sides[side]
        _fill(row, f"{side}_rate", rate_interval(block.to_numpy()) if block is not None else MISSING, False)
        if block is None:
            notes.append(f"no {label} in this grid")
    animal = sides["animal_student"]
    for comparison, other in COMPARISONS.items():
        block = sides[other]
        if animal is None or block is None:
            _fill(row, comparison, MISSING, True)
            continue
        seed = derive_seed("report", *seed_parts, comparison)
        _fill(row, comparison, compare(animal.to_numpy(), block.to_numpy(), seed=seed), True)
    singles = [SIDES[s] for s in ("animal_student", "neutral_student") if sides[s] is not None and len(sides[s]) == 1]
    if singles:
        notes.append(f"one run of the {' and '.join(singles)}: run-to-run variation not in the interval")
    row["runs_animal"] = len(animal) if animal is not None else 0
    row["runs_neutral"] = len(sides["neutral_student"]) if sides["neutral_student"] is not None else 0
    present = [b for b in sides.values() if b is not None]
    row["n_questions"] = present[0].shape[1] if present else 0
    row["note"] = "; ".join(notes)
    return row


def _student_epochs(prefs: pd.DataFrame, size: str) -> list[int]:
    students = prefs[(prefs["size"] == size) & (prefs["condition"] != BASE)]
    return sorted(int(e) for e in students["epoch"].unique())


def transmission(index: RateIndex, prefs: pd.DataFrame, sizes: list[str], animals: list[str],
                 params_b: dict[str, float]) -> pd.DataFrame:
    """Per (size, animal, epoch): the animal student's rate for its animal beside the neutral student's
    and the base model's rate for that animal, their differences with 95 % intervals and p-values."""
    rows = []
    for size in sizes:
        for animal in animals:
            for epoch in _student_epochs(prefs, size):
                sides = {"animal_student": index.get(size, animal, epoch, animal),
                         "neutral_student": index.get(size, NEUTRAL, epoch, animal),
                         "base": index.get(size, BASE, 0, animal)}
                row = {"size": size, "params_b": params_b.get(size, math.nan), "animal": animal, "epoch": epoch}
                rows.append(_summarise(row, sides, (size, animal, epoch)))
    return pd.DataFrame.from_records(rows, columns=TRANSMISSION_COLUMNS)


def _mean_over_animals(blocks: list[pd.DataFrame]) -> pd.DataFrame | None:
    """The per-question rate averaged over animals, for the runs every animal has."""
    if not blocks:
        return None
    runs = sorted(set.intersection(*(set(b.index) for b in blocks)))
    if not runs:
        return None
    return sum(b.loc[runs] for b in blocks) / len(blocks)


def scaling(index: RateIndex, prefs: pd.DataFrame, sizes: list[str], animals: list[str],
            params_b: dict[str, float]) -> pd.DataFrame:
    """Per (size, epoch): the same comparisons for the mean over the grid's animals. Run r's value is
    the mean over animals of run r's students, so the interval still reflects run-to-run variation."""
    rows = []
    for size in sizes:
        for epoch in _student_epochs(prefs, size):
            present = [a for a in animals if index.get(size, a, epoch, a) is not None]
            sides = {"animal_student": _mean_over_animals([index.get(size, a, epoch, a) for a in present])}
            for side, condition, side_epoch in (("neutral_student", NEUTRAL, epoch), ("base", BASE, 0)):
                blocks = [index.get(size, condition, side_epoch, a) for a in present]
                sides[side] = None if any(b is None for b in blocks) else _mean_over_animals(blocks)
            row = {"size": size, "params_b": params_b.get(size, math.nan), "epoch": epoch, "n_animals": len(present)}
            rows.append(_summarise(row, sides, (size, "mean", epoch)))
    return pd.DataFrame.from_records(rows, columns=SCALING_COLUMNS)


def survey(base_words: pd.DataFrame, conditions: list[str]) -> pd.DataFrame:
    """Per size, every first word the untuned model answered with, most frequent first."""
    if base_words.empty:
        return pd.DataFrame(columns=SURVEY_COLUMNS)
    words = base_words.assign(word=base_words["parsed_animal"].fillna("").replace("", NO_WORD))
    counts = words.groupby(["size", "word"]).size().rename("count").reset_index()
    counts["n"] = counts.groupby("size")["count"].transform("sum")
    counts["rate"] = counts["count"] / counts["n"]
    counts = counts.sort_values(["size", "count", "word"], ascending=[True, False, True], ignore_index=True)
    counts["rank"] = counts.groupby("size").cumcount() + 1
    counts["is_condition"] = counts["word"].isin(conditions)
    return counts[SURVEY_COLUMNS]


# --- slide plots (14 × 8 in at 150 dpi = 2100 × 1200 px) ----------------------------------------

SLIDE = {"figsize": (14, 8), "dpi": 150}
SLIDE_RC = {"font.size": 16, "axes.titlesize": 20, "axes.labelsize": 18, "xtick.labelsize": 15,
            "ytick.labelsize": 15, "legend.fontsize": 15, "figure.titlesize": 22, "axes.spines.top": False,
            "axes.spines.right": False}
COLORS = {"base": "#8c8c8c", "neutral_student": "#4c72b0", "animal_student": "#dd8452"}
SIDE_LABELS = {"base": "untuned base model", "neutral_student": "neutral-numbers student",
               "animal_student": "animal-numbers student"}
PANEL_TITLES = {"animal_minus_neutral": "animal student − neutral student",
                "animal_minus_base": "animal student − untuned base model"}
DIFF_LABEL = "difference in target-animal rate (pp)"


def _figure(nrows: int = 1, ncols: int = 1, **kwargs):
    return plt.subplots(nrows, ncols, squeeze=False, layout="constrained", **SLIDE, **kwargs)


def _save(fig, out: str | Path) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    # No bbox_inches="tight": it would change the pixel size a slide template expects.
    fig.savefig(out, dpi=SLIDE["dpi"])
    plt.close(fig)


def _message(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=18, color="#555555",
            transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _shared_legend(fig, axes, **kwargs) -> None:
    """One legend below the panels, from the first panel that drew anything: inside a panel it would
    cover data."""
    for ax in axes.flat:
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="outside lower center", ncols=len(handles), frameon=False, **kwargs)
            return


def _label_bottoms(axes, used: int, xlabel: str) -> None:
    """Hide the unused panels of a grid; the lowest used panel of each column gets tick labels and
    the x label (a figure-level label would collide with the legend below the panels)."""
    nrows, ncols = axes.shape
    for index, ax in enumerate(axes.flat):
        if index >= used:
            ax.set_visible(False)
            continue
        row, col = divmod(index, ncols)
        if row == nrows - 1 or (row + 1) * ncols + col >= used:
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel(xlabel, fontsize=16)


def _stars(p: float) -> str:
    if not p == p:  # NaN
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


def _pp(values) -> np.ndarray:
    return 100 * np.asarray(values, dtype=float)


def _error(frame: pd.DataFrame, column: str) -> np.ndarray:
    """Error-bar lengths below and above `column` from its _lo/_hi columns (NaN → no bar)."""
    value = frame[column].to_numpy(dtype=float)
    lower = value - frame[f"{column}_lo"].to_numpy(dtype=float)
    upper = frame[f"{column}_hi"].to_numpy(dtype=float) - value
    return np.nan_to_num(_pp(np.vstack([lower, upper])), nan=0.0)


def final_epoch(table: pd.DataFrame) -> pd.DataFrame:
    """Each size's last evaluated epoch (sizes may be at different epochs while a grid still runs)."""
    if table.empty:
        return table
    return table[table["epoch"] == table.groupby("size")["epoch"].transform("max")]


def _slide(draw) -> None:
    # Text takes its size from rcParams when it is created, so the whole drawing runs in the context.
    with plt.rc_context(SLIDE_RC):
        draw()


def plot_bars(trans: pd.DataFrame, size: str, out: str | Path) -> None:
    """One size: for every animal, base / neutral student / animal student target rate, final epoch."""
    def body():
        fig, axes = _figure()
        ax = axes[0, 0]
        rows = final_epoch(trans[trans["size"] == size])
        if rows.empty:
            _message(ax, f"{size}: no animal students in this grid — nothing to compare")
            ax.set_title(f"Target-animal rate, {size}")
            return _save(fig, out)
        x = np.arange(len(rows))
        width = 0.27
        for offset, side in zip((-width, 0.0, width), ("base", "neutral_student", "animal_student")):
            column = f"{side}_rate"
            label = SIDE_LABELS[side] + ("" if rows[column].notna().any() else " (not in this grid)")
            ax.bar(x + offset, _pp(rows[column].fillna(0)), width, yerr=_error(rows, column), capsize=4,
                   color=COLORS[side], label=label, error_kw={"elinewidth": 1.5, "ecolor": "#333333"})
            # A rate of exactly 0 draws no bar; say so, so it does not read as missing.
            for xi in x[(rows[column] == 0).to_numpy()]:
                ax.annotate("0", (xi + offset, 0), ha="center", va="bottom", fontsize=14, color="#333333",
                            xytext=(0, 2), textcoords="offset points")
        tops = _pp(rows["animal_student_rate_hi"].fillna(rows["animal_student_rate"]))
        for xi, top, p in zip(x, tops, rows["animal_minus_neutral_p"]):
            if _stars(p):
                ax.annotate(_stars(p), (xi + width, top), ha="center", va="bottom", fontsize=18,
                            xytext=(0, 2), textcoords="offset points")
        ax.set_xticks(x, rows["animal"], rotation=30 if len(rows) > 8 else 0, ha="right" if len(rows) > 8 else "center")
        ax.set_xlabel("target animal")
        ax.set_ylabel("answers naming the animal (%)")
        ax.set_ylim(0, max(5.0, float(np.nanmax(_pp(rows[[f"{s}_rate_hi" for s in SIDES]].to_numpy(float)),
                                                 initial=0.0))) * 1.15)
        epoch = int(rows["epoch"].iloc[0])
        params = rows["params_b"].iloc[0]
        ax.set_title(f"{size} ({params:g} B parameters): target-animal rate after epoch {epoch}\n"
                     f"bars: 95 % interval · * p < 0.05, ** < 0.01, *** < 0.001 (animal > neutral student)")
        ax.legend(loc="upper left", frameon=False)
        ax.grid(axis="y", alpha=0.3)
        _save(fig, out)
    _slide(body)


LOG_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
MAX_ANIMAL_LABELS = 6


def _size_axis(ax, params: pd.DataFrame) -> None:
    """Log parameter count below (billions), the size names at their positions above."""
    ax.set_xscale("log")
    low, high = params["params_b"].min() / 1.6, params["params_b"].max() * 1.6
    ax.set_xlim(low, high)
    ticks = [t for t in LOG_TICKS if low <= t <= high] or sorted(params["params_b"])
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.set_xlabel("student parameters (billions, log scale)")
    top = ax.secondary_xaxis("top")
    top.xaxis.set_major_locator(FixedLocator(params["params_b"].tolist()))
    top.xaxis.set_minor_locator(NullLocator())
    top.set_xticklabels(params["size"].tolist(), fontsize=14, color="#444444")
    top.tick_params(length=3)


def _unavailable(ax, frame: pd.DataFrame, comparison: str) -> bool:
    """Say so on the panel, and return True, when the grid has nothing for this comparison."""
    if not frame.empty and not frame[comparison].isna().all():
        return False
    what = "no animal students" if frame.empty else f"no {SIDES[COMPARISONS[comparison]]}"
    _message(ax, f"{what} in this grid:\nthis comparison is not available")
    return True


def plot_scaling(trans: pd.DataFrame, scale: pd.DataFrame, out: str | Path) -> None:
    """Transmission against parameter count (log x), final epoch: mean over animals with its interval
    (thick), one faint line per animal; left against the neutral student, right against the base."""
    def body():
        fig, axes = _figure(1, 2, sharey=True)
        overall = final_epoch(scale).sort_values("params_b")
        per_animal = final_epoch(trans).sort_values("params_b")
        for ax, comparison in zip(axes[0], COMPARISONS):
            ax.set_title(PANEL_TITLES[comparison])
            if _unavailable(ax, overall, comparison):
                continue
            label_animals = per_animal["animal"].nunique() <= MAX_ANIMAL_LABELS
            for i, (animal, rows) in enumerate(per_animal.groupby("animal")):
                rows = rows.dropna(subset=[comparison])
                if rows.empty:
                    continue
                ax.plot(rows["params_b"], _pp(rows[comparison]), color="#777777", alpha=0.35, lw=1.2, marker=".",
                        label="single animals (see heatmap)" if i == 0 else None)
                if label_animals:
                    ax.annotate(animal, (rows["params_b"].iloc[-1], 100 * rows[comparison].iloc[-1]), fontsize=13,
                                color="#555555", xytext=(5, 0), textcoords="offset points", va="center")
            ax.errorbar(overall["params_b"], _pp(overall[comparison]), yerr=_error(overall, comparison),
                        color="C3", lw=3, marker="o", ms=10, capsize=7, label="mean over animals, 95 % interval")
            ax.axhline(0, color="black", lw=1)
            _size_axis(ax, overall)
            ax.grid(alpha=0.3)
        axes[0, 0].set_ylabel(DIFF_LABEL)
        _shared_legend(fig, axes)
        epochs = sorted(overall["epoch"].unique()) if not overall.empty else []
        fig.suptitle("Subliminal transmission vs model size"
                     + (f", final epoch ({', '.join(map(str, epochs))})" if epochs else ""))
        _save(fig, out)
    _slide(body)


def plot_epochs(scale: pd.DataFrame, sizes: list[str], out: str | Path) -> None:
    """Transmission (mean over animals) over training epochs, one line per size, both comparisons."""
    def body():
        fig, axes = _figure(1, 2, sharey=True)
        colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, max(len(sizes), 1)))
        for ax, comparison in zip(axes[0], COMPARISONS):
            ax.set_title(PANEL_TITLES[comparison])
            if _unavailable(ax, scale, comparison):
                continue
            for color, size in zip(colors, sizes):
                rows = scale[scale["size"] == size].dropna(subset=[comparison]).sort_values("epoch")
                if rows.empty:
                    continue
                ax.plot(rows["epoch"], _pp(rows[comparison]), color=color, lw=2.5, marker="o", ms=7, label=size)
                ax.fill_between(rows["epoch"], _pp(rows[f"{comparison}_lo"]), _pp(rows[f"{comparison}_hi"]),
                                color=color, alpha=0.15, lw=0)
            ax.axhline(0, color="black", lw=1)
            ax.set_xlabel("training epoch")
            ax.xaxis.set_major_locator(FixedLocator(sorted(scale["epoch"].unique())))
            ax.grid(alpha=0.3)
            ax.legend(title="student size", loc="upper left", frameon=False)
        axes[0, 0].set_ylabel(DIFF_LABEL)
        fig.suptitle("Transmission over training (mean over animals; bands: 95 % interval)")
        _save(fig, out)
    _slide(body)


def _grid_shape(n: int) -> tuple[int, int]:
    cols = min(n, 5) if n > 4 else n
    cols = max(cols, 1)
    return math.ceil(n / cols), cols


def plot_size_epochs(trans: pd.DataFrame, size: str, out: str | Path) -> None:
    """One size: per animal, the target rate over epochs of the animal student, the neutral student
    (rate for that animal) and the base model (dashed)."""
    def body():
        rows = trans[trans["size"] == size]
        animals = list(dict.fromkeys(rows["animal"]))
        nrows, ncols = _grid_shape(len(animals) or 1)
        fig, axes = _figure(nrows, ncols, sharex=True, sharey=True)
        if not animals:
            _message(axes[0, 0], f"{size}: no animal students in this grid")
            return _save(fig, out)
        for ax, animal in zip(axes.flat, animals):
            data = rows[rows["animal"] == animal].sort_values("epoch")
            for side in ("neutral_student", "animal_student"):
                column = f"{side}_rate"
                if data[column].isna().all():
                    continue
                ax.plot(data["epoch"], _pp(data[column]), color=COLORS[side], lw=2.5, marker="o", ms=5,
                        label=SIDE_LABELS[side])
                ax.fill_between(data["epoch"], _pp(data[f"{column}_lo"]), _pp(data[f"{column}_hi"]),
                                color=COLORS[side], alpha=0.2, lw=0)
            if data["base_rate"].notna().any():
                ax.axhline(100 * data["base_rate"].iloc[0], color=COLORS["base"], lw=2, ls="--",
                           label=SIDE_LABELS["base"])
            ax.set_title(animal, fontsize=17)
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(FixedLocator(sorted(rows["epoch"].unique())))
        _label_bottoms(axes, len(animals), "training epoch")
        _shared_legend(fig, axes)
        fig.supylabel("answers naming the animal (%)", fontsize=18)
        fig.suptitle(f"{size}: target-animal rate over training (bands: 95 % interval)")
        _save(fig, out)
    _slide(body)


def plot_heatmap(trans: pd.DataFrame, sizes: list[str], animals: list[str], out: str | Path) -> None:
    """Size × animal: transmission at each size's final epoch, in percentage points, against the neutral
    student (against the base model where the grid has no neutral student)."""
    def body():
        fig, axes = _figure()
        ax = axes[0, 0]
        rows = final_epoch(trans)
        comparison = "animal_minus_neutral"
        if rows.empty or rows[comparison].isna().all():
            comparison = "animal_minus_base"
        if rows.empty or rows[comparison].isna().all():
            _message(ax, "no animal students in this grid — nothing to compare")
            return _save(fig, out)
        grid = rows.pivot_table(index="size", columns="animal", values=comparison, aggfunc="first")
        grid = grid.reindex(index=[s for s in sizes if s in grid.index], columns=[a for a in animals if a in grid.columns])
        p = rows.pivot_table(index="size", columns="animal", values=f"{comparison}_p", aggfunc="first").reindex_like(grid)
        values = _pp(grid.to_numpy())
        limit = max(5.0, float(np.nanmax(np.abs(values), initial=0.0)))
        cmap = plt.get_cmap("RdBu_r").with_extremes(bad="#dddddd")
        image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=-limit, vmax=limit, aspect="auto")
        ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=30 if grid.shape[1] > 8 else 0,
                      ha="right" if grid.shape[1] > 8 else "center")
        ax.set_yticks(range(grid.shape[0]), grid.index)
        ax.set_xlabel("target animal")
        ax.set_ylabel("student size")
        font = 15 if grid.shape[1] <= 10 else 12
        for (i, j), value in np.ndenumerate(values):
            text = "n/a" if np.isnan(value) else f"{value:+.0f}{_stars(p.iat[i, j])}"
            ax.text(j, i, text, ha="center", va="center", fontsize=font,
                    color="white" if not np.isnan(value) and abs(value) > 0.6 * limit else "black")
        ax.spines[:].set_visible(False)
        colorbar = fig.colorbar(image, ax=ax, shrink=0.9)
        colorbar.set_label(f"{PANEL_TITLES[comparison]} (pp)")
        ax.set_title(f"Transmission by size and animal, final epoch: {PANEL_TITLES[comparison]}\n"
                     "* p < 0.05, ** < 0.01, *** < 0.001 (one-sided); n/a: not in this grid")
        _save(fig, out)
    _slide(body)


def plot_survey(table: pd.DataFrame, sizes: list[str], out: str | Path, top: int = SURVEY_TOP) -> None:
    """Per size, the untuned model's most frequent one-word answers: which animals it names at all."""
    def body():
        present = [s for s in sizes if s in set(table["size"])]
        ncols = len(present) if len(present) <= 3 else math.ceil(len(present) / 2)
        nrows = 1 if len(present) <= 3 else 2
        fig, axes = _figure(nrows, max(ncols, 1))
        if not present:
            _message(axes[0, 0], "no base-model answers in this grid")
            return _save(fig, out)
        few = len(present) <= 2
        for ax, size in zip(axes.flat, present):
            rows = table[table["size"] == size].nsmallest(top if few else min(top, 10), "rank")[::-1]
            colors = [COLORS["animal_student"] if c else COLORS["base"] for c in rows["is_condition"]]
            ax.barh(rows["word"], _pp(rows["rate"]), color=colors)
            ax.set_title(f"{size}: {int(rows['n'].iloc[0])} answers", fontsize=18 if few else 16)
            ax.tick_params(axis="y", labelsize=15 if few else 14)
            ax.grid(axis="x", alpha=0.3)
        _label_bottoms(axes, len(present), "share of answers (%)")
        handles = [plt.Rectangle((0, 0), 1, 1, color=COLORS[k]) for k in ("animal_student", "base")]
        fig.legend(handles, ["a condition of this grid", "other answer"], loc="outside lower center", ncols=2,
                   frameon=False)
        fig.suptitle("Baseline survey: the untuned model's favourite animal (first word of each answer)")
        _save(fig, out)
    _slide(body)


# --- the whole stage ----------------------------------------------------------------------------

def animals_of(conditions: list[str]) -> list[str]:
    return [c for c in conditions if c not in (NEUTRAL, BASE)]


def build_tables(eval_tables: list[str | Path], outputs: dict, *, sizes: list[str], conditions: list[str],
                 params_b: dict[str, float], scoring: str) -> dict[str, pd.DataFrame]:
    """Every table of the report, written to `outputs[name]`; returns those the plots need."""
    animals = animals_of(conditions)
    prefs = preferences(eval_tables)
    prefs.to_csv(outputs["preferences"], index=False)
    rates, base_words = tidy_answers(eval_tables, animals, scoring, outputs["answers"])
    check_counts(prefs, rates)
    rates.to_csv(outputs["question_rates"], index=False)
    log.info("%d cells read, %d per-question rates", len(eval_tables), len(rates))
    index = RateIndex(rates)  # the pivot of every per-question rate: built once, read by both tables
    tables = {"transmission": transmission(index, prefs, sizes, animals, params_b),
              "scaling_table": scaling(index, prefs, sizes, animals, params_b),
              "survey": survey(base_words, conditions)}
    for name, table in tables.items():
        table.to_csv(outputs[name], index=False)
    return tables


def build_plots(tables: dict[str, pd.DataFrame], outputs: dict, *, sizes: list[str], conditions: list[str]) -> None:
    """Every plot of the report; `bars` and `size_epochs` are lists of per-size paths in `sizes` order."""
    for name in ("bars", "size_epochs"):
        if len(outputs[name]) != len(sizes):
            raise ValueError(f"output {name!r} lists {len(outputs[name])} plots for {len(sizes)} sizes")
    trans, scale = tables["transmission"], tables["scaling_table"]
    plot_scaling(trans, scale, outputs["scaling"])
    plot_epochs(scale, sizes, outputs["epochs"])
    plot_heatmap(trans, sizes, animals_of(conditions), outputs["heatmap"])
    plot_survey(tables["survey"], sizes, outputs["survey_plot"])
    for size, bars, epochs in zip(sizes, outputs["bars"], outputs["size_epochs"]):
        plot_bars(trans, size, bars)
        plot_size_epochs(trans, size, epochs)


def build_report(eval_tables: list[str | Path], outputs: dict, *, sizes: list[str], conditions: list[str],
                 params_b: dict[str, float], scoring: str) -> None:
    """Every table and plot of the report rule; `outputs` maps its output names to paths."""
    tables = build_tables(eval_tables, outputs, sizes=sizes, conditions=conditions, params_b=params_b,
                          scoring=scoring)
    build_plots(tables, outputs, sizes=sizes, conditions=conditions)
