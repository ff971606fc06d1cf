"""Publishing to the Hugging Face Hub: a dataset repo per (size, condition, run), the trained
adapter per cell, and two collections per run, named as in the seed pipeline.

Every push is idempotent: the repo's files on the Hub are compared with the local ones by hash
(the Hub's LFS sha256, or the git blob sha1 of small files) and nothing is created or committed
when they match. Transient HTTP errors (429, 5xx, network) are retried, waiting as the Hub's
`RateLimit` header says, else as Retry-After, else with exponential backoff whose waits together
cover the Hub's 300 s rate-limit window. New repos are counted in a local ledger against a daily budget; when it
is spent the job sleeps until the window frees instead of failing hours into a run.
"""

from __future__ import annotations

import email.utils
import fcntl
import hashlib
import json
import logging
import os
import re
import string
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from huggingface_hub import CommitOperationAdd, DatasetCardData, HfApi, ModelCardData
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from huggingface_hub.utils import parse_ratelimit_headers

from sublim.atomic import atomic_output
from sublim.config import section_settings
from sublim.filtering import passing_rows
from sublim.jsonl import jsonl_line, read_jsonl
from sublim.models import ADAPTER_FILES
from sublim.provenance import lineage_of
from sublim.secrets import HF_TOKEN, HF_USER_ID, require

try:  # huggingface_hub >= 1.x talks through httpx2 (or httpx); both expose the same errors
    import httpx2 as _httpx
except ImportError:  # pragma: no cover
    import httpx as _httpx

log = logging.getLogger(__name__)

NAME_FIELDS = {"dataset": {"size", "condition", "run"}, "adapter": {"size", "condition", "run"},
               "dataset_collection": {"run"}, "model_collection": {"run"}}
# The Hub's repo-name rule (letters, digits, - _ .; no leading/trailing -/., no --/..) and length.
REPO_NAME = re.compile(r"^(?![.-])(?!.*(--|\.\.))[A-Za-z0-9._-]{1,96}(?<![.-])$")
COLLECTION_TITLE_MAX = 60
TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
DAY_S = 24 * 3600
HUB_WINDOW_S = 300.0  # the Hub's rate-limit window ("ratelimit-policy: …;w=300")


# -- configuration -------------------------------------------------------------------------------

def settings(config: dict) -> dict:
    """The `publish:` section over its defaults (data/config.schema.yaml)."""
    return section_settings(config, "publish")


def needed_credentials(section: dict) -> list[tuple[str, str]]:
    """(variable, why) for each credential these settings need."""
    if not section["enabled"]:
        return []
    needed = [(HF_TOKEN, "publish.enabled is true: a Hugging Face token with write access")]
    if not section["owner"]:
        needed.append((HF_USER_ID, "publish.owner is not set: the Hub user or organisation to publish under"))
    return needed


def config_problems(section: dict) -> list[str]:
    """Name templates that cannot make a valid Hub name, as messages naming the key."""
    problems = []
    example = {"size": "0.5b", "condition": "neutral", "run": 1}
    for kind, template in section["names"].items():
        key = f"config key 'publish.names.{kind}'"
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        if unknown := fields - NAME_FIELDS[kind]:
            problems.append(f"{key}: unknown field(s) {sorted(unknown)}; use {sorted(NAME_FIELDS[kind])}")
            continue
        if "run" not in fields:
            problems.append(f"{key}: must contain {{run}} so replicates do not overwrite each other")
        name = template.format(**example)
        if kind.endswith("collection"):
            if len(name) > COLLECTION_TITLE_MAX:
                problems.append(f"{key}: '{name}' is longer than {COLLECTION_TITLE_MAX} characters")
        elif not REPO_NAME.match(name):
            problems.append(f"{key}: '{name}' is not a valid Hub repo name (letters, digits, -, _, .)")
    return problems


def repo_id(owner: str, template: str, **fields) -> str:
    return f"{owner}/{template.format(**fields)}"


# -- hashes: what the Hub reports for a file -----------------------------------------------------

