"""The cost model (sublim.cost), `make estimate` (sublim.estimate) and the grid projection: rates read
from the H200 records, the arithmetic of GPU time, disk and card fit, and the committed
grid_projection.json being what the model says now."""

from __future__ import annotations

import copy
import json
import shutil
import statistics
import subprocess
import sys

import pytest

from sublim import cost, estimate
from sublim.config import resolve
from sublim.profiles import load_config, merged_config, profile_cards, profile_settings

from conftest import REPO

RECORDS = REPO / "benchmarks" / "results"
LORA_7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def m():
    return cost.load_measurements(RECORDS)


@pytest.fixture(scope="module")
def steps(m):
    """The records' rates without a training job's imports and model load: its steps alone."""
    return cost.Measurements(**{**m.__dict__, "train_import_s": 0.0, "train_load": {"none": (1.0, 0.0)}})


@pytest.fixture(scope="module")
def grid():
    return load_config("profiles/b200", root=REPO)


def test_parameter_counts_match_the_records():
    for record in ("train_0.5b_third_session.json", "train_7b_autocast_inputs.json", "train_14b_third_session.json"):
        first = json.loads((RECORDS / record).read_text())[0]
        assert cost.parameter_count(cost.known_shapes()[cost.record_shape_repo(first["shape"])]) == first["params"]


def test_adapter_sizes_are_fp32_lora_on_seven_projections():
    # issue 14's arithmetic: ~18 MB at 0.5b, 138 MB at 14b, 421 MB at 72b
    sizes = {repo.split("-")[1]: cost.lora_parameters(shape, 8, LORA_7) * 4 / 1e6
             for repo, shape in cost.known_shapes().items()}
    assert round(sizes["0.5B"]) == 18 and round(sizes["14B"]) == 138 and round(sizes["72B"]) == 421
    assert cost.lora_parameters(cost.known_shapes()["Qwen/Qwen2.5-7B-Instruct"], 8, ["lm_head"]) is None


def test_by_params_measured_interpolated_extrapolated():
    points = {"a": (1.0, 10.0), "b": (3.0, 30.0)}
    assert cost.by_params(points, 1.0) == cost.Figure(10.0, "measured at a")
    middle = cost.by_params(points, 2.0)
    assert middle.value == 20.0 and middle.basis.startswith("interpolated between a and b")
    beyond = cost.by_params(points, 6.0)
    assert beyond.value == 60.0 and beyond.basis.startswith("extrapolated from b")
    assert cost.by_params(points, 6.0, beyond="flat").value == 30.0
    assert cost.by_params(points, 0.1).value == 10.0  # below the smallest: its own figure


def test_a_process_first_run_is_left_out_of_a_training_rate(m, tmp_path):
    # a process's first configuration runs slower (warm-up beyond the harness's two steps): a record's
    # rate is the mean of its later runs, so moving a run into first place changes the rate
    shutil.copytree(RECORDS, tmp_path / "records")
    path = tmp_path / "records" / cost.TRAIN_WORKFLOW[0]
    runs = json.loads(path.read_text())
    kept = [r for r in runs if r["shape"] == "7b" and r["config"] == "workflow" and cost.steady_run(r)]
    assert len(kept) >= 2
    first = dict(kept[0])
    kept[0]["position_in_process"] = 1
    path.write_text(json.dumps(runs))
    moved = cost.load_measurements(tmp_path / "records")
    every = records_of(cost.TRAIN_WORKFLOW, "7b", "workflow")  # pooled over the records since its last change
    rest = [r for r in every if r != first]
    assert len(rest) == len(every) - 1

    def pooled(runs):  # runs of the configuration as it was carried by their pairs' gains
        return statistics.mean(carried(r, "7b", m) for r in runs)
    # the levers' factor is the same for both: the rates differ as the two means do
    assert m.train_alone["7b"][1] / moved.train_alone["7b"][1] == pytest.approx(pooled(rest) / pooled(every))
    assert moved.train_alone["14b"] == m.train_alone["14b"]


