"""The flags of `indexer sync` that only a backend takes (declared once here, each passed on to the
backend as its option), and the SyncOptions all the command's flags make."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any, TypeVar

import click

from .runners._flags import backend_options
from .settings import Settings
from .sources import FolderFilter
from .sync_options import SyncOptions

_DEFAULTS = Settings()

F = TypeVar("F", bound=Callable[..., Any])

# In the order `indexer sync --help` lists them. Each one's name is the option the backend takes.
_BACKEND_FLAGS = [
    click.option("--workers", type=click.IntRange(min=1), default=None,
                 help="[processes, ray] Worker count."),
    click.option("--threads-per-worker", type=click.IntRange(min=1), default=None,
                 help="[processes, ray] Torch threads per worker."),
    click.option("--devices", default=None,
                 help="[gpus] Comma-separated devices, e.g. 0,1 (default: all)."),
    click.option("--ray-address", default=None,
                 help="[ray] auto, or a cluster address; default: a local Ray."),
    click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=None,
                 help="[ray] GPUs per actor."),
    click.option("--base-url", default=None,
                 help="[openai] API base URL (default: OPENAI_BASE_URL or OpenAI)."),
    click.option("--dimensions", type=click.IntRange(min=1), default=None,
                 help="[openai] Output dimensions."),
    click.option("--concurrency", type=click.IntRange(min=1), default=None,
                 help="[openai] Requests in flight."),
    click.option("--rpm", type=click.IntRange(min=1), default=None,
                 help="[openai] Requests per minute limit."),
    click.option("--tpm", type=click.IntRange(min=1), default=None,
                 help="[openai] Tokens per minute limit."),
    click.option("--max-retries", type=click.IntRange(min=0), default=None,
                 help="[openai] Retries a request."),
    click.option("--no-truncate", is_flag=True, default=False,
                 help="[openai] Fail inputs over the model's token limit instead of truncating them."),
]


def backend_flags(command: F) -> F:
    """`command` with the backend flags (and --hang-seconds, which sets the watch on the workers)."""
    command = click.option(
        "--hang-seconds", type=click.FloatRange(min=0), default=None, metavar="S",
        help="[processes, gpus, ray] A worker that finishes no batch for max(S, 10x the median gap between "
             f"batches) is killed and replaced, its claim redone (default {_DEFAULTS.hang_seconds:g}; 0: "
             "never).")(command)
    for flag in reversed(_BACKEND_FLAGS):
        command = flag(command)
    return command


def sync_options(flags: dict[str, Any], batch_size_given: bool) -> SyncOptions:
    """The SyncOptions of `indexer sync`'s flags (click's keywords, `flags`): the directory filters make
    the folder, --hang-seconds the settings (with the environment's), and the backend flags its
    options. --batch-size counts only where given (`batch_size_given`): the default is the settings'."""
    flags = dict(flags)
    settings = Settings.from_env()
    if (hang_seconds := flags.pop("hang_seconds")) is not None:
        settings = replace(settings, hang_seconds=hang_seconds)
    folder = FolderFilter(flags.pop("include"), flags.pop("exclude"), flags.pop("hidden"))
    batch_size = flags.pop("batch_size")
    if not batch_size_given:
        batch_size = None
    # what is left that SyncOptions does not name: the backend flags
    backend = {name: flags.pop(name) for name in list(flags) if name not in _SYNC_OPTION_NAMES}
    return SyncOptions(folder=folder, settings=settings, batch_size=batch_size,
                       backend_options=backend_options(flags["backend"], backend, batch_size,
                                                       flags["batch_tokens"]), **flags)


_SYNC_OPTION_NAMES = {f.name for f in fields(SyncOptions)}