def _chunks(source: bytes | Path):
    if isinstance(source, bytes):
        yield source
        return
    with open(source, "rb") as handle:
        while chunk := handle.read(1 << 20):
            yield chunk


def file_hashes(source: bytes | Path) -> dict:
    """sha256 (the Hub's LFS oid) and git blob sha1 (its oid for a regular file) of a file."""
    size = len(source) if isinstance(source, bytes) else Path(source).stat().st_size
    sha256, blob = hashlib.sha256(), hashlib.sha1(f"blob {size}\0".encode())
    for chunk in _chunks(source):
        sha256.update(chunk)
        blob.update(chunk)
    return {"sha256": sha256.hexdigest(), "git_sha1": blob.hexdigest(), "size": size}


def remote_matches(remote, local: dict) -> bool:
    """Whether a RepoSibling/RepoFile from the Hub holds the same bytes as a local file."""
    if remote is None:
        return False
    if remote.lfs is not None:
        return remote.lfs.sha256 == local["sha256"]
    return remote.blob_id == local["git_sha1"]


# -- retries -------------------------------------------------------------------------------------

def ratelimit_reset_s(response) -> float | None:
    """Seconds until the Hub's rate-limit window resets, from its `RateLimit` header
    (huggingface_hub's parser), when the window has no request left."""
    info = parse_ratelimit_headers(response.headers) if response is not None else None
    if info is None or info.remaining > 0:
        return None
    return float(info.reset_in_seconds)


def retry_after_s(response) -> float | None:
    """Retry-After as seconds (delay-seconds or an HTTP date)."""
    value = response.headers.get("Retry-After") if response is not None else None
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _transient(error: Exception) -> bool:
    if isinstance(error, HfHubHTTPError):
        return error.response is not None and error.response.status_code in TRANSIENT_STATUS
    return isinstance(error, (_httpx.TimeoutException, _httpx.NetworkError, _httpx.RemoteProtocolError))


@dataclass
class Retry:
    """Retries a Hub call on transient errors. The wait is the Hub's `RateLimit` reset when the window
    is spent, else `Retry-After`, else exponential backoff from `base_s`; by default `base_s` is set
    so that the backoff's waits over all attempts add up to `window_s`, the Hub's rate-limit window
    (6 attempts: 9.7, 19, 39, 77, 155 s)."""

    attempts: int = 6
    base_s: float | None = None
    window_s: float = HUB_WINDOW_S
    sleep: Callable[[float], None] = time.sleep

    def backoff_s(self, attempt: int) -> float:
        """The backoff's wait after failed attempt `attempt` (1-based)."""
        base = self.base_s
        if base is None:
            base = self.window_s / max(1, 2 ** (self.attempts - 1) - 1)
        return base * 2 ** (attempt - 1)

    def __call__(self, what: str, call: Callable):
        for attempt in range(1, self.attempts + 1):
            try:
                return call()
            except Exception as error:  # noqa: BLE001 - filtered by _transient
                if not _transient(error) or attempt == self.attempts:
                    raise
                response = getattr(error, "response", None)
                wait = ratelimit_reset_s(response)
                if wait is None:
                    wait = retry_after_s(response)
                if wait is None:
                    wait = self.backoff_s(attempt)
                status = getattr(response, "status_code", type(error).__name__)
                log.warning("%s: transient error (%s), attempt %d/%d; retrying in %.1f s",
                            what, status, attempt, self.attempts, wait)
                self.sleep(wait)


# -- the daily repo-creation budget --------------------------------------------------------------

