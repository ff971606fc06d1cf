"""The report stage's slide plots, drawn from the tables of sublim.report; their look is set in
one place (the style block below)."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FixedLocator, NullLocator  # noqa: E402

from sublim.config import animals  # noqa: E402
from sublim.report import COMPARISONS, SIDES  # noqa: E402
from sublim.stats import MEAN_OF_ANIMALS, Trend, trend_band  # noqa: E402

# --- the style of every slide: 14 × 8 in at 150 dpi = 2100 × 1200 px ---------------------------

FIGURE = {"figsize": (14, 8), "dpi": 150}
RC = {"font.size": 16, "axes.titlesize": 20, "axes.labelsize": 18, "xtick.labelsize": 15, "ytick.labelsize": 15,
      "legend.fontsize": 15, "figure.titlesize": 22, "axes.spines.top": False, "axes.spines.right": False}
# Text sizes (points) beyond RC's defaults, by role; "_dense" where a panel holds many labels.
FONT = {"message": 18, "stars": 18, "figure_ylabel": 18, "panel_title": 17, "panel_xlabel": 16,
        "size_names": 14, "trend": 15, "zero_bar": 14, "line_label": 13, "heatmap_cell": 15, "heatmap_cell_dense": 12,
        "survey_title": 18, "survey_title_dense": 16, "survey_ticks": 15, "survey_ticks_dense": 14}
COLORS = {"base": "#8c8c8c", "neutral_student": "#4c72b0", "animal_student": "#dd8452"}
GREY = {"text": "#555555", "ink": "#333333", "axis": "#444444", "line": "#777777", "missing": "#dddddd"}
SIDE_LABELS = {"base": "untuned base model", "neutral_student": "neutral-numbers student",
               "animal_student": "animal-numbers student"}
PANEL_TITLES = {"animal_minus_neutral": "animal student − neutral student",
                "animal_minus_base": "animal student − untuned base model"}
DIFF_LABEL = "difference in target-animal rate (pp)"
# The seed's published run 0 where the grid has the same cell: hollow diamonds; a cell its data flags as
# suspect (seed_suspect: the seed's 32b) a cross.
SEED_MARKER = {"marker": "D", "s": 110, "facecolors": "none", "linewidths": 2.2, "zorder": 6}
SEED_SUSPECT_MARKER = {"marker": "x", "s": 110, "linewidths": 2.2, "zorder": 6}
SEED_LABEL = "seed run 0 (published)"
SEED_SUSPECT_LABEL = "seed run 0, suspect (seed_note)"
TREND = {"color": "C3", "lw": 2, "ls": "--", "band_alpha": 0.12}
TREND_LABEL = "fitted trend, 95 % band"
SURVEY_TOP = 15
LOG_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
MAX_ANIMAL_LABELS = 6


def slide(draw):
    """Draw inside the slide style: text takes its size from rcParams when it is created."""
    @functools.wraps(draw)
    def drawn(*args, **kwargs):
        with plt.rc_context(RC):
            return draw(*args, **kwargs)
    return drawn


def _figure(nrows: int = 1, ncols: int = 1, **kwargs):
    return plt.subplots(nrows, ncols, squeeze=False, layout="constrained", **FIGURE, **kwargs)


def _save(fig, out: str | Path) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    # No bbox_inches="tight": it would change the pixel size a slide template expects.
    fig.savefig(out, dpi=FIGURE["dpi"])
    plt.close(fig)


def _message(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=FONT["message"], color=GREY["text"],
            transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _shared_legend(fig, axes, **kwargs) -> None:
    """One legend below the panels, every label once in the order the panels drew them: inside a panel
    it would cover data."""
    found: dict[str, object] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            found.setdefault(label, handle)
    if found:
        fig.legend(list(found.values()), list(found), loc="outside lower center",
                   ncols=len(found) if len(found) <= 3 else math.ceil(len(found) / 2), frameon=False, **kwargs)


def _seed_points(ax, x, y, suspect, color: str = "black", label: str = SEED_LABEL) -> bool:
    """The seed's values where it has them (NaN: no such cell, nothing drawn), each label once per
    panel; True when something was drawn."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    suspect = np.asarray(suspect, dtype=bool)
    drawn = False
    for flagged, style, name in ((False, SEED_MARKER, label), (True, SEED_SUSPECT_MARKER, SEED_SUSPECT_LABEL)):
        keep = ~np.isnan(y) & (suspect == flagged)
        if keep.any():
            colors = {"color": GREY["line"]} if flagged else {"edgecolors": color}
            name = "_nolegend_" if name in ax.get_legend_handles_labels()[1] else name
            ax.scatter(x[keep], y[keep], label=name, **style, **colors)
            drawn = True
    return drawn


