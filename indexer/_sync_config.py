"""What a sync settles before it reads a document: the embedding configuration it asks for, checked
against the index's, and the runner (the backend and its model) it will embed with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import psutil

from ._progress import Progress, SyncSummary
from .chunking import Chunker, make_chunker
from .config import EmbeddingConfig, difference_line, equivalent, same_weights
from .embedders import Embedder, ModelInfo
from .embedders.sentence_transformers import DEFAULT_MODEL_NAMES
from .errors import (
    ConfigMismatchError,
    IndexerError,
)
from .index import Index
from .runners import Runner, make_runner
from .runners.inline import InlineRunner
from .settings import DEFAULT_MODEL


def requested_config(i: ModelInfo, dtype: str, query_prompt: str, template: str) -> EmbeddingConfig:
    return EmbeddingConfig(model=i.model, revision=i.revision, dim=i.dim, dtype=dtype,
                           normalize=i.normalize, max_seq_length=i.max_seq_length, prompt=i.prompt,
                           runtime=i.runtime, truncate_dim=i.truncate_dim, query_prompt=query_prompt,
                           template=template)


def chunking_of(config: EmbeddingConfig, chunking: bool | None, chunk_tokens: int | None,
                chunk_overlap: int | None) -> EmbeddingConfig:
    """`config` with the chunking settings of a new index: on unless turned off, at the window."""
    return replace(config, chunking=True if chunking is None else chunking,
                   chunk_tokens=chunk_tokens or 0, chunk_overlap=chunk_overlap or 0)


def chunker_for(config: EmbeddingConfig) -> Chunker | None:
    """What cuts (or, in an unchunked index, counts) the long texts of an index. An API model
    (revision "api:HOST") is chunked at its per-input limit, counted as its backend counts."""
    return make_chunker(config.model, config.max_seq_length, config.prompt, config.chunk_tokens,
                        config.chunk_overlap, api=config.revision.startswith("api:"))


def check_chunking(chunking: bool | None, chunk_tokens: int | None, chunk_overlap: int | None) -> None:
    for name, value, least in (("--chunk-tokens", chunk_tokens, 1), ("--chunk-overlap", chunk_overlap, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            raise IndexerError(f"{name} must be a whole number of tokens, at least {least} (got {value!r})")
    if chunking is False and (chunk_tokens or chunk_overlap):
        raise IndexerError("--no-chunking embeds whole documents: --chunk-tokens and --chunk-overlap apply "
                           "to chunked indexes only; give one or the other")


def check_names(index: Index, asked: dict[str, object], revision: str | None = None) -> bool:
    """Refuse a different dtype, runtime, truncation, prompt or template (`asked`: field -> value, None:
    not asked), or a model whose weights are known to differ, before anything is read or loaded. A model
    is bound by its weights, not its name: another name of the default model passes at once; another
    name with a known `revision` (an embedder given) passes if the weights hash is the index's. Returns
    True when the model goes by another name whose weights must be loaded to tell (a local path,
    another hub name)."""
    config = index.config
    model = asked.get("model")
    diffs = [difference_line(name, getattr(config, name), value) for name, value in asked.items()
             if name != "model" and value is not None and not equivalent(name, getattr(config, name), value)]
    load_to_compare = False
    if isinstance(model, str) and model != config.model \
            and not {model, config.model} <= set(DEFAULT_MODEL_NAMES):
        if revision is not None:
            if not same_weights(config, replace(config, model=model, revision=revision)):
                diffs.insert(0, difference_line("model", config.model, model))
        elif same_weights(config, config) and not model.startswith("fake:"):
            load_to_compare = True
        else:  # the fake and API models have no weights hash: their names bind
            diffs.insert(0, difference_line("model", config.model, model))
    if diffs:
        raise ConfigMismatchError(
            f"index {index.path} is bound to another embedding configuration; nothing was changed.\n  "
            + "\n  ".join(diffs)
            + "\nSync with the index's settings, or build a new index in another --index directory.")
    return load_to_compare


def bind_to_index(index: Index, seam: Runner | Embedder | None, dry_run: bool, summary: SyncSummary,
                  make_runner: Callable[[], Runner], **asked: object) -> Runner | None:
    """Refuse a configuration the index is not bound to (see check_names; `asked`: its keywords). A
    model given by another name is loaded now (by `make_runner`, returned for the sync to use), so that
    other weights are refused even by a sync with nothing to embed; a dry run loads nothing and says
    so."""
    config = index.config
    if seam is not None:
        check_names(index, {**asked, "model": seam.info.model, "runtime": seam.info.runtime,
                             "truncate_dim": seam.info.truncate_dim, "prompt": seam.info.prompt},
                    seam.info.revision)
        return None
    model = asked.get("model")
    if not check_names(index, asked) or not isinstance(model, str):
        return None
    if dry_run:
        summary.warnings.append(f"model {model!r} is another name than the index's {config.model!r}; "
                                "a sync loads it and compares their weights")
        return None
    runner = make_runner()
    try:
        # the weights and what the model reports; the chunking settings were compared by name above
        loaded = requested_config(runner.info, config.dtype, config.query_prompt, config.template)
        config.require_same(replace(loaded, chunking=config.chunking, chunk_tokens=config.chunk_tokens,
                                    chunk_overlap=config.chunk_overlap), index.path)
    except BaseException:
        runner.close()
        raise
    return runner


def with_runtime(options: dict[str, object] | None, runtime: str | None,
                 truncate_dim: int | None, prompt: str | None = None) -> dict[str, object]:
    """The embedder options with the runtime, the truncation and the prompt, where they are not the
    defaults (so that a backend which takes no embedder options is asked for none by default)."""
    out = dict(options or {})
    if runtime is not None and runtime != "torch":
        out["runtime"] = runtime
    if truncate_dim:
        out["truncate_dim"] = truncate_dim
    if prompt:
        out["prompt"] = prompt
    return out


def named_prompt(model: str, name: str) -> str:
    """The prompt called `name` in the model's sentence-transformers configuration."""
    from .embedders.sentence_transformers import model_prompts
    from .errors import ModelLoadError

    prompts = {} if model.startswith("fake:") else model_prompts(model)
    if name not in prompts:
        have = ", ".join(repr(k) for k in prompts) if prompts else "none"
        raise ModelLoadError(f"--prompt-name {name!r}: model {model!r} defines no prompt of that name "
                             f"(its prompts: {have}); give the text with --prompt instead")
    return prompts[name]


