"""How a sync is asked to run: `SyncOptions`, every option of `indexer.sync()` in one checked object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .config import DTYPES, RUNTIMES
from .errors import IndexerError
from .settings import Settings
from .sources import FolderFilter

__all__ = ["DEFAULT_MAX_DELETE", "SyncOptions"]

# A sync may delete at most this fraction of the live documents unless told otherwise: an empty or cut
# source must not wipe the index.
DEFAULT_MAX_DELETE = 0.5


@dataclass(frozen=True, kw_only=True)
class SyncOptions:
    """The options of `indexer.sync()`; each is checked when the object is made (IndexerError).

    How documents are read: `id_field` and `text_field` name each record's id and text; `template`
    ("{title}: {text}") composes the embedded text from the record's fields instead; `folder` picks the
    files of directory sources (include/exclude patterns, hidden files; the index's own directory is
    never read, whatever it says).

    The index's configuration: `model`, `dtype`, `runtime` ("torch", "onnx", "onnx-int8"),
    `truncate_dim` (keep the first D dims, renormalized), `prompt` (prepended to every document as
    sentence-transformers' `encode(text, prompt=...)` does; `prompt_name` takes it from the prompts the
    model defines), `query_prompt` (the one queries get), `template`, `chunking` (a document longer
    than the budget is embedded as chunks cut at paragraph, sentence and word breaks), `chunk_tokens`
    (the budget; the fake model chunks only when it is given, counting words) and `chunk_overlap`.
    None means the default for a new index (the default model, float32, torch, no truncation, no
    prompts, chunked at the model's window without overlap) and the index's own for an existing one;
    anything else must match it.

    How it embeds: `backend` ("inline", "processes", "gpus", "ray", "openai", "auto") with its
    `backend_options` (workers, devices, rates ...) and the `embedder_options` the model is loaded
    with. A forward pass takes at most `batch_size` texts and `batch_tokens` padded tokens (count x
    longest) of texts of similar token length; `batch_tokens=0` batches by count alone; None: the
    `settings`' value. Neither changes a vector.

    What it may change: `delete_missing` marks documents absent from the sources deleted; a sync that
    would delete more than `max_delete` (a fraction) of the live documents is refused
    (DeleteRefusedError) before it deletes or embeds anything. `dry_run` reports what would change and
    writes nothing. `settings`: the tuning defaults (indexer/settings.py).
    """

    id_field: str = "id"
    text_field: str = "text"
    template: str | None = None
    folder: FolderFilter = field(default_factory=FolderFilter)

    model: str | None = None
    dtype: str | None = None
    runtime: str | None = None
    truncate_dim: int | None = None
    prompt: str | None = None
    prompt_name: str | None = None
    query_prompt: str | None = None
    chunking: bool | None = None
    chunk_tokens: int | None = None
    chunk_overlap: int | None = None

    backend: str = "inline"
    backend_options: Mapping[str, object] | None = None
    embedder_options: Mapping[str, object] | None = None
    batch_size: int | None = None
    batch_tokens: int | None = None

    delete_missing: bool = False
    max_delete: float = DEFAULT_MAX_DELETE
    dry_run: bool = False
    settings: Settings = field(default_factory=Settings)

    def __post_init__(self) -> None:
        if self.batch_tokens is not None and self.batch_tokens < 0:
            raise IndexerError("--batch-tokens must be at least 1 (or 0: batches by --batch-size alone)")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise IndexerError(f"dtype {self.dtype!r} is not supported; use float32 or float16")
        if self.runtime is not None and self.runtime not in RUNTIMES:
            raise IndexerError(f"runtime {self.runtime!r} is not known; choose one of {', '.join(RUNTIMES)}")
        if self.truncate_dim is not None and not _whole(self.truncate_dim, 1):
            raise IndexerError(f"--truncate-dim must be a whole number of dimensions, at least 1 (got "
                               f"{self.truncate_dim!r})")
        if self.batch_size is not None and self.batch_size < 1:
            raise IndexerError("--batch-size must be at least 1")
        if not 0 <= self.max_delete <= 1:
            raise IndexerError(f"--max-delete must be a fraction from 0 to 1 (got {self.max_delete})")
        for name, value, least in (("--chunk-tokens", self.chunk_tokens, 1),
                                   ("--chunk-overlap", self.chunk_overlap, 0)):
            if value is not None and not _whole(value, least):
                raise IndexerError(f"{name} must be a whole number of tokens, at least {least} "
                                   f"(got {value!r})")
        if self.chunking is False and (self.chunk_tokens or self.chunk_overlap):
            raise IndexerError("--no-chunking embeds whole documents: --chunk-tokens and --chunk-overlap "
                               "apply to chunked indexes only; give one or the other")
        if self.prompt is not None and self.prompt_name is not None:
            raise IndexerError("give --prompt or --prompt-name, not both")

    @property
    def chooses_loading(self) -> bool:
        """Whether an option says how a model is loaded by name (which an embedder given cannot do)."""
        return (self.runtime is not None or self.truncate_dim is not None or self.prompt is not None
                or self.prompt_name is not None)

    def asked(self) -> dict[str, object]:
        """The fields of the index's configuration these options ask for (None: not asked)."""
        return {"model": self.model, "dtype": self.dtype, "runtime": self.runtime,
                "truncate_dim": self.truncate_dim, "prompt": self.prompt, "query_prompt": self.query_prompt,
                "template": self.template, "chunking": self.chunking, "chunk_tokens": self.chunk_tokens,
                "chunk_overlap": self.chunk_overlap}


def _whole(value: object, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least
