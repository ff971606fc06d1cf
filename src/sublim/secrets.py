"""Credentials for publishing and tracking: read from the environment or a `.env` file, checked
before the first job, and kept out of everything the workflow writes.

Values are looked up by the job that needs them and never put into Snakemake params (recorded in
.snakemake/ metadata), flag files, provenance or tracker configs (uploaded).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

HF_TOKEN = "HF_TOKEN"
HF_USER_ID = "HF_USER_ID"
WANDB_API_KEY = "WANDB_API_KEY"
SECRET_NAMES = (HF_TOKEN, WANDB_API_KEY)
DOTENV = ".env"

_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
REDACTED = "[REDACTED]"


def read_dotenv(path: str | Path = DOTENV) -> dict[str, str]:
    """KEY=VALUE lines of a .env file (optional `export`, quotes, # comments); {} if absent."""
    path = Path(path)
    if not path.is_file():
        return {}
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            # the line may hold a secret: name the line, never print it
            raise ValueError(f"{path}:{number}: not a KEY=VALUE line; fix or comment it out")
        key, value = match.groups()
        values[key] = _unquote(value)
    return values


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return re.sub(r"\s+#.*$", "", value)


def lookup(name: str, dotenv: str | Path = DOTENV, environ=None) -> str | None:
    """The environment first, then the .env file; empty counts as unset."""
    environ = os.environ if environ is None else environ
    value = environ.get(name) or read_dotenv(dotenv).get(name)
    return value or None


def require(name: str, why: str, dotenv: str | Path = DOTENV, environ=None) -> str:
    value = lookup(name, dotenv, environ)
    if value is None:
        raise MissingCredential(missing_message([(name, why)], dotenv))
    return value


def missing_credentials(config: dict, dotenv: str | Path = DOTENV, environ=None) -> list[tuple[str, str]]:
    """(variable, why) for each credential the configuration needs but cannot find."""
    from sublim import publish, tracking  # they import this module

    needed = []
    section = publish.settings(config)
    if section["enabled"]:
        needed.append((HF_TOKEN, "publish.enabled is true: a Hugging Face token with write access"))
        if not section["owner"]:
            needed.append((HF_USER_ID, "publish.owner is not set: the Hub user or organisation to publish under"))
    wandb = tracking.settings(config)
    if tracking.needs_api_key(wandb, environ):
        needed.append((WANDB_API_KEY, "wandb.enabled is true and mode is online (WANDB_MODE=offline needs none)"))
    return [(name, why) for name, why in needed if lookup(name, dotenv, environ) is None]


class MissingCredential(RuntimeError):
    """A credential the configuration needs is neither in the environment nor in .env."""


def missing_message(missing: list[tuple[str, str]], dotenv: str | Path = DOTENV) -> str:
    lines = [f"  {name}: {why}" for name, why in missing]
    return ("missing credentials:\n" + "\n".join(lines) + f"\nset them in the environment or in "
            f"{dotenv} (one KEY=value per line, git-ignored), or turn the feature off in the config")


def secret_values(dotenv: str | Path = DOTENV, environ=None) -> list[str]:
    """The secret values currently known, longest first (so a value containing another redacts whole)."""
    values = {lookup(name, dotenv, environ) for name in SECRET_NAMES}
    return sorted((v for v in values if v and len(v) >= 4), key=len, reverse=True)


def redact(text: str, secrets: list[str]) -> str:
    for value in secrets:
        text = text.replace(value, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """Replaces secret values in a log record's final message (exceptions included)."""

    def __init__(self, secrets: list[str]):
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        record.msg = redact(record.getMessage(), self.secrets)
        record.args = ()
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), self.secrets)
            record.exc_info = None
        return True


def redact_logging(secrets: list[str]) -> None:
    """Attach the redacting filter to every handler of the root logger (call after log_to)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter(secrets))


class RedactingStream:
    """A text stream that redacts secret values before passing text on (tracebacks, prints)."""

    def __init__(self, stream, secrets: list[str]):
        self.stream, self.secrets = stream, secrets

    def write(self, text):
        return self.stream.write(redact(text, self.secrets))

    def __getattr__(self, name):
        return getattr(self.stream, name)


def guard_outputs(dotenv: str | Path = DOTENV) -> list[str]:
    """Redact known secret values from this process's log records, stderr and stdout; call once a
    job's logging is set up (sublim.logs.log_to). Returns the values it guards."""
    secrets = secret_values(dotenv)
    redact_logging(secrets)
    if secrets:
        sys.stderr = RedactingStream(sys.stderr, secrets)
        sys.stdout = RedactingStream(sys.stdout, secrets)
    return secrets