def test_rates_come_from_the_workflow_records(m):
    (name,) = cost.TRAIN_PACKED["0.5b"]
    packed = json.loads((RECORDS / name).read_text())[0]
    levers = m.levers_gain_packed["0.5b"][1]  # profiles/b200 runs both levers
    without = cost.row_gain(packed["processes_detail"][0], cost.TOKENS_PER_ROW) / levers
    assert m.train_packed["0.5b"][1] == pytest.approx(1 / (packed["tokens_per_s"] * without))
    runs = [r["tokens_per_s"] for r in json.loads((RECORDS / "train_3b_third_session.json").read_text())
            if r["config"] == "workflow"]
    assert m.train_alone["3b"][1] == pytest.approx(len(runs) / sum(runs))  # a record without the levers
    assert m.completion_tokens == 48 and m.answer_tokens == 8
    assert set(m.generate_token) == set(m.eval_request) == {"0.5b", "1.5b", "3b", "7b", "14b", "32b"}
    assert set(m.compiled_speedup) == {"0.5b", "3b", "7b", "14b", "32b"}
    assert all(v > 1 for s, (_, v) in m.compiled_speedup.items() if s != "32b")
    assert m.compiled_speedup["32b"][1] == pytest.approx(1, abs=0.01)  # why 32b generates eager
    assert all(cold > m.compile_warm_s > 0 for _, cold in m.compile_cold.values())
    # 3b's eager start was the machine's first engine (one-time kernel JIT): not a per-job figure
    assert "3b" not in m.start_generate and 25 < cost.by_params(m.start_generate, 3.09).value < 45
    spawn_fork = json.loads((RECORDS / "engine_start_method_h200.json").read_text())
    assert {r["start_method_in_effect"] for r in spawn_fork} == {"spawn", "fork"}
    assert 10 < m.fork_saving_s < 25


def test_a_missing_record_names_itself(tmp_path):
    with pytest.raises(FileNotFoundError, match=cost.TRAIN_ASYNC):
        cost.load_measurements(tmp_path)


def test_the_training_rates_are_without_bitsandbytes_waits(m):
    # pairs of one process; 3b's is marked as its host's (launch-bound: the host's speed, not the card's)
    assert set(m.async_gain) == {"7b", "14b", "32b"}
    assert all(1.05 < gain < 1.2 for _, gain in m.async_gain.values())
    # flat buffers against per-tensor steps: ABAB pairs, each side's runs that were not first in the process
    assert set(m.flat_gain) == {"7b", "14b", "32b"}
    assert all(0.98 < gain < 1.05 for _, gain in m.flat_gain.values())
    runs = records_of(cost.TRAIN_FLAT, "32b", "workflow+flat_8bit_optimizer=false")
    assert [r["position_in_process"] for r in runs] == [3]  # the first, at 1, is left out
    assert m.flat_gain["32b"][1] == pytest.approx(
        statistics.mean(r["tokens_per_s"] for r in records_of(cost.TRAIN_FLAT, "32b", "workflow")) / runs[0]["tokens_per_s"])
    # 32b's record is the profile's whole configuration: 8-bit AdamW without the waits
    assert cost.TRAIN_ALONE["32b"] == (cost.TRAIN_WORKFLOW, "workflow", "adamw_8bit")
    runs = records_of(cost.TRAIN_WORKFLOW, "32b", "workflow")
    assert runs and all(r["sizing"]["async_8bit_optimizer"] and r["sizing"]["shared_prefix"] for r in runs)
    assert 0.5 < m.job_import_s < 20  # a vLLM job's own import, counted in its engine start


def records_of(names: str | tuple[str, ...], shape: str, config: str) -> list[dict]:
    """Records' runs of a configuration that the cost model takes (not a process's first, not marked out
    of the projection; "workflow" under its aliases too), pooled."""
    configs = (config, *cost.WORKFLOW_ALIASES) if config == "workflow" else (config,)
    return [r for name in ((names,) if isinstance(names, str) else names)
            for r in json.loads((RECORDS / name).read_text())
            if r["shape"] == shape and r["config"] in configs and cost.steady_run(r) and r.get("projection", True)]


def carried(run: dict, shape: str, m) -> float:
    """A run's tokens/s carried to the configuration as it is (the cost model's carry_factor, spelled out)."""
    casts = 1 if run.get("adapter_casts") == cost.CASTS_ONCE_PER_STEP else m.casts_gain.get(shape, 1.0)
    grads = 1 if run.get("adapter_grads", "").startswith(cost.GRADS_FROM_GEMM) else m.grads_gain.get(shape, 1.0)
    alloc = 1 if cost.expandable_segments(run) else m.alloc_gain.get(shape, 1.0)
    groups = 1 if cost.lora_grouped(run) else m.groups_gain.get(shape, 1.0)
    return run["tokens_per_s"] * casts * grads * alloc * groups