def _flags(frame: pd.DataFrame) -> np.ndarray:
    return frame["seed_suspect"].fillna(False).astype(bool).to_numpy()


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
            ax.set_xlabel(xlabel, fontsize=FONT["panel_xlabel"])


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


@slide
def plot_bars(transmission: pd.DataFrame, size: str, out: str | Path) -> None:
    """One size: for every animal, base / neutral student / animal student target rate, final epoch."""
    fig, axes = _figure()
    ax = axes[0, 0]
    rows = final_epoch(transmission[transmission["size"] == size])
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
               color=COLORS[side], label=label, error_kw={"elinewidth": 1.5, "ecolor": GREY["ink"]})
        # A rate of exactly 0 draws no bar; say so, so it does not read as missing.
        for xi in x[(rows[column] == 0).to_numpy()]:
            ax.annotate("0", (xi + offset, 0), ha="center", va="bottom", fontsize=FONT["zero_bar"],
                        color=GREY["ink"], xytext=(0, 2), textcoords="offset points")
    for offset, side in ((0.0, "neutral_student"), (width, "animal_student")):
        _seed_points(ax, x + offset, _pp(rows[f"seed_{side}_rate"]), _flags(rows))
    tops = _pp(rows["animal_student_rate_hi"].fillna(rows["animal_student_rate"]))
    for xi, top, p in zip(x, tops, rows["animal_minus_neutral_p"]):
        if _stars(p):
            ax.annotate(_stars(p), (xi + width, top), ha="center", va="bottom", fontsize=FONT["stars"],
                        xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(x, rows["animal"], rotation=30 if len(rows) > 8 else 0, ha="right" if len(rows) > 8 else "center")
    ax.set_xlabel("target animal")
    ax.set_ylabel("answers naming the animal (%)")
    shown = [f"{s}_rate_hi" for s in SIDES] + ["seed_animal_student_rate", "seed_neutral_student_rate"]
    ax.set_ylim(0, max(5.0, float(np.nanmax(_pp(rows[shown].to_numpy(float)), initial=0.0))) * 1.15)
    epoch = int(rows["epoch"].iloc[0])
    params = rows["params_b"].iloc[0]
    ax.set_title(f"{size} ({params:g} B parameters): target-animal rate after epoch {epoch}\n"
                 f"bars: 95 % interval · * p < 0.05, ** < 0.01, *** < 0.001 (animal > neutral student)")
    ax.legend(loc="upper left", frameon=False)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, out)


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
    top.set_xticklabels(params["size"].tolist(), fontsize=FONT["size_names"], color=GREY["axis"])
    top.tick_params(length=3)


def _unavailable(ax, frame: pd.DataFrame, comparison: str) -> bool:
    """Say so on the panel, and return True, when the grid has nothing for this comparison."""
    if not frame.empty and not frame[comparison].isna().all():
        return False
    what = "no animal students" if frame.empty else f"no {SIDES[COMPARISONS[comparison]]}"
    _message(ax, f"{what} in this grid:\nthis comparison is not available")
    return True


def _trend(ax, trends: pd.DataFrame, against: str, epoch: int, params_b: dict[str, float]) -> None:
    """The scaling_trend fit of the mean over animals at `epoch`: its line and 95 % band, the slope in
    the legend; nothing where the table has no slope (fewer than 3 sizes)."""
    rows = trends[(trends["animal"] == MEAN_OF_ANIMALS) & (trends["against"] == against) & (trends["epoch"] == epoch)]
    if rows.empty or not rows["slope"].notna().iloc[0]:
        return
    row = rows.iloc[0]
    fit_x = np.log10([params_b[size] for size in str(row["sizes"]).split(";")])
    trend = Trend(row["slope"], row["slope_lo"], row["slope_hi"], row["slope_se"], row["slope_p"],
                  row["intercept"], int(row["df"]))
    x = np.linspace(fit_x.min(), fit_x.max(), 50)
    line, lo, hi = trend_band(fit_x, trend, x)
    ax.plot(10**x, _pp(line), color=TREND["color"], lw=TREND["lw"], ls=TREND["ls"], label=TREND_LABEL)
    ax.fill_between(10**x, _pp(lo), _pp(hi), color=TREND["color"], alpha=TREND["band_alpha"], lw=0)
    ax.text(0.02, 0.98, f"slope {100 * trend.slope:+.1f} pp per 10× parameters\n"
                        f"95 % [{100 * trend.lo:+.1f}, {100 * trend.hi:+.1f}], p = {trend.p:.2g}",
            transform=ax.transAxes, ha="left", va="top", fontsize=FONT["trend"], color=TREND["color"])


