"""The report stage's tables: tidy tables across every evaluated cell and the transmission statistics.

Inputs are each cell's answers.jsonl (evaluate stage) and eval.csv (score stage), named with the
cell's size, condition and run by the report rule; the untuned model is condition "base", run 0,
epoch 0. The grid may be any subset of sizes, conditions and runs; a comparison whose data is not in
it is NaN, and the row's `note` says why. Beside each estimate: Benjamini–Hochberg q-values over the
cells of an epoch, the seed's published rates where it has the same cell (sublim.reference; `seed_note`
says what is missing or to be read with care) and the scaling trend (sublim.stats.scaling_trend).
`p_animal_tables` computes the same statistics on P(animal) (sublim.p_animal) for the report_p_animal
rule. Column meanings: README.md, "Results". The slide plots drawn from these tables: sublim.plots.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sublim.atomic import atomic_output
from sublim.config import BASE, animals
from sublim.jsonl import read_jsonl
from sublim.protocol import NEUTRAL_CONDITION as NEUTRAL
from sublim.scoring import EVAL_COLUMNS, Scorer, first_word
from sublim.reference import seed_scoring
from sublim.seeds import derive_seed
from sublim.stats import MISSING, Estimate, add_qvalues, compare, rate_interval, scaling_trend

log = logging.getLogger(__name__)

NO_WORD = "(no word)"

ANSWER_COLUMNS = ["size", "condition", "run", "epoch", "question_index", "sample", "answer", "parsed_animal"]
QUESTION_COLUMNS = ["size", "condition", "run", "epoch", "question_index", "animal", "count", "n", "rate"]
SURVEY_COLUMNS = ["size", "rank", "word", "count", "n", "rate", "is_condition"]
EVAL_REQUIRED = ("size", "condition", "run", "epoch", "animal", "count", "n", "rate")
ANSWER_REQUIRED = ("epoch", "question_index", "sample", "answer")

REFERENCE_REQUIRED = ("size", "condition", "epoch", "animal", "n", "rate", "suspect", "caveat")

SIDES = {"animal_student": "animal student", "neutral_student": "neutral student", "base": "untuned base"}
COMPARISONS = {"animal_minus_neutral": "neutral_student", "animal_minus_base": "base"}
P_COLUMNS = [f"{comparison}_p" for comparison in COMPARISONS]


def _estimate_columns(prefix: str, with_test: bool) -> list[str]:
    keys = ["", "_lo", "_hi", "_se"] + (["_p", "_q", "_method"] if with_test else ["_method"])
    return [prefix + key for key in keys]


def _group_columns(key: list[str], seed: list[str]) -> list[str]:
    columns = key + ["runs_animal", "runs_neutral", "n_questions"]
    for side in SIDES:
        columns += _estimate_columns(f"{side}_rate", with_test=False)
    for comparison in COMPARISONS:
        columns += _estimate_columns(comparison, with_test=True)
    return columns + seed + ["note"]


# The seed's published run 0 beside our rates (one run, so no interval of its own here).
SEED_RATES = ["seed_animal_student_rate", "seed_neutral_student_rate", "seed_minus_neutral"]
SEED_TRANSMISSION = SEED_RATES + ["seed_n", "seed_suspect", "seed_note"]
SEED_SCALING = SEED_RATES + ["seed_n_animals", "seed_suspect", "seed_note"]
TRANSMISSION_COLUMNS = _group_columns(["size", "params_b", "animal", "epoch"], SEED_TRANSMISSION)
SCALING_COLUMNS = _group_columns(["size", "params_b", "epoch", "n_animals"], SEED_SCALING)


# --- reading the evaluate and score stages' files -----------------------------------------------

@dataclass(frozen=True)
class Cell:
    """One evaluated cell as the report rule names it: its identity and its two files."""

    size: str
    condition: str
    run: int
    table: str | Path  # eval.csv
    answers: str | Path  # answers.jsonl

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.size, self.condition, self.run)

    def _identify(self, frame: pd.DataFrame) -> pd.DataFrame:
        frame["size"], frame["condition"], frame["run"] = self.size, self.condition, self.run
        return frame


def read_rule_table(path: str | Path, required, rule: str) -> pd.DataFrame:
    """A CSV the workflow's `rule` makes, with its `required` columns; the error says what to rerun."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run the workflow so the {rule} rule makes it")
    table = pd.read_csv(path)
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {', '.join(missing)}; delete it and rerun the {rule} rule")
    return table