def test_a_record_with_both_levers_is_taken_back_to_the_rate_without_them(grid, m, steps):
    """7b-32b's records ran profiles/b200's configuration as it is: the profile's trainings cost those
    records' rate, carried to rows of TOKENS_PER_ROW tokens; m.train_alone holds it without the levers."""
    runs = records_of(cost.TRAIN_WORKFLOW, "32b", "workflow")
    assert {r["session"] for r in runs} == {"2026-12-03 fifteenth session", "2026-12-03 sixteenth session",
                                             "2026-12-03 seventeenth session", "2026-12-04 nineteenth session",
                                             "2026-12-04 twenty-first session", "2026-12-04 twenty-second session"}
    run = runs[0]
    assert run["sizing"]["shared_prefix"] and run["sizing"]["fused_lora"] and run["sizing"]["async_8bit_optimizer"]
    per_token = cost.train_job(grid, "32b", steps).card_s["train"] / cost.train_tokens(grid["protocol"])
    # runs before the seventeenth session cast the adapter in each of 32b's two micro-batches, and runs
    # before the nineteenth took its gradients in bf16: each carried to the backward as it is by its
    # pairs' gain; the runs since count as they are
    since = [r["adapter_casts"] == cost.CASTS_ONCE_PER_STEP for r in runs if "adapter_casts" in r]
    assert sum(since) == len(since) == 22  # the pairs' runs of the older backward are not "workflow"
    assert 1.0 < m.casts_gain["32b"] < 1.05 and set(m.casts_gain) == {"32b"}
    from_gemm = [r["adapter_grads"].startswith(cost.GRADS_FROM_GEMM) for r in runs if "adapter_grads" in r]
    assert sum(from_gemm) == len(from_gemm) == 20
    assert 1.0 < m.grads_gain["32b"] < 1.05 and set(m.grads_gain) == {"7b", "14b", "32b"}
    # the twenty-second session's: expandable segments (32b's sizing) carried by their pairs where they were off
    assert sum(cost.expandable_segments(r) for r in runs) == 10 and 1.0 < m.alloc_gain["32b"] < 1.02
    # and the fused LoRA layers' sibling groups (since the twenty-second session's last pairs)
    assert sum(cost.lora_grouped(r) for r in runs) == 3 and set(m.groups_gain) == {"7b", "14b", "32b"}
    rate = sum(carried(r, "32b", m) for r in runs) / len(runs)
    assert 1 / per_token == pytest.approx(rate * cost.row_gain(run, cost.TOKENS_PER_ROW))
    assert 1 / m.train_alone["32b"][1] == pytest.approx(1 / per_token / m.levers_gain_alone["32b"][1])
    assert cost.row_gain(run, cost.TOKENS_PER_ROW) < 1  # longer rows: the shared prefix saves a smaller part


def test_two_3b_trainings_share_a_card_at_their_measured_rate(grid, m, steps):
    # every record of the pair in the profile's configuration, pooled (one per session)
    pairs = [r for name in cost.TRAIN_PAIRED["3b"] for r in json.loads((RECORDS / name).read_text())
             if r["processes"] == 2]
    assert len(pairs) == len(cost.TRAIN_PAIRED["3b"]) >= 2
    job = cost.train_job(grid, "3b", steps)
    assert job.cards == 0.5 and "two trainings on the card" in job.basis["train"]
    rows = pairs[0]["processes_detail"][0]
    assert cost.train_tokens(grid["protocol"]) / job.card_s["train"] == pytest.approx(
        statistics.mean(p["tokens_per_s"] for p in pairs) * cost.row_gain(rows, cost.TOKENS_PER_ROW))
    assert job.wall_s == pytest.approx(2 * job.card_s["train"])
    # faster per card than one 3b training alone, on the same machine and in the profile's configuration
    (alone,) = records_of("train_3b_tenth_session.json", "3b", "workflow")
    assert all(p["tokens_per_s"] > 1.3 * alone["tokens_per_s"] for p in pairs)
    # a share no record pairs at its shape: one training's rate
    seven = cost.train_job({**grid, "sizing": {**grid["sizing"], "7b": {"gpu_share": 0.5}}}, "7b", steps)
    assert seven.card_s["train"] == pytest.approx(cost.train_job(grid, "7b", steps).card_s["train"])


def test_a_training_job_pays_its_imports_and_model_load_on_its_share_of_the_card(grid, m, steps):
    loads = json.loads((RECORDS / cost.JOB_LOADS).read_text())
    assert m.train_import_s == pytest.approx(sum(r["import_s"] for r in loads) / len(loads))
    assert set(m.train_load) == {"0.5b", "7b", "14b"}  # 32b's weights were built on the GPU, not loaded
    assert m.train_load["0.5b"][1] < m.train_load["7b"][1] < m.train_load["14b"][1]
    for size, cards in (("0.5b", 0.25), ("3b", 0.5), ("14b", 1.0)):
        job = cost.train_job(grid, size, m)
        start = m.train_import_s + cost.by_params(m.train_load, grid["models"][size]["params_b"]).value
        without = cost.train_job(grid, size, steps)
        assert job.cards == cards and job.card_s["train"] - without.card_s["train"] == pytest.approx(start * cards)
        assert "to import and load the model" in job.basis["train"]