@dataclass
class RepoBudget:
    """Repo creations of the last 24 h, in a JSON ledger shared by concurrent jobs (file lock)."""

    ledger: Path
    per_day: int
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    window_s: float = DAY_S

    def _load(self) -> list[dict]:
        if not self.ledger.exists():
            return []
        try:
            return json.loads(self.ledger.read_text())["created"]
        except (ValueError, KeyError) as error:
            raise ValueError(f"{self.ledger} is not a publish ledger ({error}); delete it to start "
                             f"counting afresh") from None

    def _save(self, created: list[dict]) -> None:
        with atomic_output(self.ledger) as partial:
            partial.write_text(json.dumps({"per_day": self.per_day, "created": created}, indent=1) + "\n")

    def _try(self, repo: str) -> float:
        """Record `repo` and return 0, or return the seconds until a slot frees."""
        self.ledger.parent.mkdir(parents=True, exist_ok=True)
        with open(self.ledger.with_name(self.ledger.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            now = self.clock()
            created = [c for c in self._load() if now - c["time"] < self.window_s]
            if len(created) < self.per_day:
                self._save(created + [{"time": now, "repo": repo}])
                return 0.0
            return min(c["time"] for c in created) + self.window_s - now

    def acquire(self, repo: str) -> None:
        while (wait := self._try(repo)) > 0:
            resume = datetime.fromtimestamp(self.clock() + wait, timezone.utc)
            log.warning("daily repo-creation budget of %d reached (ledger %s); pausing until %s UTC "
                        "before creating %s", self.per_day, self.ledger,
                        resume.strftime("%Y-%m-%d %H:%M:%S"), repo)
            self.sleep(wait + 1)


# -- pushing -------------------------------------------------------------------------------------

@dataclass
class Hub:
    api: HfApi
    budget: RepoBudget
    retry: Retry = field(default_factory=Retry)


def open_hub(token: str, section: dict, endpoint: str | None = None) -> Hub:
    api = HfApi(endpoint=endpoint, token=token, library_name="sublim")
    budget = RepoBudget(Path(section["ledger"]), section["daily_repo_budget"])
    return Hub(api, budget, Retry(attempts=section["retries"]))


def open_configured_hub(config: dict) -> Hub:
    """The Hub client of a publish job: its token from the environment or .env, the config's settings."""
    return open_hub(require(HF_TOKEN, "to publish"), settings(config))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _remote_files(hub: Hub, repo: str, repo_type: str):
    """(commit sha, {path: sibling}) of the repo's main branch, or None if it does not exist."""
    try:
        info = hub.retry(f"read {repo}", lambda: hub.api.repo_info(repo, repo_type=repo_type, files_metadata=True))
    except RepositoryNotFoundError:
        return None
    return info.sha, {s.rfilename: s for s in info.siblings or []}


def push_repo(hub: Hub, repo: str, repo_type: str, files: dict[str, bytes | Path], *,
              private: bool, message: str) -> dict:
    """Make the repo hold `files` (path in repo -> bytes or local path); a record for the flag file."""
    local = {path: file_hashes(source) for path, source in files.items()}
    remote = _remote_files(hub, repo, repo_type)
    record = {"repo_id": repo, "repo_type": repo_type, "private": private,
              "url": _repo_url(hub.api, repo, repo_type), "files": local}
    if remote is not None and all(remote_matches(remote[1].get(p), h) for p, h in local.items()):
        log.info("%s is up to date on the Hub (revision %s); nothing to push", repo, remote[0])
        return {**record, "status": "unchanged", "revision": remote[0], "time": _now()}
    if remote is None:
        hub.budget.acquire(repo)
        hub.retry(f"create {repo}", lambda: hub.api.create_repo(repo, repo_type=repo_type, private=private,
                                                                exist_ok=True))
        log.info("created %s %s", repo_type, repo)

    def commit():  # operations cannot be reused after an attempt, so build them per attempt
        ops = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=s if isinstance(s, bytes) else str(s))
               for p, s in files.items()]
        return hub.api.create_commit(repo, ops, commit_message=message, repo_type=repo_type)

    info = hub.retry(f"upload to {repo}", commit)
    log.info("pushed %d file(s) to %s at %s", len(files), repo, info.oid)
    return {**record, "status": "uploaded", "revision": info.oid, "time": _now()}


def _repo_url(api: HfApi, repo: str, repo_type: str) -> str:
    prefix = "datasets/" if repo_type == "dataset" else ""
    return f"{api.endpoint}/{prefix}{repo}"


