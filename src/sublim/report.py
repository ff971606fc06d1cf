"""The report stage: tidy tables across all cells and the slide plots."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from sublim.config import NEUTRAL  # noqa: E402

SLIDE = {"figsize": (14, 8), "dpi": 150}
BASE = "base"


def collect(tables: list[str | Path]) -> pd.DataFrame:
    frames = [pd.read_csv(t) for t in tables]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def transmission(preferences: pd.DataFrame) -> pd.DataFrame:
    """Per (size, animal, run, epoch): the animal student's rate for its animal, beside the neutral
    student's rate for that animal (same run and epoch) and the base model's."""
    students = preferences[preferences["is_target"]]
    neutral = preferences[preferences["condition"] == NEUTRAL][["size", "run", "epoch", "animal", "rate"]]
    base = preferences[preferences["condition"] == BASE][["size", "animal", "rate"]]
    table = students.rename(columns={"rate": "animal_student_rate"})[
        ["size", "condition", "run", "epoch", "animal_student_rate", "count", "n"]
    ].rename(columns={"condition": "animal"})
    table = table.merge(neutral.rename(columns={"rate": "neutral_student_rate"}),
                        on=["size", "run", "epoch", "animal"], how="left")
    table = table.merge(base.rename(columns={"rate": "base_rate"}), on=["size", "animal"], how="left")
    table["vs_neutral"] = table["animal_student_rate"] - table["neutral_student_rate"]
    table["vs_base"] = table["animal_student_rate"] - table["base_rate"]
    return table.sort_values(["size", "animal", "run", "epoch"]).reset_index(drop=True)


def plot_scaling(table: pd.DataFrame, params_b: dict[str, float], out: str | Path) -> None:
    """Transmission (animal student minus neutral student, final epoch) against parameter count."""
    final = table[table["epoch"] == table.groupby("size")["epoch"].transform("max")].copy()
    final["params_b"] = final["size"].map(params_b)
    per_animal = final.groupby(["animal", "params_b"], as_index=False)["vs_neutral"].mean()
    overall = per_animal.groupby("params_b")["vs_neutral"].agg(["mean", "sem"]).reset_index().fillna(0)
    fig, ax = plt.subplots(**SLIDE)
    for animal, rows in per_animal.groupby("animal"):
        ax.plot(rows["params_b"], 100 * rows["vs_neutral"], color="grey", alpha=0.3, lw=1)
        ax.annotate(animal, (rows["params_b"].iloc[-1], 100 * rows["vs_neutral"].iloc[-1]),
                    fontsize=11, color="grey", alpha=0.8)
    ax.errorbar(overall["params_b"], 100 * overall["mean"], yerr=100 * 1.96 * overall["sem"],
                color="C0", lw=3, marker="o", ms=9, capsize=6, label="mean over animals (95 % interval)")
    ax.axhline(0, color="black", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("student parameters (billions, log scale)", fontsize=18)
    ax.set_ylabel("target-animal rate: animal student − neutral student (pp)", fontsize=18)
    ax.set_title("Subliminal transmission vs model size (final epoch)", fontsize=22)
    ax.tick_params(labelsize=15)
    ax.legend(fontsize=15)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