def with_default_sizing(grid, **levers):
    return {**grid, "sizing": {**grid["sizing"], "default": {**grid["sizing"].get("default", {}), **levers}}}


def test_expandable_segments_carry_the_runs_without_them_and_cost_a_sizing_that_turns_them_off(grid, m, steps):
    """Pairs of the allocator with and without expandable segments, one process per machine and order:
    the records without them are carried to 32b's and 14b's sizing (on) by the pairs' gain; a sizing
    that turns them off pays it back; 7b's sizing keeps them off (measured no faster) and its rate."""
    records = json.loads((RECORDS / cost.TRAIN_ALLOC).read_text())
    assert {r["allocator_timed"]["num_alloc_retries"] for r in records if r["shape"] == "32b"
            and not cost.expandable_segments(r)} == {2}  # the cache flushes they remove
    assert {r["allocator_timed"]["num_alloc_retries"] for r in records if cost.expandable_segments(r)} == {0}
    assert m.alloc_gain == pytest.approx(cost.pair_gains(records, cost.expandable_segments))
    assert m.alloc_gain["32b"] > 1.0 > m.alloc_gain["7b"]
    assert [cost.sizing_for(grid, s)["expandable_segments"] for s in ("7b", "14b", "32b")] == [False, True, True]
    off = copy.deepcopy(grid)
    for size in ("14b", "32b"):
        del off["sizing"][size]["expandable_segments"]
    for size in ("14b", "32b"):
        assert cost.train_job(off, size, steps).card_s["train"] == pytest.approx(
            cost.train_job(grid, size, steps).card_s["train"] * m.alloc_gain[size])
    on = with_default_sizing(grid, expandable_segments=True)
    assert cost.train_job(on, "7b", steps).card_s["train"] == pytest.approx(
        cost.train_job(grid, "7b", steps).card_s["train"] / m.alloc_gain["7b"])
    assert cost.train_job(on, "0.5b", steps).card_s == cost.train_job(grid, "0.5b", steps).card_s  # packed: unmeasured


def test_sibling_lora_groups_carry_the_runs_of_each_layer_alone(m):
    """The pairs of grouped against ungrouped fused LoRA layers give a gain per measured shape, the mean
    of each process's ratio (7b: an AB and a BA process); the pairs' ungrouped runs are not pooled."""
    records = json.loads((RECORDS / cost.TRAIN_GROUPS).read_text())
    assert m.groups_gain == pytest.approx(cost.pair_gains(records, cost.lora_grouped))
    assert set(m.groups_gain) == {"7b", "14b", "32b"} and all(1.0 < g < 1.05 for g in m.groups_gain.values())
    ungrouped = [r for r in records if not cost.lora_grouped(r)]
    assert ungrouped and all(r["config"] == "workflow+ungrouped_lora=true" for r in ungrouped)
    assert not any(r in records_of(cost.TRAIN_WORKFLOW, r["shape"], "workflow") for r in ungrouped)


def test_the_8bit_optimizers_per_tensor_steps_and_waits_cost_trainings_alone_where_the_sizing_keeps_them(grid, m, steps):
    assert grid["protocol"]["training"]["optimizer"] == "adamw_8bit"
    per_tensor = with_default_sizing(grid, flat_8bit_optimizer=False)
    waiting = with_default_sizing(grid, flat_8bit_optimizer=False, async_8bit_optimizer=False)
    flat_without_async = with_default_sizing(grid, async_8bit_optimizer=False)  # flat steps never wait
    flat, waits = m.flat_gain["14b"][1], m.async_gain["14b"][1]
    for size, (slower, slowest) in (("14b", (flat, flat * waits)), ("0.5b", (1.0, 1.0))):  # 0.5b packs: not measured
        base = cost.train_job(grid, size, steps).card_s["train"]
        assert cost.train_job(per_tensor, size, steps).card_s["train"] == pytest.approx(base * slower)
        assert cost.train_job(waiting, size, steps).card_s["train"] == pytest.approx(base * slowest)
        assert cost.train_job(flat_without_async, size, steps).card_s["train"] == pytest.approx(base)
    torch_adamw = {**waiting, "protocol": {**waiting["protocol"], "training": {
        **waiting["protocol"]["training"], "optimizer": "adamw_torch"}}}
    assert cost.train_job(torch_adamw, "14b", steps).card_s["train"] == pytest.approx(
        cost.train_job(grid, "14b", steps).card_s["train"])