def read_eval(cell: Cell) -> pd.DataFrame:
    table = cell._identify(read_rule_table(cell.table, EVAL_REQUIRED, "score"))
    table["is_target"] = table["animal"] == table["condition"]
    return table[EVAL_COLUMNS]


def preferences(cells: list[Cell]) -> pd.DataFrame:
    """Every eval.csv stacked: per (size, condition, run, epoch, animal) the count of answers naming it."""
    frames = [read_eval(cell) for cell in cells]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=EVAL_COLUMNS)
    return pd.concat(frames, ignore_index=True).sort_values(EVAL_COLUMNS[:5], ignore_index=True)


def read_answers(cell: Cell) -> pd.DataFrame:
    frame = pd.DataFrame(read_jsonl(cell.answers, required=ANSWER_REQUIRED),
                         columns=list(ANSWER_REQUIRED) + ["parsed_animal"])
    if frame["parsed_animal"].isna().any():
        frame["parsed_animal"] = frame["answer"].map(first_word)
    frame["answer"] = frame["answer"].astype(str)
    return cell._identify(frame)[ANSWER_COLUMNS]


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


def tidy_answers(cells: list[Cell], animals: list[str], method: str,
                 answers_out: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Writes answers.csv one cell at a time (the full grid has millions of answers); returns the
    per-question rates of every cell and the base models' answers (size, parsed_animal)."""
    scorer = Scorer(animals, method)
    rates, base_words = [], []
    with atomic_output(answers_out) as partial, partial.open("w", newline="") as handle:
        pd.DataFrame(columns=ANSWER_COLUMNS).to_csv(handle, index=False)
        for cell in cells:
            answers = read_answers(cell)
            answers.to_csv(handle, index=False, header=False)
            rates.append(question_rates(answers, scorer))
            if cell.condition == BASE:
                base_words.append(answers[["size", "parsed_animal"]])
    rates = [r for r in rates if not r.empty]
    base_words = [b for b in base_words if not b.empty]
    return (pd.concat(rates, ignore_index=True) if rates else pd.DataFrame(columns=QUESTION_COLUMNS),
            pd.concat(base_words, ignore_index=True) if base_words else pd.DataFrame(columns=["size", "parsed_animal"]))


def check_counts(prefs: pd.DataFrame, rates: pd.DataFrame, cells: list[Cell]) -> None:
    """eval.csv and answers.jsonl of a cell must agree under the configured scoring; if they do not,
    one of them is stale (e.g. a file replaced by hand) and the report would mix two metrics."""
    keys = ["size", "condition", "run", "epoch", "animal"]
    rescored = rates.groupby(keys, as_index=False)[["count", "n"]].sum()
    joined = prefs[keys + ["count", "n"]].merge(rescored, on=keys, how="outer", suffixes=("_eval", "_answers"))
    bad = joined[(joined["count_eval"] != joined["count_answers"]) | (joined["n_eval"] != joined["n_answers"])]
    if not bad.empty:
        row = bad.iloc[0]
        cell = {c.key: c for c in cells}[(row["size"], row["condition"], row["run"])]
        raise ValueError(
            f"{Path(cell.table).parent}: eval.csv and answers.jsonl disagree for epoch {row['epoch']}, "
            f"animal {row['animal']} (eval.csv {row['count_eval']}/{row['n_eval']}, answers re-scored with "
            f"the configured scoring {row['count_answers']}/{row['n_answers']}; {len(bad)} rows in all). "
            f"One is stale: re-score with `snakemake --forcerun score score_base`"
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
                f"size {size}, condition {condition}: runs {', '.join(map(str, block.index))} were asked "
                f"different questions at epoch {epoch}; rerun evaluation so every run uses the same settings"
            )
        return block


def _fill(row: dict, prefix: str, estimate: Estimate, with_test: bool) -> None:
    """The estimate's columns; `_q` is left for add_qvalues, which needs every cell's p."""
    row.update({prefix: estimate.value, f"{prefix}_lo": estimate.lo, f"{prefix}_hi": estimate.hi,
                f"{prefix}_se": estimate.se, f"{prefix}_method": estimate.method})
    if with_test:
        row[f"{prefix}_p"] = estimate.p


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


# --- the seed's published run 0, overlaid -------------------------------------------------------

def read_reference(path: str | Path) -> pd.DataFrame:
    """reference_seed.csv (the reference_seed rule: the seed's cells re-scored with the grid's scoring)."""
    table = read_rule_table(path, REFERENCE_REQUIRED, "reference_seed")
    table["caveat"] = table["caveat"].fillna("")
    return table


class SeedRates:
    """The seed's rate per (size, condition, epoch, animal), its answer count and its size's caveat."""

    def __init__(self, reference: pd.DataFrame, scoring: str):
        keys = zip(reference["size"], reference["condition"], reference["epoch"], reference["animal"])
        self.rates = {key: (float(rate), int(n)) for key, rate, n in zip(keys, reference["rate"], reference["n"])}
        self.caveats = dict(zip(reference["size"], reference["caveat"]))
        self.suspect = {size for size, flag in zip(reference["size"], reference["suspect"]) if flag}
        self.scoring_note = "" if scoring == seed_scoring() else (
            f"seed re-scored with this grid's {scoring} scoring (the seed counted {seed_scoring()})")

    def get(self, size: str, condition: str, epoch: int, animal: str) -> tuple[float, int] | None:
        return self.rates.get((size, condition, int(epoch), animal))

    def sides(self, size: str, epoch: int, animal: str) -> tuple[float, float, int | float, list[str]]:
        """The seed's animal-student and neutral-student rate for `animal` (NaN: no such cell), the
        answers per cell, and what is missing."""
        found = {who: self.get(size, who, epoch, animal) for who in (animal, NEUTRAL)}
        missing = [f"seed run 0 has no {who} student at {size}, epoch {epoch}"
                   for who, cell in found.items() if cell is None]
        rates = [cell[0] if cell else math.nan for cell in found.values()]
        n = next((cell[1] for cell in found.values() if cell), math.nan)
        return rates[0], rates[1], n, missing

    def notes(self, size: str, missing: list[str], present: bool) -> dict:
        """seed_suspect and seed_note: what is missing, and where the seed has a value its caveats."""
        caveats = [self.caveats.get(size, ""), self.scoring_note] if present else []
        return {"seed_suspect": present and size in self.suspect,
                "seed_note": "; ".join(filter(None, [*missing, *caveats]))}


def _with_columns(table: pd.DataFrame, records: list[dict], columns: list[str]) -> pd.DataFrame:
    extra = pd.DataFrame.from_records(records, index=table.index, columns=columns)
    return table.assign(**{c: extra[c] for c in columns})


def seed_transmission(table: pd.DataFrame, seed: SeedRates) -> pd.DataFrame:
    """transmission's rows with the seed's animal-student and neutral-student rates of the same (size,
    animal, epoch) and their difference; NaN where the seed has no such cell, and `seed_note` says so."""
    records = []
    for size, animal, epoch in zip(table["size"], table["animal"], table["epoch"]):
        mine, neutral, n, missing = seed.sides(size, epoch, animal)
        records.append({"seed_animal_student_rate": mine, "seed_neutral_student_rate": neutral,
                        "seed_minus_neutral": mine - neutral, "seed_n": n,
                        **seed.notes(size, missing, present=len(missing) < 2)})
    return _with_columns(table, records, SEED_TRANSMISSION)


def seed_scaling(table: pd.DataFrame, seed: SeedRates, animals: list[str]) -> pd.DataFrame:
    """scaling's rows with the seed's means over the grid's animals, where the seed has every one of its
    animal students at that (size, epoch); otherwise NaN, and `seed_note` says how many it has."""
    records = []
    for size, epoch in zip(table["size"], table["epoch"]):
        sides = [seed.sides(size, epoch, animal) for animal in animals]
        have = sum(not math.isnan(mine) for mine, *_ in sides)
        if not animals or have < len(animals):
            records.append({"seed_animal_student_rate": math.nan, "seed_neutral_student_rate": math.nan,
                            "seed_minus_neutral": math.nan, "seed_n_animals": have, "seed_suspect": False,
                            "seed_note": f"seed run 0 has {have} of this grid's {len(animals)} animal students "
                                         f"at {size}, epoch {epoch}: no mean"})
            continue
        mine = float(np.mean([m for m, *_ in sides]))
        neutral = float(np.mean([n for _, n, *_ in sides]))  # NaN when the seed has no neutral student here
        missing = sorted({text for *_, gaps in sides for text in gaps})
        records.append({"seed_animal_student_rate": mine, "seed_neutral_student_rate": neutral,
                        "seed_minus_neutral": mine - neutral, "seed_n_animals": have,
                        **seed.notes(size, missing, present=True)})
    return _with_columns(table, records, SEED_SCALING)


# --- the tables of the report rule ---------------------------------------------------------------

def with_qvalues(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Benjamini–Hochberg q-values beside each p-value column, over the cells of an epoch."""
    return add_qvalues(table, P_COLUMNS)[columns] if not table.empty else table[columns]


def trends(prefs: pd.DataFrame, sizes: list[str], animals: list[str], params_b: dict[str, float]) -> pd.DataFrame:
    """scaling_trend against the neutral student and against the untuned base model, one table."""
    return pd.concat([scaling_trend(prefs, sizes, animals, params_b, against) for against in (NEUTRAL, BASE)],
                     ignore_index=True)


def build_tables(cells: list[Cell], outputs: dict, *, sizes: list[str], conditions: list[str],
                 params_b: dict[str, float], scoring: str, reference: str | Path) -> dict[str, pd.DataFrame]:
    """Every table of the report, written to `outputs[name]`; returns those the plots need.
    `reference`: reference_seed.csv, the seed's cells scored with the same `scoring`."""
    grid_animals = animals(conditions)
    prefs = preferences(cells)
    prefs.to_csv(outputs["preferences"], index=False)
    rates, base_words = tidy_answers(cells, grid_animals, scoring, outputs["answers"])
    check_counts(prefs, rates, cells)
    rates.to_csv(outputs["question_rates"], index=False)
    log.info("%d cells read, %d per-question rates", len(cells), len(rates))
    index = RateIndex(rates)  # the pivot of every per-question rate: built once, read by both tables
    seed = SeedRates(read_reference(reference), scoring)
    tables = {"transmission": with_qvalues(seed_transmission(transmission(index, prefs, sizes, grid_animals, params_b),
                                                             seed), TRANSMISSION_COLUMNS),
              "scaling_table": with_qvalues(seed_scaling(scaling(index, prefs, sizes, grid_animals, params_b), seed,
                                                         grid_animals), SCALING_COLUMNS),
              "scaling_trend": trends(prefs, sizes, grid_animals, params_b),
              "survey": survey(base_words, conditions)}
    for name, table in tables.items():
        table.to_csv(outputs[name], index=False)
    return tables


# --- P(animal) (sublim.p_animal) beside the sampled rate -------------------------------------------

P_ANIMAL_REQUIRED = ("epoch", "question_index", "animal", "p_animal")
P_ANIMAL_RATES = ["size", "condition", "run", "epoch", "question_index", "animal", "rate"]
# the sampled rate's columns of transmission.csv / scaling.csv set beside P(animal), as `sampled_…`
SAMPLED = ["animal_student_rate", "neutral_student_rate", "base_rate", "animal_minus_neutral",
           "animal_minus_neutral_lo", "animal_minus_neutral_hi", "animal_minus_neutral_p"]


def read_p_animal(size: str, condition: str, run: int, path: str | Path) -> pd.DataFrame:
    """A cell's p_animal.csv, named by the rule, as per-question rates in the report's question_rates
    layout (`rate` = P(animal))."""
    frame = read_rule_table(path, P_ANIMAL_REQUIRED, "p_animal")
    frame["size"], frame["condition"], frame["run"] = size, condition, int(run)
    return frame.rename(columns={"p_animal": "rate"})[P_ANIMAL_RATES]


def _renamed(columns: list[str]) -> dict[str, str]:
    """transmission's column names for P(animal): `<side>_rate…` → `<side>_p_animal…`, `animal_minus_…` →
    `p_animal_minus_…`."""
    names = {}
    for column in columns:
        for side in SIDES:
            if column.startswith(f"{side}_rate"):
                names[column] = f"{side}_p_animal" + column[len(f"{side}_rate"):]
        if column.startswith(tuple(COMPARISONS)):
            names[column] = "p_" + column
    return names


def _statistics(table: pd.DataFrame, columns: list[str], seed_columns: list[str]) -> pd.DataFrame:
    kept = [c for c in columns if c not in seed_columns]
    table = add_qvalues(table, P_COLUMNS)[kept] if not table.empty else table[kept]
    return table.rename(columns=_renamed(kept))


def _beside(table: pd.DataFrame, sampled: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    """The sampled rate's columns (`sampled_…`) joined on `key`, before `note`; NaN where the sampled
    table has no such row."""
    sampled = sampled[key + SAMPLED].rename(columns={c: f"sampled_{c}" for c in SAMPLED})
    joined = table.merge(sampled, on=key, how="left")
    return joined[[c for c in joined.columns if c != "note"] + ["note"]]


def p_animal_tables(cells: list[tuple[dict, str | Path]], sampled: pd.DataFrame, sampled_scaling: pd.DataFrame, *,
                    sizes: list[str], conditions: list[str], params_b: dict[str, float]
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """p_animal.csv and p_animal_scaling.csv: the report's transmission and scaling statistics computed on
    P(animal) (each question's probability in place of its sampled rate; same intervals, tests and
    q-values), with the sampled rate's columns of transmission.csv (`sampled`) and scaling.csv
    (`sampled_scaling`) beside them. `cells`: each cell ({size, condition, run}) with its p_animal.csv."""
    grid_animals = animals(conditions)
    frames = [read_p_animal(cell["size"], cell["condition"], cell["run"], path) for cell, path in cells]
    rates = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=P_ANIMAL_RATES)
    for (size, condition, run), rows in rates.groupby(["size", "condition", "run"]):
        absent = sorted(set(grid_animals) - set(rows["animal"]))
        if absent:
            raise ValueError(f"{size}/{condition}/run-{run}: p_animal.csv has no {', '.join(absent)}; rerun "
                             f"its job (`snakemake --forcerun p_animal p_animal_base`)")
    rates = rates[rates["animal"].isin(grid_animals)]
    index = RateIndex(rates)
    present = rates[["size", "condition", "epoch"]].drop_duplicates()
    per_animal = _statistics(transmission(index, present, sizes, grid_animals, params_b), TRANSMISSION_COLUMNS,
                             SEED_TRANSMISSION)
    per_size = _statistics(scaling(index, present, sizes, grid_animals, params_b), SCALING_COLUMNS, SEED_SCALING)
    return (_beside(per_animal, sampled, ["size", "animal", "epoch"]),
            _beside(per_size, sampled_scaling, ["size", "epoch"]))