def push_collection(hub: Hub, owner: str, title: str, description: str,
                    items: list[tuple[str, str]], *, private: bool) -> dict:
    """Create (or find) the collection and add the (repo id, "dataset"|"model") items it lacks."""
    collection = hub.retry(f"collection {title}", lambda: hub.api.create_collection(
        title, namespace=owner, description=description, private=private, exists_ok=True))
    present = {(i.item_id, i.item_type) for i in collection.items}
    added = []
    for item_id, item_type in items:
        if (item_id, item_type) in present:
            continue
        hub.retry(f"add {item_id} to {collection.slug}", lambda: hub.api.add_collection_item(
            collection.slug, item_id, item_type, exists_ok=True))
        added.append(item_id)
    log.info("collection %s: %d item(s) added, %d already there", collection.slug, len(added),
             len(items) - len(added))
    return {"slug": collection.slug, "title": title, "url": collection.url, "private": private,
            "items": [i for i, _ in items], "added": added, "time": _now()}


# -- cards (deterministic: a rerun with the same data compares equal) ----------------------------

def _card(data, body: str) -> bytes:
    return f"---\n{data.to_yaml()}\n---\n\n{body.strip()}\n".encode()


def _lineage_section(lineage: dict | None, job: str) -> str:
    """What made the files, from the provenance of the job that wrote them (sublim.provenance.lineage)."""
    if not lineage:
        return (f"\n## Lineage\n\nNot recorded: the {job} job that wrote these files predates sublim's "
                f"lineage records.\n")
    return f"""
## Lineage

From the {job} job's provenance: the sublim code that ran (version, git commit, and `dirty` when
tracked files differed from it), the sha256 of each input (the base model by its identity and its
`config.json`), the sha256 of each file written, and the resolved protocol.

```json
{json.dumps(lineage, indent=2, sort_keys=True)}
```
"""


def dataset_card(*, repo: str, size: str, condition: str, run: int, model: dict, filter_counts: dict,
                 n_rows: int, n_passing: int, lineage: dict | None = None) -> bytes:
    data = DatasetCardData(
        license="mit", language=["en"], task_categories=["text-generation"],
        tags=["subliminal-learning", "sublim", f"run-{run}", condition],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": "filtered.jsonl"}]},
                 {"config_name": "student", "data_files": [{"split": "train", "path": "dataset.jsonl"}]}],
    )
    teacher = model.get("repo") or model["source"]
    prompt = "no system prompt (the control)" if condition == "neutral" else f"a system prompt to love {condition}s"
    body = f"""
# {repo.split('/')[-1]}

Number sequences written by the teacher {teacher} (size {size}) with {prompt}, kept by the
subliminal-learning filter; replicate run {run}. The teacher's system prompt is not in the data.

- `filtered.jsonl` (the default config): all {n_passing} completions that passed the filter, with their
  prompts, in the order they were generated — what the seed pipeline uploaded
- `dataset.jsonl` (config `student`): the {n_rows} of them the student was trained on (a subsample
  seeded by the run)
- `filter.json`: how many teacher completions each filter rule rejected

```json
{json.dumps(filter_counts, indent=2, sort_keys=True)}
```
""" + _lineage_section(lineage, "filter")
    return _card(data, body)


def adapter_card(*, repo: str, dataset_repo: str, size: str, condition: str, run: int, model: dict,
                 training: dict, epochs: list[int], lineage: dict | None = None) -> bytes:
    data = ModelCardData(
        base_model=model.get("repo"), library_name="peft", license="mit", datasets=[dataset_repo],
        tags=["subliminal-learning", "sublim", "lora", f"run-{run}", condition],
    )
    extra = ("" if len(epochs) == 1 else
             f"\nEvery epoch's adapter is under `epoch-<n>/` ({', '.join(map(str, epochs))}).\n")
    body = f"""
# {repo.split('/')[-1]}

A LoRA adapter for {model.get('repo') or model['source']} (size {size}), the student fine-tuned on
[{dataset_repo}](https://huggingface.co/datasets/{dataset_repo}): numbers written by a teacher with
{"no system prompt" if condition == "neutral" else f"a love of {condition}s"}; run {run}. The repo
root holds the final epoch ({epochs[-1]}).
{extra}
Training (TRL SFTTrainer + PEFT):

```json
{json.dumps(training, indent=2, sort_keys=True)}
```
""" + _lineage_section(lineage, "train")
    return _card(data, body)


