"""`make estimate`: what the configured grid costs on a profile before it starts — GPU-hours per stage
and size, the wall time on the profile's cards, the disk, which sizes do not fit a card, and what
it all rests on. The arithmetic is sublim.cost's; this module only loads and prints.

    python -m sublim.estimate --profile profiles/b200 [--configfile A.yaml B.yaml] [--cards N]
"""

from __future__ import annotations

import argparse
import sys

from sublim import cost
from sublim.config import ConfigError
from sublim.profiles import load_config, profile_cards, profile_settings

BASIS_CODES = (("measured", "m"), ("interpolated", "i"), ("extrapolated", "x"))
BASIS_LEGEND = ("basis per stage: m measured at this shape, i interpolated between measured shapes, "
                "x extrapolated from the nearest, n the nearest measured shape's own figure")


def basis_code(text: str) -> str:
    return next((code for word, code in BASIS_CODES if text.startswith(word)), "n")


def hours(seconds: float) -> float:
    return seconds / 3600


def stage_table(grid: cost.GridCost) -> list[str]:
    head = f"{'size':>6} {'cells':>5} {'generate':>9} {'train':>8} {'evaluate':>9} {'engines':>8} {'total':>8}" \
           f"  {'longest job':>11}  basis (gen/train/eval)"
    lines = [head]
    for s in grid.sizes:
        codes = "/".join(basis_code(s.basis[k]) for k in ("generate", "train", "evaluate"))
        lines.append(f"{s.size:>6} {s.cells:>5} " + " ".join(
            f"{hours(s.card_s[stage]):>{w}.1f}" for stage, w in zip(cost.STAGES, (9, 8, 9, 8)))
            + f" {hours(s.total_card_s):>8.1f}  {hours(s.longest_job_s):>10.2f}h  {codes}")
    totals = grid.stage_card_s()
    lines.append(f"{'all':>6} {sum(s.cells for s in grid.sizes):>5} " + " ".join(
        f"{hours(totals[stage]):>{w}.1f}" for stage, w in zip(cost.STAGES, (9, 8, 9, 8)))
        + f" {hours(grid.total_card_s):>8.1f}")
    return lines


def _gb(value: float) -> str:
    return f"{value / cost.GB:,.1f} GB"


def disk_lines(config: dict, disk: cost.Disk) -> list[str]:
    epochs = config["protocol"]["training"]["epochs"]
    kept = cost.keep_adapter_epochs(config)
    setting = config.get("keep_adapters")
    which = f"{kept} of {epochs} epochs kept" + ("" if setting is not None else ": keep_adapters unset")
    lines = [f"  models {_gb(disk.models)} · datasets {_gb(disk.datasets)} · adapters {_gb(disk.adapters)} "
             f"({which}) · answers {_gb(disk.answers)}",
             f"  in all {_gb(disk.total)}; peak free disk needed {_gb(disk.peak)} (+{_gb(disk.transient)} while "
             f"the trainings running at once hold resume state and copies)"]
    if kept > 1:
        last = disk.total - disk.adapters + disk.adapters_last_only
        lines.append(f"  keeping only the last epoch's adapters (keep_adapters: last): adapters "
                     f"{_gb(disk.adapters_last_only)} instead of {_gb(disk.adapters)}, in all {_gb(last)}")
    lines += [f"  {note}" for note in disk.unknown]
    return lines


def fit_lines(config: dict, cards: list[str]) -> list[str]:
    lines = []
    for card in cards:
        misfits = {size: cost.fit_problems(config, size, card) for size in config["sizes"]}
        misfits = {size: problems for size, problems in misfits.items() if problems}
        if not misfits:
            lines.append(f"  one {card.upper()} ({cost.CARD_GIB[card]:.0f} GiB usable): every size fits")
        for size, problems in misfits.items():
            lines.append(f"  one {card.upper()} ({cost.CARD_GIB[card]:.0f} GiB usable): {size} does not fit — "
                         + "; ".join(problems))
    if any("does not fit" in line for line in lines):
        lines.append("  (two cards per job for such a size: profiles/multi-gpu; config/README.md, \"72b\")")
    return lines


def estimate_text(config: dict, m: cost.Measurements, cards: int | None, where: str,
                  card_kinds: list[str]) -> str:
    grid = cost.grid_cost(config, m, cards or 1)
    protocol = config["protocol"]
    evaluation = protocol["evaluation"]
    lines = [
        f"sublim estimate — {where}",
        f"grid: {len(config['sizes'])} sizes x {len(config['conditions'])} conditions x {len(config['runs'])} runs "
        f"= {cost.cells_per_size(config) * len(config['sizes'])} cells; preset {config['preset']}, "
        f"{protocol['training']['epochs']} epochs of {protocol['filter']['n_keep']:,} rows, "
        f"{protocol['generation']['n_prompts']:,} teacher prompts, {len(cost.eval_epochs(protocol))} epoch(s) "
        f"evaluated x {evaluation['n_questions']} x {evaluation['samples_per_question']} answers",
        "",
        "GPU-hours (card-hours at one H200's measured rates; a packed training counts its share of the card):",
        *stage_table(grid),
        BASIS_LEGEND,
        "",
    ]
    if cards:
        lines.append(f"wall time on {cards} card{'s' if cards > 1 else ''}: {hours(grid.wall_s):,.1f} h "
                     f"({hours(grid.wall_s) / 24:.1f} days)")
    else:
        lines.append(f"wall time: the profile sets no card budget (a cluster, or cards not visible here); "
                     f"on one card {hours(grid.wall_s):,.1f} h — pass --cards N for N")
    if config.get("backend") == "transformers":
        lines.append("backend transformers: the generate/evaluate figures above are vLLM's; the transformers "
                     "backend is several times slower (benchmarks/README.md, \"The GPU chain\")")
    disk = cost.disk_estimate(config, m, cards or 1)
    lines += ["", "disk:", *disk_lines(config, disk), "", "card fit:", *fit_lines(config, card_kinds), "",
              "assumptions:"]
    lines += [f"  {i}. {text}" for i, text in enumerate(cost.assumptions(m), 1)]
    lines += ["", "per size, what each figure rests on:"]
    for s in grid.sizes:
        lines.append(f"  {s.size}: " + "; ".join(f"{what}: {text}" for what, text in s.basis.items()))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="profiles/b200", help="the Snakemake profile the grid runs with")
    parser.add_argument("--configfile", nargs="*", default=[],
                        help="config files instead of the profile's list (as snakemake --configfile)")
    parser.add_argument("--cards", type=int, help="cards the jobs run on (default: the profile's)")
    parser.add_argument("--card", choices=sorted(cost.CARD_GIB), action="append",
                        help="card kind(s) to check the sizes against (default: all)")
    parser.add_argument("--records", default="benchmarks/results", help="the benchmark records")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.profile, args.configfile)
        cards = args.cards or profile_cards(config, profile_settings(args.profile))
        measurements = cost.load_measurements(args.records)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"estimate: {error}", file=sys.stderr)
        return 2
    files = " + ".join(args.configfile) if args.configfile else "the profile's config files"
    where = f"profile {args.profile}, {files}"
    sys.stdout.write(estimate_text(config, measurements, cards, where, args.card or sorted(cost.CARD_GIB)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
