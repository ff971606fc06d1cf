"""JSON-lines files written atomically and read with errors that name the file and line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from sublim.atomic import atomic_output


def jsonl_line(row: dict) -> str:
    """One row as a line of the project's JSONL files."""
    return json.dumps(row, ensure_ascii=False) + "\n"


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """One JSON object per line, written atomically: a killed job never leaves a half-written file."""
    count = 0
    with atomic_output(path) as partial, partial.open("w") as handle:
        for row in rows:
            handle.write(jsonl_line(row))
            count += 1
        handle.flush()
        os.fsync(handle.fileno())
    return count


def read_jsonl(path: str | Path, required: tuple[str, ...] = ()) -> list[dict]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; rerun the workflow so the rule that makes it runs")
    rows = []
    with path.open() as handle:
        for number, line in enumerate(handle, start=1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{path}, line {number}: not valid JSON ({error.msg}); the file is corrupt — "
                    f"delete it and rerun the workflow to regenerate it"
                ) from None
            if not isinstance(row, dict):
                raise ValueError(
                    f"{path}, line {number}: a JSON {type(row).__name__}, not an object with "
                    f"{', '.join(required) or 'keys'}; delete the file and rerun the workflow to "
                    f"regenerate it"
                )
            missing = [key for key in required if key not in row]
            if missing:
                raise ValueError(
                    f"{path}, line {number}: missing {', '.join(missing)}; delete the file and rerun "
                    f"the workflow to regenerate it"
                )
            rows.append(row)
    return rows


def write_json(path: str | Path, data: dict) -> None:
    with atomic_output(path) as partial:
        partial.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