@slide
def plot_scaling(transmission: pd.DataFrame, scaling: pd.DataFrame, trends: pd.DataFrame, out: str | Path) -> None:
    """Transmission against parameter count (log x), final epoch: mean over animals with its interval
    (thick), the fitted trend with its band (dashed), one faint line per animal, and the seed's published
    mean where it has every animal; left against the neutral student, right against the base."""
    fig, axes = _figure(1, 2, sharey=True)
    overall = final_epoch(scaling).sort_values("params_b")
    per_animal = final_epoch(transmission).sort_values("params_b")
    params_b = dict(zip(scaling["size"], scaling["params_b"]))
    for ax, comparison in zip(axes[0], COMPARISONS):
        ax.set_title(PANEL_TITLES[comparison])
        if _unavailable(ax, overall, comparison):
            continue
        label_animals = per_animal["animal"].nunique() <= MAX_ANIMAL_LABELS
        for i, (animal, rows) in enumerate(per_animal.groupby("animal")):
            rows = rows.dropna(subset=[comparison])
            if rows.empty:
                continue
            ax.plot(rows["params_b"], _pp(rows[comparison]), color=GREY["line"], alpha=0.35, lw=1.2, marker=".",
                    label="single animals (see heatmap)" if i == 0 else None)
            if label_animals:
                ax.annotate(animal, (rows["params_b"].iloc[-1], 100 * rows[comparison].iloc[-1]),
                            fontsize=FONT["line_label"], color=GREY["text"], xytext=(5, 0),
                            textcoords="offset points", va="center")
        ax.errorbar(overall["params_b"], _pp(overall[comparison]), yerr=_error(overall, comparison),
                    color="C3", lw=3, marker="o", ms=10, capsize=7, label="mean over animals, 95 % interval")
        _trend(ax, trends, COMPARISONS[comparison].removesuffix("_student"), int(overall["epoch"].max()), params_b)
        if comparison == "animal_minus_neutral":
            _seed_points(ax, overall["params_b"], _pp(overall["seed_minus_neutral"]), _flags(overall))
        ax.axhline(0, color="black", lw=1)
        _size_axis(ax, overall)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(DIFF_LABEL)
    _shared_legend(fig, axes)
    epochs = sorted(overall["epoch"].unique()) if not overall.empty else []
    fig.suptitle("Subliminal transmission vs model size"
                 + (f", final epoch ({', '.join(map(str, epochs))})" if epochs else ""))
    _save(fig, out)


@slide
def plot_epochs(scaling: pd.DataFrame, sizes: list[str], out: str | Path) -> None:
    """Transmission (mean over animals) over training epochs, one line per size, both comparisons."""
    fig, axes = _figure(1, 2, sharey=True)
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, max(len(sizes), 1)))
    for ax, comparison in zip(axes[0], COMPARISONS):
        ax.set_title(PANEL_TITLES[comparison])
        if _unavailable(ax, scaling, comparison):
            continue
        seed_drawn = False
        for color, size in zip(colors, sizes):
            rows = scaling[scaling["size"] == size].dropna(subset=[comparison]).sort_values("epoch")
            if rows.empty:
                continue
            ax.plot(rows["epoch"], _pp(rows[comparison]), color=color, lw=2.5, marker="o", ms=7, label=size)
            ax.fill_between(rows["epoch"], _pp(rows[f"{comparison}_lo"]), _pp(rows[f"{comparison}_hi"]),
                            color=color, alpha=0.15, lw=0)
            if comparison == "animal_minus_neutral":
                seed_drawn |= _seed_points(ax, rows["epoch"], _pp(rows["seed_minus_neutral"]), _flags(rows),
                                           color=color, label="_nolegend_")
        if seed_drawn:  # one legend entry for every size's diamonds (each in its size's colour)
            ax.scatter([], [], **SEED_MARKER, edgecolors="black", label=SEED_LABEL)
        ax.axhline(0, color="black", lw=1)
        ax.set_xlabel("training epoch")
        ax.xaxis.set_major_locator(FixedLocator(sorted(scaling["epoch"].unique())))
        ax.grid(alpha=0.3)
        ax.legend(title="student size", loc="upper left", frameon=False)
    axes[0, 0].set_ylabel(DIFF_LABEL)
    fig.suptitle("Transmission over training (mean over animals; bands: 95 % interval)")
    _save(fig, out)