@dataclass(frozen=True)
class RunnerRequest:
    """How a sync was asked to embed: a model by name (or an `embedder`), the backend and its options,
    the batch limits and how the model is loaded. `make` makes the runner for a new index, or for an
    existing one, whose configuration fills in what was not asked."""

    model: str | None
    batch_size: int
    batch_tokens: int | None
    backend: str
    backend_options: dict[str, object] | None
    embedder_options: dict[str, object] | None
    runtime: str | None
    truncate_dim: int | None
    prompt: str | None
    embedder: Embedder | None

    def make(self, config: EmbeddingConfig | None, summary: SyncSummary,
             on_progress: Callable[[Progress], None] | None) -> Runner:
        """The runner that loads the model (or runs `embedder`). `--backend auto` is decided here, so
        that the summary and the "load" progress event can say what was chosen."""
        if self.embedder is not None:
            return InlineRunner(self.embedder)
        if config is None:
            model, runtime, truncate_dim = self.model or DEFAULT_MODEL, self.runtime, self.truncate_dim
            prompt = self.prompt
        else:
            model, runtime = self.model or config.model, self.runtime or config.runtime
            truncate_dim = self.truncate_dim or config.truncate_dim
            prompt = config.prompt if self.prompt is None else self.prompt
        embedder_options = with_runtime(self.embedder_options, runtime, truncate_dim, prompt)
        if self.batch_tokens and self.backend != "openai":  # the API packs its own requests
            embedder_options["batch_tokens"] = self.batch_tokens
        options = dict(self.backend_options or {})
        runtime_name = str(embedder_options.get("runtime", "torch"))
        chosen = self.backend
        if chosen == "auto":
            from .runners import auto

            chosen, options = auto.choose(model, options, runtime_name)
        layout = backend_layout(chosen, options)
        if self.backend == "auto":
            layout["chosen_by"] = "auto"
        summary.backend, summary.backend_settings = chosen, layout
        if on_progress is not None:
            how = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in layout.items())
            on_progress(Progress("load", 0, None, 0.0, None, psutil.Process().memory_info().rss / 2**20,
                                 detail=f"model {model} (runtime {runtime_name}; backend {chosen}"
                                        + (f": {how}" if how else "") + ")"))
        return make_runner(chosen, model, batch_size=self.batch_size, embedder_options=embedder_options,
                           **options)


def backend_layout(backend: str, options: dict[str, object]) -> dict[str, object]:
    """What a backend will run: workers and threads, devices, or the options given."""
    if backend == "processes":
        from .runners._cpus import default_layout, usable_cpus

        workers, threads = options.get("workers"), options.get("threads_per_worker")
        n, t = default_layout(usable_cpus(), workers if isinstance(workers, int) else None,
                              threads if isinstance(threads, int) else None)
        return {"workers": n, "threads_per_worker": t}
    if backend == "gpus":
        return {"devices": options.get("devices") or "all"}
    return {k: v for k, v in options.items() if k in ("workers", "threads_per_worker", "devices",
                                                       "concurrency", "ray_address")}
