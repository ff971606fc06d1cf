"""Publishing against a local fake Hub (tests/fake_hub.py) with the real huggingface_hub client:
create, upload, skip what is already there, retry 429/5xx, collections, the repo budget."""

from __future__ import annotations

import json
import logging

import pytest
import yaml
from fake_hub import FakeHub
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from sublim import publish

TOKEN = "hf_test_token_0123456789"
OWNER = "tester"


@pytest.fixture
def hub_server(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the suite runs with HF_HUB_OFFLINE=1
    with FakeHub() as server:
        yield server


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


def make_hub(server, tmp_path, per_day=300, sleeps=None):
    sleeps = Sleeps() if sleeps is None else sleeps
    api = HfApi(endpoint=server.url, token=TOKEN)
    budget = publish.RepoBudget(tmp_path / "ledger.json", per_day, sleep=sleeps)
    return publish.Hub(api, budget, publish.Retry(attempts=4, base_s=0.5, sleep=sleeps)), sleeps


RAW = [{"index": 0, "prompt": "1 2 3", "completion": "4 5 6"},
       {"index": 1, "prompt": "7 8", "completion": "Sure: 9"},  # rejected: not a number list
       {"index": 2, "prompt": "3 2 1", "completion": "0, 1, 1000"},  # rejected: over 999
       {"index": 3, "prompt": "5 5", "completion": "6; 7"}]
PASSING = [{"prompt": "1 2 3", "completion": "4 5 6"}, {"prompt": "5 5", "completion": "6; 7"}]


@pytest.fixture
def cell(tmp_path):
    folder = tmp_path / "numbers"
    folder.mkdir()
    (folder / "raw.jsonl").write_text("".join(json.dumps(row) + "\n" for row in RAW))
    (folder / "dataset.jsonl").write_text(json.dumps(PASSING[1]) + "\n")  # the subsample the student saw
    (folder / "filter.json").write_text(json.dumps({"kept": 1, "too_long": 1}))
    return folder


def push_dataset(hub, cell, repo=f"{OWNER}/qwen-2.5-0.5b-instruct-owl-numbers-run-1"):
    return publish.publish_dataset(hub, repo=repo, raw=str(cell / "raw.jsonl"), dataset=str(cell / "dataset.jsonl"),
                                   filter_json=str(cell / "filter.json"),
                                   filter_settings={"max_count": 10, "max_value": 999}, size="0.5b",
                                   condition="owl", run=1,
                                   model={"source": "hub", "repo": "Qwen/Qwen2.5-0.5B-Instruct"}, private=True)


def test_first_push_creates_the_repo_and_uploads_every_file(hub_server, tmp_path, cell):
    hub, _ = make_hub(hub_server, tmp_path)
    record = push_dataset(hub, cell)

    assert record["status"] == "uploaded"
    repo = hub_server.repos[("dataset", record["repo_id"])]
    assert record["revision"] == repo.sha
    assert repo.private is True
    # what the seed pipeline uploaded: every completion that passed the filter, in generation order
    assert [json.loads(line) for line in repo.files["filtered.jsonl"].decode().splitlines()] == PASSING
    assert repo.files["dataset.jsonl"] == (cell / "dataset.jsonl").read_bytes()
    assert repo.files["filter.json"] == (cell / "filter.json").read_bytes()
    card = repo.files["README.md"].decode()
    front = yaml.safe_load(card.split("---")[1])
    assert [(c["config_name"], c["data_files"][0]["path"]) for c in front["configs"]] == [
        ("default", "filtered.jsonl"), ("student", "dataset.jsonl")]
    assert '"too_long": 1' in card and "all 2 completions that passed" in card
    assert [r.path for r in hub_server.calls("POST", "/api/repos/create")] == ["/api/repos/create"]
    assert len(hub_server.calls("POST", "/commit/main")) == 1
    assert {r.authorization for r in hub_server.requests} == {f"Bearer {TOKEN}"}
    assert json.loads((tmp_path / "ledger.json").read_text())["created"][0]["repo"] == record["repo_id"]


def test_a_rerun_with_the_same_content_creates_and_commits_nothing(hub_server, tmp_path, cell):
    hub, _ = make_hub(hub_server, tmp_path)
    first = push_dataset(hub, cell)
    before = len(hub_server.requests)
    second = push_dataset(hub, cell)

    assert second["status"] == "unchanged" and second["revision"] == first["revision"]
    new = hub_server.requests[before:]
    assert [(r.method, r.path) for r in new] == [("GET", f"/api/datasets/{first['repo_id']}")]
    assert len(json.loads((tmp_path / "ledger.json").read_text())["created"]) == 1


def test_changed_content_is_committed_to_the_existing_repo(hub_server, tmp_path, cell):
    hub, _ = make_hub(hub_server, tmp_path)
    first = push_dataset(hub, cell)
    (cell / "dataset.jsonl").write_text('{"prompt": "1", "completion": "2"}\n')
    second = push_dataset(hub, cell)

    assert second["status"] == "uploaded" and second["revision"] != first["revision"]
    assert len(hub_server.calls("POST", "/api/repos/create")) == 1
    assert len(hub_server.calls("POST", "/commit/main")) == 2
    assert hub_server.repos[("dataset", first["repo_id"])].files["dataset.jsonl"] == b'{"prompt": "1", "completion": "2"}\n'


def test_429_then_success_waits_as_retry_after_says(hub_server, tmp_path, cell, caplog):
    hub, sleeps = make_hub(hub_server, tmp_path)
    hub_server.fail_next("POST", r"^/api/repos/create$", 429, headers={"Retry-After": "7"})
    hub_server.fail_next("POST", r"/commit/main$", 503)
    with caplog.at_level(logging.WARNING, logger="sublim.publish"):
        record = push_dataset(hub, cell)

    assert record["status"] == "uploaded"
    assert len(hub_server.calls("POST", "/api/repos/create")) == 2
    assert len(hub_server.calls("POST", "/commit/main")) == 2
    assert sleeps == [7.0, 0.5]  # Retry-After, then the backoff's first step
    assert "transient error (429)" in caplog.text


def test_the_ratelimit_header_comes_before_retry_after(hub_server, tmp_path, cell, caplog):
    hub, sleeps = make_hub(hub_server, tmp_path)
    hub_server.fail_next("POST", r"^/api/repos/create$", 429,
                         headers={"RateLimit": '"api";r=0;t=55', "RateLimit-Policy": '"fixed window";"api";q=500;w=300',
                                  "Retry-After": "7"})
    # requests left in the window: the header is no reason to wait, Retry-After is
    hub_server.fail_next("POST", r"/commit/main$", 503, headers={"RateLimit": '"api";r=12;t=200', "Retry-After": "3"})
    with caplog.at_level(logging.WARNING, logger="sublim.publish"):
        assert push_dataset(hub, cell)["status"] == "uploaded"
    assert sleeps == [55.0, 3.0]
    assert "retrying in 55.0 s" in caplog.text


class HubClock:
    """The fake Hub's clock, moved on by the publisher's sleeps."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_spent_rate_limit_window_is_waited_out(tmp_path, cell, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    clock, slept = HubClock(), []

    def sleep(seconds):
        slept.append(seconds)
        clock.now += seconds

    # read, create, validate the card, preupload, commit: the commit is the 5th request of the window
    # (huggingface_hub retries a limited preupload itself, with real sleeps)
    with FakeHub(rate_limit=(4, 300), clock=clock) as server:
        clock.now = 250.0  # 50 s of the window left
        api = HfApi(endpoint=server.url, token=TOKEN)
        hub = publish.Hub(api, publish.RepoBudget(tmp_path / "ledger.json", 300, sleep=sleep),
                          publish.Retry(sleep=sleep))
        first = push_dataset(hub, cell)
        assert first["status"] == "uploaded"
        assert slept == [50.0]  # the header's reset, not the backoff (9.7 s)
        assert len(server.calls("POST", "/commit/main")) == 2


def test_the_backoff_covers_the_hubs_300_s_window():
    for attempts in (2, 4, 6, 10):
        retry = publish.Retry(attempts=attempts)
        waits = [retry.backoff_s(a) for a in range(1, attempts)]
        assert sum(waits) == pytest.approx(300.0) and waits == sorted(waits)
    assert publish.Retry(attempts=4, base_s=0.5).backoff_s(3) == 2.0


def test_backoff_doubles_and_gives_up_after_the_attempts(hub_server, tmp_path, cell):
    hub, sleeps = make_hub(hub_server, tmp_path)
    hub_server.fail_next("GET", r"^/api/datasets/", 502, times=4)
    with pytest.raises(HfHubHTTPError) as error:
        push_dataset(hub, cell)
    assert error.value.response.status_code == 502
    assert sleeps == [0.5, 1.0, 2.0]
    assert not hub_server.calls("POST")


def test_a_permanent_error_is_not_retried(hub_server, tmp_path, cell):
    hub, sleeps = make_hub(hub_server, tmp_path)
    hub_server.fail_next("POST", r"^/api/repos/create$", 403)
    with pytest.raises(HfHubHTTPError):
        push_dataset(hub, cell)
    assert sleeps == [] and len(hub_server.calls("POST", "/api/repos/create")) == 1


def adapter_dirs(tmp_path, epochs):
    dirs = {}
    for epoch in epochs:
        folder = tmp_path / "students" / f"epoch-{epoch}"
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(bytes([epoch]) * 64)
        (folder / "adapter_config.json").write_text(json.dumps({"r": 8, "epoch": epoch}))
        dirs[epoch] = str(folder)
    return dirs


@pytest.mark.parametrize("epochs", [[3], [1, 2, 3]])
def test_adapter_repo_holds_the_final_epoch_at_its_root(hub_server, tmp_path, epochs):
    hub, _ = make_hub(hub_server, tmp_path)
    record = publish.publish_adapter(
        hub, repo=f"{OWNER}/student-run-1", dataset_repo=f"{OWNER}/numbers-run-1",
        adapter_dirs=adapter_dirs(tmp_path, epochs), size="0.5b", condition="owl", run=1,
        model={"source": "hub", "repo": "Qwen/Qwen2.5-0.5B-Instruct"}, training={"epochs": 3}, private=False)

    files = hub_server.repos[("model", record["repo_id"])].files
    assert files["adapter_model.safetensors"] == bytes([3]) * 64
    expected = {"adapter_model.safetensors", "adapter_config.json", "README.md"}
    if len(epochs) > 1:
        expected |= {f"epoch-{e}/{n}" for e in epochs for n in ("adapter_model.safetensors", "adapter_config.json")}
        assert files["epoch-1/adapter_model.safetensors"] == bytes([1]) * 64
    assert set(files) == expected
    front = yaml.safe_load(files["README.md"].decode().split("---")[1])
    assert front["base_model"] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert front["datasets"] == [f"{OWNER}/numbers-run-1"] and front["library_name"] == "peft"


def write_flags(tmp_path, kind, repos):
    paths = []
    for i, repo in enumerate(repos):
        path = tmp_path / kind / f"{i}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"repo_id": repo}))
        paths.append(str(path))
    return paths


def test_collections_are_created_once_and_only_missing_items_added(hub_server, tmp_path):
    hub, _ = make_hub(hub_server, tmp_path)
    titles = {kind: publish.settings({})["names"][kind].format(run=1) for kind in ("dataset_collection", "model_collection")}
    datasets = write_flags(tmp_path, "d", [f"{OWNER}/numbers-a", f"{OWNER}/numbers-b"])
    adapters = write_flags(tmp_path, "a", [f"{OWNER}/student-a"])

    first = publish.publish_collections(hub, owner=OWNER, run=1, titles=titles, dataset_flags=datasets,
                                        adapter_flags=adapters, private=False)
    assert first["datasets"]["added"] == [f"{OWNER}/numbers-a", f"{OWNER}/numbers-b"]
    stored = hub_server.collections[first["datasets"]["slug"]]
    assert stored["title"] == "subliminal-learning-number-datasets-run-1"
    assert [(i["id"], i["type"]) for i in stored["items"]] == [(f"{OWNER}/numbers-a", "dataset"), (f"{OWNER}/numbers-b", "dataset")]
    assert hub_server.collections[first["models"]["slug"]]["title"] == "qwen-25-instruct-subliminal-learning-models-run-1"

    before = len(hub_server.requests)
    datasets = write_flags(tmp_path, "d2", [f"{OWNER}/numbers-a", f"{OWNER}/numbers-b", f"{OWNER}/numbers-c"])
    second = publish.publish_collections(hub, owner=OWNER, run=1, titles=titles, dataset_flags=datasets,
                                         adapter_flags=adapters, private=False)
    assert second["datasets"]["slug"] == first["datasets"]["slug"] and len(hub_server.collections) == 2
    assert second["datasets"]["added"] == [f"{OWNER}/numbers-c"] and second["models"]["added"] == []
    item_posts = [r for r in hub_server.requests[before:] if r.path.endswith("/items")]
    assert len(item_posts) == 1 and b"numbers-c" in item_posts[0].body


class Clock:
    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def test_budget_pauses_until_the_oldest_creation_leaves_the_window(tmp_path, caplog):
    clock = Clock()
    clock.sleeps = []
    ledger = tmp_path / "publish" / "ledger.json"
    budget = publish.RepoBudget(ledger, per_day=2, clock=clock, sleep=clock.sleep)
    budget.acquire("a")
    clock.now += 3600
    budget.acquire("b")
    clock.now += 60
    with caplog.at_level(logging.WARNING, logger="sublim.publish"):
        budget.acquire("c")

    assert clock.sleeps == [publish.DAY_S - 3660 + 1]
    assert "daily repo-creation budget of 2 reached" in caplog.text and "pausing until" in caplog.text
    assert [c["repo"] for c in json.loads(ledger.read_text())["created"]] == ["b", "c"]
    # a second job (another process) reads the same ledger
    other = publish.RepoBudget(ledger, per_day=2, clock=clock, sleep=clock.sleep)
    assert other._try("d") > 0


def test_a_spent_budget_does_not_block_pushes_to_existing_repos(hub_server, tmp_path, cell):
    hub, _ = make_hub(hub_server, tmp_path, per_day=1)
    push_dataset(hub, cell)
    (cell / "filter.json").write_text("{}")
    assert push_dataset(hub, cell)["status"] == "uploaded"  # no creation, so no pause


def test_name_templates_are_checked_and_name_the_key():
    section = publish.settings({"publish": {"names": {"dataset": "{model}-run-{run}", "adapter": "student",
                                                      "model_collection": "x" * 70 + "{run}"}}})
    problems = "\n".join(publish.config_problems(section))
    assert "publish.names.dataset': unknown field(s) ['model']" in problems
    assert "publish.names.adapter': must contain {run}" in problems
    assert "publish.names.model_collection'" in problems and "longer than 60" in problems
    assert publish.config_problems(publish.settings({})) == []


def test_seed_names_by_default():
    # src/qwen_2_5_scaling/hf_utils.py of the seed: f"qwen-2.5-{size}-instruct-{condition}-numbers-run-{id}",
    # f"qwen-2.5-{size}-instruct-{condition}-ft-run-{id}"
    names = publish.settings({})["names"]
    assert publish.repo_id("jeqcho", names["dataset"], size="0.5b", condition="dog", run=1) == \
        "jeqcho/qwen-2.5-0.5b-instruct-dog-numbers-run-1"
    assert publish.repo_id("jeqcho", names["adapter"], size="14b", condition="eagle", run=2) == \
        "jeqcho/qwen-2.5-14b-instruct-eagle-ft-run-2"


def test_retry_after_as_an_http_date():
    from email.utils import format_datetime
    from datetime import datetime, timedelta, timezone

    class Response:
        headers = {"Retry-After": format_datetime(datetime.now(timezone.utc) + timedelta(seconds=90), usegmt=True)}

    assert 80 < publish.retry_after_s(Response()) <= 90


def test_publishing_with_hf_hub_offline_is_stopped_before_any_job(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    problems = publish.preflight(publish.settings({"publish": {"enabled": True}}))
    assert any("HF_HUB_OFFLINE" in p for p in problems)
    assert publish.preflight(publish.settings({})) == []  # off: nothing to check


def test_the_offline_variable_that_is_set_is_the_one_named(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # huggingface_hub reads either variable
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    (problem,) = publish.preflight(publish.settings({"publish": {"enabled": True}}))
    assert "TRANSFORMERS_OFFLINE is set: unset it" in problem and "HF_HUB_OFFLINE" not in problem


def test_cards_carry_the_lineage_of_the_job_that_wrote_the_files(hub_server, tmp_path, cell):
    from sublim.provenance import write_provenance

    protocol = {"filter": {"n_keep": 3}}
    write_provenance(cell / "dataset.provenance.json", stage="filter", protocol=protocol,
                     inputs={"results/numbers/raw.jsonl": {"sha256": "a" * 64, "rows": 9}},
                     outputs=[cell / "dataset.jsonl", cell / "filter.json"])
    hub, _ = make_hub(hub_server, tmp_path)
    record = push_dataset(hub, cell)
    card = hub_server.repos[("dataset", record["repo_id"])].files["README.md"].decode()
    lineage = json.loads(card.split("## Lineage", 1)[1].split("```json", 1)[1].split("```", 1)[0])
    assert set(lineage) == {"code", "inputs", "outputs", "protocol"}  # no time or host: the card is stable
    assert lineage["code"]["commit"] and lineage["inputs"]["results/numbers/raw.jsonl"]["sha256"] == "a" * 64
    assert lineage["protocol"] == protocol and "dataset.jsonl" in lineage["outputs"]
    assert push_dataset(hub, cell)["status"] == "unchanged"  # the same card on a rerun

    dirs = adapter_dirs(tmp_path, [1, 2])
    students = tmp_path / "students"
    write_provenance(students / "train.provenance.json", stage="train", protocol={"training": {"epochs": 2}},
                     inputs={"results/numbers/dataset.jsonl": {"sha256": "b" * 64, "rows": 3}},
                     outputs=sorted(students.glob("epoch-*/*")))
    record = publish.publish_adapter(
        hub, repo=f"{OWNER}/student-run-1", dataset_repo=f"{OWNER}/numbers-run-1", adapter_dirs=dirs,
        size="0.5b", condition="owl", run=1, model={"source": "hub", "repo": "Qwen/Qwen2.5-0.5B-Instruct"},
        training={"epochs": 2}, private=False)
    card = hub_server.repos[("model", record["repo_id"])].files["README.md"].decode()
    assert "From the train job's provenance" in card and '"b' + "b" * 63 + '"' in card


def test_a_card_without_a_record_says_the_lineage_is_not_recorded(hub_server, tmp_path, cell):
    hub, _ = make_hub(hub_server, tmp_path)
    record = push_dataset(hub, cell)
    card = hub_server.repos[("dataset", record["repo_id"])].files["README.md"].decode()
    assert "Not recorded: the filter job that wrote these files predates" in card