def test_packed_training_costs_a_quarter_card_per_hour_of_wall_time(grid, m, steps):
    job = cost.train_job(grid, "0.5b", steps)
    tokens = 10 * 10_000 * cost.TOKENS_PER_ROW
    assert job.cards == 0.25
    gain = m.levers_gain_packed["0.5b"][1]  # profiles/b200 shares prefixes and fuses LoRA layers
    assert job.card_s["train"] == pytest.approx(tokens * m.train_packed["0.5b"][1] / gain)
    assert job.wall_s == pytest.approx(4 * job.card_s["train"])
    alone = cost.train_job({**grid, "sizing": {**grid["sizing"], "0.5b": {"gpu_share": 1.0}}}, "0.5b", steps)
    gain = cost.by_params(m.levers_gain_alone, 0.49, beyond="flat").value
    assert alone.cards == 1 and alone.card_s["train"] == pytest.approx(tokens * m.train_alone["0.5b"][1] / gain)


def test_shared_prefix_and_fused_lora_gain_is_counted_only_where_the_trainer_has_it(grid, m, steps):
    """Both levers on (profiles/b200): the records' rate x the paired gain; one of them off, or a
    training over several processes (no shared prefixes there): the records' rate."""
    tokens = cost.train_tokens(grid["protocol"])
    plain = tokens * m.train_alone["14b"][1]
    assert cost.train_job(grid, "14b", steps).card_s["train"] == pytest.approx(plain / m.levers_gain_alone["14b"][1])
    assert 1.1 < m.levers_gain_alone["14b"][1] < 1.3
    for off in ({"shared_prefix": False}, {"fused_lora": False}, {"train_processes": 2, "gpus": 2}):
        sizing = {**grid["sizing"], "14b": {**grid["sizing"].get("14b", {}), **off}}
        assert cost.train_job({**grid, "sizing": sizing}, "14b", steps).card_s["train"] == pytest.approx(plain), off


def test_hashed_sampling_counts_its_paired_factor_only_where_the_sizing_turns_it_on(grid, m):
    """profiles/b200 draws every size with vLLM's own sampler; a sizing that turns the hashed sampler
    on pays its factor, paired against an engine without its processor (7b: slower, > 1)."""
    assert set(m.hashed_factor) == {"7b"} and m.hashed_factor["7b"][1] > 1.0
    for size in ("7b", "14b", "32b"):
        off = cost.generate_job(grid, size, m)
        assert "hashed" not in off.basis["generate"], size
        sizing = {**grid["sizing"], size: {**grid["sizing"][size], "hashed_sampling": {"generate": True}}}
        on = cost.generate_job({**grid, "sizing": sizing}, size, m)
        assert on.card_s["generate"] == pytest.approx(off.card_s["generate"] * m.hashed_factor["7b"][1]), size


def test_a_pair_gain_over_several_processes_is_the_mean_of_their_ratios():
    # two processes on hosts 10 % apart, each ABAB with a 2 % and a 4 % gain: the faster host's runs
    # must not count as gain for the side it ran more of
    def run(machine, on, rate, position):
        return {"shape": "32b", "session": "s", "machine": machine, "on": on, "tokens_per_s": rate,
                "position_in_process": position}
    records = [run("slow", False, 900.0, 1), run("slow", True, 1020.0, 2), run("slow", False, 1000.0, 3),
               run("slow", True, 1020.0, 4),
               run("fast", True, 999.0, 1), run("fast", False, 1100.0, 2), run("fast", True, 1144.0, 3),
               run("fast", False, 1100.0, 4), run("fast", True, 1144.0, 5)]
    gains = cost.pair_gains(records, lambda r: r["on"])
    assert gains == {"32b": pytest.approx((1.02 + 1.04) / 2)}  # each process's first run left out
    assert cost.pair_gains(records[:4], lambda r: r["on"]) == {"32b": pytest.approx(1.02)}


def test_hashed_factors_pair_each_hashed_run_with_an_engine_without_the_processor():
    record = {"shape": "7b", "mode": "compiled", "max_num_seqs": 512, "stage": "generate"}
    fair = {**record, "prefix_cache_reset_between_passes": True}
    records = [{**fair, "seeds": "hashed", "hashed_sampler_loaded": True, "generate_s": 13.0},
               {**fair, "seeds": "per_request", "hashed_sampler_loaded": True, "generate_s": 16.0},
               {**fair, "seeds": "per_request", "hashed_sampler_loaded": False, "generate_s": 12.5},
               {**fair, "mode": "eager", "seeds": "per_request", "hashed_sampler_loaded": False, "generate_s": 30.0}]
    assert cost.hashed_factors(records)["7b"][1] == pytest.approx(13.0 / 12.5)
    assert cost.hashed_factors(records[:2]) == {}  # no engine without the processor: no factor


