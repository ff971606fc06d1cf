"""benchmarks/start_phases.py: an engine start's phases from vLLM's own log lines, joined to each run's record."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "start_phases.py"

# lines as vLLM 0.26 writes them on the H200 (an engine core forked from the job), one compiled run
RUN = """\
(MainProcess pid=10) INFO 12-02 22:40:01 [api_utils.py:286] non-default args: {'load_format': 'dummy'}
(EngineCore pid=11) INFO 12-02 22:40:09 [core.py:133] Initializing a V1 LLM engine (v0.26.0) with config: …
(EngineCore pid=11) INFO 12-02 22:40:11 [model_runner.py:284] Starting to load model /m...
(EngineCore pid=11) INFO 12-02 22:40:13 [model_runner.py:306] Model loading took 14.25 GiB and 1.834 seconds
(EngineCore pid=11) INFO 12-02 22:40:16 [backends.py:1156] Dynamo bytecode transform time: 3.10 s
(EngineCore pid=11) INFO 12-02 22:40:17 [backends.py:294] Directly load the compiled graph(s) for compile range (1, 8192) from the cache, took 0.912 s
(EngineCore pid=11) INFO 12-02 22:40:17 [monitor.py:45] torch.compile took 4.51 s in total
(EngineCore pid=11) INFO 12-02 22:40:18 [monitor.py:82] Initial profiling/warmup run took 0.77 s
(EngineCore pid=11) INFO 12-02 22:40:30 [model_runner.py:748] Graph capturing finished in 11 secs, took 0.52 GiB
(EngineCore pid=11) INFO 12-02 22:40:30 [core.py:348] init engine (profile, create kv cache, warmup model) took 17.04 s (compilation: 4.51 s)
"""


@pytest.fixture()
def phases_module():
    spec = importlib.util.spec_from_file_location("start_phases", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_run_gets_vllms_timings_and_the_gaps_between_its_stamped_lines(phases_module):
    record = {"method": "fork", "shape": "7b", "engine_start_s": 33.2}
    cut = '{"method": "inproc", "shape": "7b", "stage": "gen'  # the follower cuts long lines
    text = RUN + json.dumps(record) + "\n" + "(MainProcess pid=12) INFO 12-02 22:41:00 [x.py:1] other\n" + cut + "\n"
    (first, first_phases), (second, second_phases) = phases_module.log_runs(text)
    assert first == record and second is None
    assert first_phases == {"model_load_s": 1.834, "dynamo_s": 3.10, "compile_cache_load_s": 0.912, "compile_s": 4.51,
                            "profiling_run_s": 0.77, "graph_capture_s": 11.0, "init_engine_s": 17.04,
                            "front_end_before_core_s": 8.0, "core_before_load_s": 2.0}
    assert second_phases == {}


def test_the_script_writes_one_row_per_run(phases_module, tmp_path, monkeypatch):
    log = tmp_path / "job_overhead_1.log"
    log.write_text(RUN + json.dumps({"method": "fork", "run": 1}) + "\n")
    out = tmp_path / "phases.json"
    monkeypatch.setattr("sys.argv", ["start_phases.py", str(log), "--json", str(out)])
    phases_module.main()
    [row] = json.loads(out.read_text())
    assert row["log"] == "job_overhead_1.log" and row["method"] == "fork" and row["vllm_phases"]["graph_capture_s"] == 11.0
