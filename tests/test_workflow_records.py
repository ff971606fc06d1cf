"""benchmarks/workflow_records.py: one record per job from Snakemake's benchmark files, provenance and log."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "workflow_records.py"
TSV_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


@pytest.fixture()
def records_module():
    spec = importlib.util.spec_from_file_location("workflow_records", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_tsv(path: Path, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TSV_HEADER + f"{seconds}\t0:00:01\t100.5\t1\t1\t1\t0\t0\t0\t1\n")


@pytest.fixture()
def finished_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "benchmarks/runs"
    write_tsv(runs / "train/135m/owl/run-1.tsv", 36.6)
    write_tsv(runs / "evaluate/135m/base.tsv", 228.0)
    write_tsv(runs / "score/135m/owl/run-1.tsv", 1.0)
    write_tsv(runs / "report/power.tsv", 3.2)
    write_tsv(runs / "prepare_model/135m/1f4548a39fac.tsv", 48.8)
    for folder, stage in (("results/students/135m/owl/run-1", "train"), ("results/eval/135m/base", "evaluate"),
                          ("results/eval/135m/owl/run-1", "evaluate")):
        Path(folder).mkdir(parents=True, exist_ok=True)
        Path(folder, f"{stage}.provenance.json").write_text(json.dumps(
            {"stage": stage, "device": "NVIDIA H200", "backend": "vllm" if stage == "evaluate" else None,
             "created": "2026-12-01T19:00:00+00:00", "packages": {"vllm": "0.26.0", "torch": "2.11.0"}}))
    error = ("Error in rule train:\n    message: None\n    jobid: 1\n"
             "    log: logs/train/135m/owl/run-1.log (check log file(s) for error details)\n")
    log = tmp_path / "snakemake.log"
    log.write_text("Finished jobid: 3 (Rule: filter)\n" + error + "\nsome lines\n" + error)
    return runs, log


def test_one_record_per_job_with_rule_cell_attempts_and_gpu_only_for_gpu_jobs(records_module, finished_run):
    runs, log = finished_run
    killed = {"train/135m/owl/run-1"}
    found = {r["rule"]: r for r in records_module.records(runs, killed, records_module.failed_attempts([log]))}
    assert set(found) == {"train", "evaluate_base", "score", "power", "prepare_model"}
    train = found["train"]
    assert (train["size"], train["condition"], train["run"], train["wall_s"]) == ("135m", "owl", 1, 36.6)
    assert train["failed_attempts_before"] == 2 and train["sigkilled_by_kill_jobs"] is True
    assert (train["gpu"], train["torch"]) == ("NVIDIA H200", "2.11.0")
    base = found["evaluate_base"]
    assert (base["condition"], base["backend"], base["failed_attempts_before"]) == ("base", "vllm", 0)
    # CPU jobs are not labelled with the GPU, even beside a GPU job's provenance
    assert found["score"]["gpu"] is None and found["score"]["backend"] is None
    assert found["power"]["size"] is None and found["prepare_model"]["size"] == "135m"


def test_a_session_keeps_the_other_sessions_records(records_module, finished_run, tmp_path, monkeypatch):
    runs, log = finished_run
    out = tmp_path / "records.json"
    out.write_text(json.dumps([{"rule": "generate", "session": "first"}, {"rule": "train", "session": "second"}]))
    monkeypatch.setattr("sys.argv", ["workflow_records.py", "--json", str(out), "--runs", str(runs),
                                     "--snakemake-log", str(log), "--session", "second"])
    exec(compile(SCRIPT.read_text(), str(SCRIPT), "exec"), {"__name__": "__main__"})
    written = json.loads(out.read_text())
    assert written[0] == {"rule": "generate", "session": "first"}
    assert len(written) == 6 and all(r["session"] == "second" for r in written[1:])