def test_a_hashed_pass_after_a_pass_over_the_same_prompts_is_not_a_factor():
    """Before the eleventh session the hashed pass ran second in its engine, with the first pass's
    prompts still in the prefix cache: it skipped their prefill, which no job does."""
    record = {"shape": "7b", "mode": "compiled", "max_num_seqs": 512, "stage": "generate"}
    records = [{**record, "seeds": "hashed", "hashed_sampler_loaded": True, "generate_s": 10.1},
               {**record, "seeds": "per_request", "hashed_sampler_loaded": False, "generate_s": 12.7}]
    assert cost.hashed_factors(records) == {}
    eighth = [r for r in json.loads((RECORDS / cost.VLLM_HASHED).read_text()) if "eighth" in r.get("session", "")]
    assert eighth and cost.hashed_factors(eighth) == {}


def test_a_batch_pair_gives_its_time_ratio_and_the_start_it_adds_within_one_session():
    run = {"stage": "generate", "seeds": "per_request", "shape": "32b", "mode": "eager", "engine_close_s": 1.0}
    records = [{**run, "session": "a", "max_num_seqs": 1024, "generate_s": 50.0, "engine_start_s": 200.0,
                "first_engine_on_machine": True},
               {**run, "session": "a", "max_num_seqs": 512, "generate_s": 55.0, "engine_start_s": 40.0},
               {**run, "session": "a", "max_num_seqs": 1024, "generate_s": 52.0, "engine_start_s": 38.0},
               {**run, "session": "a", "max_num_seqs": 512, "generate_s": 53.0, "engine_start_s": 44.0},
               {**run, "session": "b", "max_num_seqs": 256, "generate_s": 90.0, "engine_start_s": 30.0}]
    figures = cost.batch_figures(records)
    time, added = figures[("32b", "eager", 1024, 512)]
    assert time == pytest.approx(51.0 / 54.0)
    assert added == 0.0  # 39 s against 43 s: shorter is the runs' spread, not the batch's
    assert figures[("32b", "eager", 512, 1024)][1] == pytest.approx(4.0)
    assert not any(256 in key for key in figures)  # another session's batch pairs with nothing
    # a batch whose only engine was the machine's first has no start to compare: no figure
    assert cost.batch_figures(records[:2]) == {}


def test_a_sizing_batch_other_than_the_records_pays_its_measured_pair_only_at_that_shape(grid, m):
    """profiles/b200 samples 32b with 1,024 sequences (eager): its generation takes the same session's
    1,024-against-512 ratio; a sizing at the record's own batch, and a shape without a pair, take none."""
    assert m.generate_batch["32b"] == 512 and cost.sizing_for(grid, "32b")["max_num_seqs"] == 1024
    wide = cost.generate_job(grid, "32b", m)
    narrow_sizing = {**grid["sizing"], "32b": {**grid["sizing"]["32b"], "max_num_seqs": 512}}
    narrow = cost.generate_job({**grid, "sizing": narrow_sizing}, "32b", m)
    time, added = m.batch_figures[("32b", "eager", 1024, 512)]
    assert 0.9 < time < 1.0
    assert wide.card_s["generate"] == pytest.approx(narrow.card_s["generate"] * time)
    assert wide.card_s["engine_start"] == pytest.approx(narrow.card_s["engine_start"] + added)
    assert "1024 sequences" in wide.basis["generate"] and "sequences" not in narrow.basis["generate"]
    for size in ("0.5b", "7b", "14b"):  # profiles/b200 keeps 512 there: the records' own batch
        assert "sequences" not in cost.generate_job(grid, size, m).basis["generate"], size
    beyond = {**grid["sizing"], "72b": {**grid["sizing"]["72b"], "max_num_seqs": 1024}}
    assert "sequences" not in cost.generate_job({**grid, "sizing": beyond}, "72b", m).basis["generate"]


def test_a_compiled_job_start_with_a_filled_cache_is_measured_against_the_eager_start(m):
    """The warm compile: forked compiled generate jobs' start and close less the eager start the
    model takes for their shape (its spawned record less the fork saving)."""
    jobs = json.loads((RECORDS / cost.JOB_COMPILED).read_text())
    runs = [r["engine_start_s"] + r["close_s"] for r in jobs if r["method"] == "fork" and not r["enforce_eager"]]
    eager = cost.by_params(m.start_generate, cost._shape_params("7b")).value - m.fork_saving_s
    assert m.compile_warm_s == pytest.approx(sum(runs) / len(runs) - eager)
    assert 0 < m.compile_warm_s < m.compile_cold["7b"][1]
    with pytest.raises(ValueError, match="no forked compiled job"):
        cost.compile_warm([{**jobs[0], "enforce_eager": True}], m)


