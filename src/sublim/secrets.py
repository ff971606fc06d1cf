"""Credentials for publishing and tracking: read from the environment or a `.env` file, checked
before the first job, and kept out of everything the workflow writes.

Values are looked up by the job that needs them and never put into Snakemake params (recorded in
.snakemake/ metadata), flag files, provenance or tracker configs (uploaded). Which credentials a
setting needs is the feature's own call (publish.needed_credentials, tracking.needed_credentials).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from dotenv import dotenv_values
from dotenv.parser import parse_stream

HF_TOKEN = "HF_TOKEN"
HF_USER_ID = "HF_USER_ID"
WANDB_API_KEY = "WANDB_API_KEY"
SECRET_NAMES = (HF_TOKEN, WANDB_API_KEY)
DOTENV = ".env"

REDACTED = "[REDACTED]"


def read_dotenv(path: str | Path = DOTENV) -> dict[str, str]:
    """KEY=VALUE lines of a .env file (python-dotenv: optional `export`, quotes, # comments, no
    ${VAR} expansion); {} if absent."""
    path = Path(path)
    if not path.is_file():
        return {}
    with path.open() as stream:
        for binding in parse_stream(stream):
            if binding.error or (binding.key is not None and binding.value is None):
                # the line may hold a secret: name the line, never print it
                raise ValueError(f"{path}:{_first_line(binding.original)}: not a KEY=VALUE line; "
                                 f"fix or comment it out")
    return dict(dotenv_values(path, interpolate=False))


def _first_line(original) -> int:
    """The line a statement starts on (python-dotenv counts the blank lines before it in)."""
    text = original.string
    return original.line + text[: len(text) - len(text.lstrip())].count("\n")


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


def missing(needed: list[tuple[str, str]], dotenv: str | Path = DOTENV, environ=None) -> list[tuple[str, str]]:
    """Those of the needed (variable, why) pairs found neither in the environment nor in .env."""
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
