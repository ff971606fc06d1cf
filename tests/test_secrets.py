"""Credentials: read from the environment or .env, checked before the first job, and absent from
every file a run writes — shown end to end with fake tokens, a local fake Hub and wandb offline."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from fake_hub import FakeHub
from tiny_workflow import OFFLINE, make_workdir, number_rows, seed_numbers, snakemake_args, tiny_config

from sublim import publish, secrets, tracking

HF_TOKEN = "hf_fakeTOKEN4e1c9b0d7a2f"
WANDB_KEY = "fakeWANDBkey0123456789abcdef0123456789abcd"


def test_dotenv_lines_quotes_comments_and_export(tmp_path):
    env = tmp_path / ".env"
    env.write_text("# credentials\n\nexport HF_TOKEN='hf_abc'\nHF_USER_ID=jeqcho  # the user\n"
                   'WANDB_API_KEY="k y"\n')
    assert secrets.read_dotenv(env) == {"HF_TOKEN": "hf_abc", "HF_USER_ID": "jeqcho", "WANDB_API_KEY": "k y"}
    assert secrets.read_dotenv(tmp_path / "absent") == {}


def test_a_bad_dotenv_line_is_named_without_its_content(tmp_path):
    env = tmp_path / ".env"
    env.write_text("HF_TOKEN=hf_ok\nhf_pasted_secret_value\n")
    with pytest.raises(ValueError) as error:
        secrets.read_dotenv(env)
    assert f"{env}:2" in str(error.value) and "hf_pasted_secret_value" not in str(error.value)


def test_environment_wins_over_dotenv_and_empty_is_unset(tmp_path):
    env = tmp_path / ".env"
    env.write_text("HF_TOKEN=from_file\nHF_USER_ID=\n")
    assert secrets.lookup("HF_TOKEN", env, {"HF_TOKEN": "from_env"}) == "from_env"
    assert secrets.lookup("HF_TOKEN", env, {}) == "from_file"
    assert secrets.lookup("HF_USER_ID", env, {"HF_USER_ID": ""}) is None


def missing_credentials(config: dict, dotenv, environ) -> list[tuple[str, str]]:
    """What the workflow checks before any job (workflow/rules/common.smk)."""
    needed = (publish.needed_credentials(publish.settings(config))
              + tracking.needed_credentials(tracking.settings(config), environ))
    return secrets.missing(needed, dotenv, environ)


def test_what_each_setting_needs(tmp_path):
    env = tmp_path / ".env"
    missing = missing_credentials({"publish": {"enabled": True}, "wandb": {"enabled": True}}, env, {})
    assert [name for name, _ in missing] == ["HF_TOKEN", "HF_USER_ID", "WANDB_API_KEY"]
    assert missing_credentials({"publish": {"enabled": True, "owner": "org"}}, env,
                               {"HF_TOKEN": "x"}) == []
    assert missing_credentials({"wandb": {"enabled": True, "mode": "offline"}}, env, {}) == []
    assert missing_credentials({}, env, {}) == []
    message = secrets.missing_message(missing, env)
    assert "HF_TOKEN" in message and str(env) in message


def test_log_records_and_tracebacks_are_redacted():
    secret = "hf_secret_in_a_message"
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "token %s failed", (secret,), None)
    try:
        raise RuntimeError(f"bad token {secret}")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    secrets.RedactingFilter([secret]).filter(record)
    text = logging.Formatter().format(record)
    assert secret not in text and text.count(secrets.REDACTED) == 2


# -- the workflow ---------------------------------------------------------------------------------

def publishing_config(model_dir: Path) -> dict:
    config = tiny_config(model_dir, filter={"n_keep": 8},
                         training={"epochs": 1, "effective_batch": 4})
    config["publish"] = {"enabled": True, "ledger": "resources/publish/ledger.json"}
    config["wandb"] = {"enabled": True, "mode": "offline", "dir": "logs/wandb"}
    return config


def test_dry_run_fails_fast_without_credentials_and_plans_publish_jobs_with_them(tmp_path):
    workdir = make_workdir(tmp_path / "wf", publishing_config(tmp_path / "model"))
    env = {**os.environ, **OFFLINE, "HF_HUB_OFFLINE": "0", "WANDB_MODE": "online"}
    for name in ("HF_TOKEN", "HF_USER_ID", "WANDB_API_KEY"):
        env.pop(name, None)
    failed = subprocess.run(snakemake_args(workdir, [], ["-n"]), env=env, capture_output=True, text=True, timeout=300)
    assert failed.returncode != 0
    for text in ("missing credentials", "HF_TOKEN", "HF_USER_ID", "WANDB_API_KEY", ".env"):
        assert text in failed.stderr + failed.stdout, text

    (workdir / ".env").write_text(f"HF_TOKEN={HF_TOKEN}\nHF_USER_ID=tester\nWANDB_API_KEY={WANDB_KEY}\n")
    planned = subprocess.run(snakemake_args(workdir, [], ["-n"]), env=env, capture_output=True, text=True, timeout=300)
    assert planned.returncode == 0, planned.stderr[-3000:]
    for rule in ("publish_dataset", "publish_adapter", "publish_collections", "track_eval"):
        assert rule in planned.stdout, rule
    assert HF_TOKEN not in planned.stdout + planned.stderr


def files_holding(root: Path, values: list[str], skip: set[Path]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and path not in skip:
            data = path.read_bytes()
            hits += [f"{path.relative_to(root)} holds {value[:6]}…" for value in values if value.encode() in data]
    return hits


@pytest.mark.slow  # the tiny workflow end to end: filter, train, evaluate, publish, track
def test_a_publishing_and_tracking_run_writes_no_secret_anywhere(tmp_path, tiny_qwen_dir):
    config = publishing_config(tiny_qwen_dir)
    workdir = make_workdir(tmp_path / "wf", config, model_dir=tiny_qwen_dir)
    seed_numbers(workdir, number_rows(12))
    dotenv = workdir / ".env"
    dotenv.write_text(f"HF_TOKEN={HF_TOKEN}\n")  # the token from .env, the wandb key from the environment
    targets = ["results/published/collections/run-1.json", "results/tracked/eval/1m/owl/run-1.json"]
    with FakeHub() as hub:
        env = {**os.environ, **OFFLINE, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.url,
               "HF_USER_ID": "tester", "WANDB_API_KEY": WANDB_KEY}
        env.pop("HF_TOKEN", None)
        env.pop("WANDB_SERVICE", None)  # set by wandb runs earlier in this process; jobs start their own
        run = subprocess.run(snakemake_args(workdir, targets), env=env, capture_output=True, text=True,
                             timeout=900)
        assert run.returncode == 0, run.stderr[-4000:]

    flag = json.loads((workdir / "results/published/datasets/1m/owl/run-1.json").read_text())
    assert flag["repo_id"] == "tester/qwen-2.5-1m-instruct-owl-numbers-run-1" and flag["status"] == "uploaded"
    assert ("model", "tester/qwen-2.5-1m-instruct-owl-ft-run-1") in hub.repos
    # the token was used (huggingface_hub's own anonymous /api/agent-harnesses lookup aside)
    api_calls = [r for r in hub.requests if r.path != "/api/agent-harnesses"]
    assert api_calls and {r.authorization for r in api_calls} == {f"Bearer {HF_TOKEN}"}
    assert len(hub.collections) == 2
    assert len(list((workdir / "logs/wandb").glob("wandb/offline-run-*/run-*.wandb"))) == 2  # train + eval

    assert files_holding(workdir, [HF_TOKEN, WANDB_KEY], skip=set()) == [".env holds hf_fak…"]  # the scan finds it
    assert files_holding(workdir, [HF_TOKEN, WANDB_KEY], skip={dotenv}) == []
    assert HF_TOKEN not in run.stdout + run.stderr and WANDB_KEY not in run.stdout + run.stderr
    assert yaml.safe_load((workdir / "config" / "test.yaml").read_text())["publish"]["enabled"] is True