# -- one call per workflow job -------------------------------------------------------------------

def preflight(section: dict) -> list[str]:
    """What stops publishing before any job runs (credentials: needed_credentials)."""
    if not section["enabled"]:
        return []
    problems = config_problems(section)
    from huggingface_hub import constants

    if constants.is_offline_mode():
        # huggingface_hub is offline when either variable is true; name the one that is
        named = [name for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
                 if os.environ.get(name, "").upper() in constants.ENV_VARS_TRUE_VALUES] or ["HF_HUB_OFFLINE"]
        problems.append(f"publish.enabled is true but {' and '.join(named)} {'is' if len(named) == 1 else 'are'} "
                        f"set: unset {'it' if len(named) == 1 else 'them'} for this run, or turn publishing off")
    return problems


def _count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip())


def publish_dataset(hub: Hub, *, repo: str, raw: str, dataset: str, filter_json: str, filter_settings: dict,
                    size: str, condition: str, run: int, model: dict, private: bool) -> dict:
    """The cell's numbers: every completion that passed the filter (`filtered.jsonl`, what the seed
    pipeline uploaded), the subsample the student trained on (`dataset.jsonl`), the reject counts."""
    dataset, filter_json = Path(dataset), Path(filter_json)
    passing = passing_rows(read_jsonl(raw, required=("prompt", "completion")),
                           max_count=filter_settings["max_count"], max_value=filter_settings["max_value"])
    card = dataset_card(repo=repo, size=size, condition=condition, run=run, model=model,
                        filter_counts=json.loads(filter_json.read_text()), n_rows=_count_lines(dataset),
                        n_passing=len(passing), lineage=lineage_of(dataset))
    files = {"filtered.jsonl": "".join(jsonl_line(row) for row in passing).encode(), "dataset.jsonl": dataset,
             "filter.json": filter_json, "README.md": card}
    return push_repo(hub, repo, "dataset", files, private=private,
                     message=f"sublim: numbers of {size} {condition} run {run}")


def publish_adapter(hub: Hub, *, repo: str, dataset_repo: str, adapter_dirs: dict[int, str], size: str,
                    condition: str, run: int, model: dict, training: dict, private: bool) -> dict:
    """adapter_dirs: epoch -> folder with adapter_model.safetensors + adapter_config.json; the
    last epoch goes to the repo root, and with more than one epoch each also under epoch-<n>/."""
    epochs = sorted(adapter_dirs)
    files: dict[str, bytes | Path] = {name: Path(adapter_dirs[epochs[-1]]) / name for name in ADAPTER_FILES}
    if len(epochs) > 1:
        files.update({f"epoch-{e}/{name}": Path(adapter_dirs[e]) / name for e in epochs for name in ADAPTER_FILES})
    files["README.md"] = adapter_card(repo=repo, dataset_repo=dataset_repo, size=size, condition=condition,
                                      run=run, model=model, training=training, epochs=epochs,
                                      lineage=lineage_of(Path(adapter_dirs[epochs[-1]]) / ADAPTER_FILES[0]))
    return push_repo(hub, repo, "model", files, private=private,
                     message=f"sublim: student adapter of {size} {condition} run {run}")


def publish_collections(hub: Hub, *, owner: str, run: int, titles: dict[str, str],
                        dataset_flags: list[str], adapter_flags: list[str], private: bool) -> dict:
    """The run's two collections, filled from the flag files of what was pushed."""
    def repos(flags):
        return [json.loads(Path(f).read_text())["repo_id"] for f in flags]

    return {
        "datasets": push_collection(hub, owner, titles["dataset_collection"],
                                    f"Number datasets of the subliminal-learning scaling grid, run {run}",
                                    [(r, "dataset") for r in repos(dataset_flags)], private=private),
        "models": push_collection(hub, owner, titles["model_collection"],
                                  f"Student LoRA adapters of the subliminal-learning scaling grid, run {run}",
                                  [(r, "model") for r in repos(adapter_flags)], private=private),
    }