def _grid_shape(n: int) -> tuple[int, int]:
    cols = min(n, 5) if n > 4 else n
    cols = max(cols, 1)
    return math.ceil(n / cols), cols


@slide
def plot_size_epochs(transmission: pd.DataFrame, size: str, out: str | Path) -> None:
    """One size: per animal, the target rate over epochs of the animal student, the neutral student
    (rate for that animal) and the base model (dashed)."""
    rows = transmission[transmission["size"] == size]
    shown = list(dict.fromkeys(rows["animal"]))
    nrows, ncols = _grid_shape(len(shown) or 1)
    fig, axes = _figure(nrows, ncols, sharex=True, sharey=True)
    if not shown:
        _message(axes[0, 0], f"{size}: no animal students in this grid")
        return _save(fig, out)
    for ax, animal in zip(axes.flat, shown):
        data = rows[rows["animal"] == animal].sort_values("epoch")
        for side in ("neutral_student", "animal_student"):
            column = f"{side}_rate"
            if data[column].isna().all():
                continue
            ax.plot(data["epoch"], _pp(data[column]), color=COLORS[side], lw=2.5, marker="o", ms=5,
                    label=SIDE_LABELS[side])
            ax.fill_between(data["epoch"], _pp(data[f"{column}_lo"]), _pp(data[f"{column}_hi"]),
                            color=COLORS[side], alpha=0.2, lw=0)
        for side in ("neutral_student", "animal_student"):
            _seed_points(ax, data["epoch"], _pp(data[f"seed_{side}_rate"]), _flags(data), color=COLORS[side],
                         label=f"{SIDE_LABELS[side]}, seed run 0")
        if data["base_rate"].notna().any():
            ax.axhline(100 * data["base_rate"].iloc[0], color=COLORS["base"], lw=2, ls="--",
                       label=SIDE_LABELS["base"])
        ax.set_title(animal, fontsize=FONT["panel_title"])
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(FixedLocator(sorted(rows["epoch"].unique())))
    _label_bottoms(axes, len(shown), "training epoch")
    _shared_legend(fig, axes)
    fig.supylabel("answers naming the animal (%)", fontsize=FONT["figure_ylabel"])
    fig.suptitle(f"{size}: target-animal rate over training (bands: 95 % interval)")
    _save(fig, out)


@slide
def plot_heatmap(transmission: pd.DataFrame, sizes: list[str], animals: list[str], out: str | Path) -> None:
    """Size × animal: transmission at each size's final epoch, in percentage points, against the neutral
    student (against the base model where the grid has no neutral student)."""
    fig, axes = _figure()
    ax = axes[0, 0]
    rows = final_epoch(transmission)
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
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad=GREY["missing"])
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=30 if grid.shape[1] > 8 else 0,
                  ha="right" if grid.shape[1] > 8 else "center")
    ax.set_yticks(range(grid.shape[0]), grid.index)
    ax.set_xlabel("target animal")
    ax.set_ylabel("student size")
    font = FONT["heatmap_cell"] if grid.shape[1] <= 10 else FONT["heatmap_cell_dense"]
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