def test_a_shared_prefix_saves_less_on_longer_rows():
    record = {"shared_prefix_length": 23, "micro_batch": 60, "mean_row_tokens": 132.0}
    assert cost.row_gain(record, 132.0) == pytest.approx(1.0)
    assert cost.row_gain(record, 138.0) < 1.0 < cost.row_gain(record, 120.0)
    # 138-token rows compute 138 - 23 x 59/60 tokens each instead of 138
    assert cost.row_gain(record, 138.0) == pytest.approx((138 / (138 - 23 * 59 / 60)) / (132 / (132 - 23 * 59 / 60)))
    assert cost.row_gain({"micro_batch": 60, "mean_row_tokens": 132.0}, 138.0) == 1.0


def test_beyond_32b_training_runs_at_32b_mfu(grid, m, steps):
    per_token = cost.train_job(grid, "72b", steps).card_s["train"] / cost.train_tokens(grid["protocol"])
    # 72b under profiles/b200 trains with activation checkpointing: the forward runs twice
    rate = cost.CHECKPOINTING_FACTOR / per_token / m.levers_gain_alone["32b"][1]  # and 32b's lever gain
    mfu = 4 * 72.7e9 * rate / cost.PEAK_BF16_FLOPS
    assert mfu == pytest.approx(m.train_mfu["32b"], rel=0.01)
    assert "checkpointing" in cost.train_job(grid, "72b", steps).basis["train"]
    assert cost.train_job(grid, "32b", steps).basis["train"].startswith("measured at 32b; / 1.")


def test_grid_totals_add_up(grid, m):
    result = cost.grid_cost(grid, m, cards=2)
    stages = result.stage_card_s()
    assert sum(stages.values()) == pytest.approx(result.total_card_s)
    assert result.wall_s == pytest.approx(result.total_card_s / 2)
    jobs = cost.cell_jobs(grid, "7b", m)
    seven = next(s for s in result.sizes if s.size == "7b")
    per_cell = sum(jobs[r].total_card_s for r in ("generate", "train", "evaluate"))
    # generation captures CUDA graphs without torch.compile: no first job fills a compile cache
    assert cost.first_engine_extra_card_s(grid, "7b", m) == {}
    assert seven.total_card_s == pytest.approx(48 * per_cell + jobs["evaluate_base"].total_card_s)


def test_cuda_graphs_alone_start_later_than_eager_and_sample_at_the_compiled_rate(grid, m):
    """profiles/b200 generates with CUDA graphs and no torch.compile (engine_torch_compile: false): every
    job's engine starts the measured seconds after an eager one, nothing is compiled for a size's first
    job, and the work is the compiled engine's x the same session's ratio of the two."""
    assert set(m.graphs_factor) == {"0.5b", "3b", "7b", "14b"}
    assert all(0.9 < v < 1.1 for _, v in m.graphs_factor.values())
    # 7b's pair only: 0.5b's graphs engine was its machine's first (vLLM's one-time kernel JIT)
    runs = {r["mode"]: r for r in json.loads((RECORDS / cost.VLLM_GRAPHS).read_text())
            if r["shape"] == "7b" and r["seeds"] == "per_request"}
    assert m.graphs_start_s == pytest.approx(sum(runs["graphs"][k] - runs["eager"][k]
                                                 for k in ("engine_start_s", "engine_close_s")))
    assert 0 < m.graphs_start_s < m.compile_warm_s
    default = grid["sizing"]["default"]
    compiled = {**grid, "sizing": {**grid["sizing"], "default": {**default, "engine_torch_compile": True}}}
    eager = {**grid, "sizing": {**grid["sizing"], "default": {**default, "enforce_eager": True}}}
    assert cost.engine_mode(cost.sizing_for(grid, "7b"), "generate") == "graphs"
    assert cost.engine_mode(cost.sizing_for(grid, "7b"), "evaluate") == "eager"
    for size in ("0.5b", "7b", "14b"):
        graphs, torch_compiled = cost.generate_job(grid, size, m), cost.generate_job(compiled, size, m)
        ratio = cost.by_params(m.graphs_factor, grid["models"][size]["params_b"], beyond="flat").value
        assert graphs.card_s["generate"] == pytest.approx(torch_compiled.card_s["generate"] * ratio), size
        started = {name: cost.generate_job(config, size, m).card_s["engine_start"]
                   for name, config in (("eager", eager), ("graphs", grid), ("compiled", compiled))}
        assert started["graphs"] - started["eager"] == pytest.approx(m.graphs_start_s), size
        assert started["compiled"] - started["eager"] == pytest.approx(cost.compiled_figures(
            m, grid["models"][size]["params_b"])[2]), size
        assert set(cost.first_engine_extra_card_s(compiled, size, m)) == {"generate"}
    with pytest.raises(ValueError, match="needs a graphs engine"):
        cost.graphs_figures([r for r in json.loads((RECORDS / cost.VLLM_GRAPHS).read_text()) if r["mode"] != "eager"])