@slide
def plot_survey(table: pd.DataFrame, sizes: list[str], out: str | Path, top: int = SURVEY_TOP) -> None:
    """Per size, the untuned model's most frequent one-word answers: which animals it names at all."""
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
        ax.set_title(f"{size}: {int(rows['n'].iloc[0])} answers",
                     fontsize=FONT["survey_title"] if few else FONT["survey_title_dense"])
        ax.tick_params(axis="y", labelsize=FONT["survey_ticks"] if few else FONT["survey_ticks_dense"])
        ax.grid(axis="x", alpha=0.3)
    _label_bottoms(axes, len(present), "share of answers (%)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLORS[k]) for k in ("animal_student", "base")]
    fig.legend(handles, ["a condition of this grid", "other answer"], loc="outside lower center", ncols=2,
               frameon=False)
    fig.suptitle("Baseline survey: the untuned model's favourite animal (first word of each answer)")
    _save(fig, out)


@slide
def plot_p_animal(table: pd.DataFrame, scaling: pd.DataFrame, out: str | Path) -> None:
    """P(animal) beside the sampled rate, each size's final epoch. Left: transmission (animal student −
    neutral student, mean over animals) by size in both metrics, with 95 % intervals. Right: per (size,
    animal), each student's mean P(animal) against its sampled rate for that animal."""
    fig, axes = _figure(1, 2)
    left, right = axes[0]
    overall = final_epoch(scaling).sort_values("params_b")
    left.set_title("animal student − neutral student, mean over animals")
    if overall.empty or overall["p_animal_minus_neutral"].isna().all():
        _message(left, "no animal and neutral students in this grid:\nthis comparison is not available")
    else:
        for column, factor, color, label in (("sampled_animal_minus_neutral", 0.95, "C3", "sampled rate"),
                                              ("p_animal_minus_neutral", 1.05, "C2", "P(animal)")):
            left.errorbar(overall["params_b"] * factor, _pp(overall[column]), yerr=_error(overall, column), color=color,
                          lw=2.5, marker="o", ms=9, capsize=6, label=f"{label}, 95 % interval")
        left.axhline(0, color="black", lw=1)
        _size_axis(left, overall)
        left.set_ylabel(DIFF_LABEL.replace("rate", "rate or P(animal)"))
        left.grid(alpha=0.3)
    cells = final_epoch(table)
    right.set_title("per size and animal: P(animal) against the sampled rate")
    if cells.empty:
        _message(right, "no animal students in this grid")
    else:
        top = 0.0
        for side in ("base", "neutral_student", "animal_student"):
            x, y = _pp(cells[f"sampled_{side}_rate"]), _pp(cells[f"{side}_p_animal"])
            right.scatter(x, y, s=70, color=COLORS[side], label=SIDE_LABELS[side], alpha=0.8)
            top = max(top, float(np.nanmax(np.concatenate([x, y]), initial=0.0)))
        top = max(top * 1.05, 1.0)
        right.plot([0, top], [0, top], color=GREY["line"], ls="--", lw=1.2, label="P(animal) = sampled rate")
        right.set_xlim(0, top)
        right.set_ylim(0, top)
        right.set_xlabel("sampled rate naming the animal (%)")
        right.set_ylabel("P(animal), mean over questions (%)")
        right.grid(alpha=0.3)
    _shared_legend(fig, axes)
    epochs = sorted(overall["epoch"].unique()) if not overall.empty else []
    fig.suptitle("P(animal) from logprobs beside the sampled rate"
                 + (f", final epoch ({', '.join(map(str, epochs))})" if epochs else ""))
    _save(fig, out)


# --- the plots of the report rule ---------------------------------------------------------------

def build_plots(tables: dict[str, pd.DataFrame], outputs: dict, *, sizes: list[str], conditions: list[str]) -> None:
    """Every plot of the report; `bars` and `size_epochs` are lists of per-size paths in `sizes` order."""
    for name in ("bars", "size_epochs"):
        if len(outputs[name]) != len(sizes):
            raise ValueError(f"output {name!r} lists {len(outputs[name])} plots for {len(sizes)} sizes")
    transmission, scaling = tables["transmission"], tables["scaling_table"]
    plot_scaling(transmission, scaling, tables["scaling_trend"], outputs["scaling"])
    plot_epochs(scaling, sizes, outputs["epochs"])
    plot_heatmap(transmission, sizes, animals(conditions), outputs["heatmap"])
    plot_survey(tables["survey"], sizes, outputs["survey_plot"])
    for size, bars, epochs in zip(sizes, outputs["bars"], outputs["size_epochs"]):
        plot_bars(transmission, size, bars)
        plot_size_epochs(transmission, size, epochs)