def test_72b_fits_a_b200_or_two_h200s_not_one_h200(grid):
    problems = cost.fit_problems(grid, "72b", "h200")
    assert any(p.startswith("vLLM") for p in problems)
    assert cost.fit_problems(grid, "72b", "b200") == []
    assert all(cost.fit_problems(grid, size, "h200") == [] for size in grid["sizes"] if size != "72b")
    two_cards = load_config("profiles/multi-gpu", root=REPO)
    assert cost.fit_problems(two_cards, "72b", "h200") == []


def test_disk_and_the_keep_adapters_line(grid, m):
    disk = cost.disk_estimate(grid, m)
    adapters = sum(cost.adapter_bytes(grid, s) for s in grid["sizes"]) * 48 * 10
    assert disk.adapters == pytest.approx(adapters) and disk.adapters_last_only == pytest.approx(adapters / 10)
    assert 250e9 < disk.models < 280e9  # ~265 GB of bf16 weights (issue 14)
    assert disk.peak > disk.total
    text = "\n".join(estimate.disk_lines(grid, disk))
    assert "keep_adapters: last" in text and "keep_adapters unset" in text
    last = cost.disk_estimate({**grid, "keep_adapters": "last"}, m)
    assert last.adapters == pytest.approx(disk.adapters_last_only)
    assert cost.keep_adapter_epochs({**grid, "keep_adapters": [2, 5]}) == 2


def test_profile_config_is_merged_as_snakemake_merges_it(tmp_path):
    extra = tmp_path / "more.yaml"
    extra.write_text("runs: [1]\nsizing: {7b: {gpu_share: 0.25}}\n")
    merged = merged_config("profiles/b200", [str(REPO / "profiles/b200/sizing.yaml"), str(extra)], REPO)
    assert merged["runs"] == [1] and merged["sizing"]["7b"]["gpu_share"] == 0.25
    assert merged["sizing"]["7b"]["max_num_seqs"] == 512  # the earlier file's keys stay
    assert profile_cards(resolve(copy.deepcopy(merged)), profile_settings("profiles/b200", REPO)) == 1
    assert profile_cards(resolve(copy.deepcopy(merged)), profile_settings("profiles/slurm", REPO)) is None
    assert load_config("profiles/demo", root=REPO)["sizes"] == ["135m"]  # the profile's `configfile:`


def test_make_estimate_prints_every_part():
    result = subprocess.run([sys.executable, "-m", "sublim.estimate", "--profile", "profiles/b200"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for part in ("GPU-hours", "72b", "wall time on 1 card", "peak free disk needed", "keep_adapters: last",
                 "72b does not fit", "assumptions:", "extrapolated from 32b"):
        assert part in out, part
    bad = subprocess.run([sys.executable, "-m", "sublim.estimate", "--configfile", "nowhere.yaml"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "nowhere.yaml" in bad.stderr


def test_grid_projection_json_is_what_the_model_says_now(tmp_path):
    """benchmarks/results/grid_projection.json is regenerated after a change to the records or the model."""
    out = tmp_path / "projection.json"
    subprocess.run([sys.executable, "benchmarks/grid_projection.py", "--out", str(out)], cwd=REPO, check=True,
                   capture_output=True, timeout=120)
    committed = json.loads((RECORDS / "grid_projection.json").read_text())
    assert json.loads(out.read_text()) == committed, "rerun: python benchmarks/grid_projection.py"
    seed = committed[0]
    assert seed["grid"] == "seed-6x16x1" and seed["setup"]["sizes"][-1] == "32b"
    assert seed["setup"]["answers_per_epoch"] == 100 and seed["setup"]["teacher_max_tokens"] == 128
    assert committed[1]["grid"] == "full-7x16x3" and committed[1]["setup"]["answers_per_epoch"] == 1000
    assert set(seed["stage_gpu_hours"]) == {"generate", "train", "evaluate", "engine_start"}
