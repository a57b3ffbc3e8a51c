"""sentence-transformers models on ONNX Runtime: fp32 ("onnx") and int8 weights ("onnx-int8").

The model is loaded with sentence-transformers once (its tokenizer, and its weights hash as the
revision), exported to ONNX on first use and cached by that hash:

    <cache>/<weights hash>/v2/model-fp32.onnx   torch.onnx.export (TorchScript exporter, no network),
                                                then ONNX Runtime's transformer optimizer (fused attention)
    <cache>/<weights hash>/v2/model-int8.onnx   onnxruntime.quantization.quantize_dynamic of the fp32 file

v2 is EXPORT_FORMAT, bumped whenever the files would be made differently, so that stale ones are not
loaded.
<cache> is $INDEXER_CACHE_DIR, else $XDG_CACHE_HOME/indexer/onnx, else ~/.cache/indexer/onnx. A file
is written under a temporary name and renamed into place, under a lock on the model's directory, so
concurrent workers export once and never see half a file. Delete the directory to export again.

The exported graph is the whole sentence-transformers pipeline (transformer, pooling with the attention
mask, Normalize where the model has it), with batch and sequence axes dynamic. It is traced from a
padded batch of mixed lengths, so the mask path is the general one (a trace from an unpadded batch can
bake in "no padding"), with eager attention (which the optimizer can fuse), and checked against torch
on mixed-length batches before it is cached, before and after fusion (a fused graph that fails the
check is dropped for the plain one).

Texts are tokenized by the model's own preprocessing and batched by token length exactly as
SentenceTransformerEmbedder does; ONNX Runtime's threads follow torch's (pinned per worker by the
processes runner), so N workers do not oversubscribe the cores.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..errors import MissingDependencyError, ModelLoadError
from ._tokenizing import Tokenized
from .sentence_transformers import SentenceTransformerEmbedder, batch_end, excludes_prompt

__all__ = ["FILES", "OnnxEmbedder", "cache_dir", "ensure_exported", "import_onnxruntime"]

FILES = {"onnx": "model-fp32.onnx", "onnx-int8": "model-int8.onnx"}
# The cache layout <cache>/<weights hash>/<EXPORT_FORMAT>/: bump it whenever the export, the graph
# optimization or the quantization changes, so that files made the old way are never loaded again.
# v1 (unversioned, directly under the hash): SDPA trace, unfused, all weight MatMuls int8.
# v2: eager-attention trace fused by ONNX Runtime's transformer optimizer; int8 quantizes only the FFN
#     up-projections (docs/RUNTIMES.md has the measurements).
EXPORT_FORMAT = "v2"
OPSET = 17
# The export must reproduce torch on every document (tests/integration/test_onnx_runtime.py measures
# the corpus).
EXPORT_MIN_COSINE = 0.9999
# Mixed lengths, so that the trace and the check both see padding.
_PROBE = ["a", "A longer sentence, so that the batch is padded: the attention mask has zeros in it.",
          "def f(x):\n    return x ** 2  # code, too"]


def import_onnxruntime() -> ModuleType:
    """onnxruntime, or a one-line error saying how to install it. (Tests make the import fail by
    putting None in sys.modules["onnxruntime"].)"""
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError(
            "the onnx runtimes need onnxruntime and onnx, which are not installed; "
            "pip install 'indexer[onnx]' (or use --runtime torch)") from exc
    module: ModuleType = onnxruntime
    return module


def cache_dir() -> Path:
    """Where exported models are kept; see the module docstring."""
    given = os.environ.get("INDEXER_CACHE_DIR")
    if given:
        return Path(given)
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "indexer" / "onnx"


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: the temp-file-and-rename still keeps every file whole
        yield
        return
    with open(directory / ".lock", "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _features(model: Any, texts: list[str]) -> dict[str, np.ndarray]:
    """The model's own tokenization (sentence-transformers >= 6 calls it preprocess) as int64 arrays."""
    prepare = getattr(model, "preprocess", None) or model.tokenize
    return {k: v.numpy().astype(np.int64, copy=False) for k, v in prepare(texts).items()
            if hasattr(v, "numpy")}


@contextlib.contextmanager
def _eager_attention(model: Any) -> Iterator[None]:
    """The transformer's attention as plain MatMul/Softmax while tracing: an SDPA trace has IsNaN/Where
    around the softmax, which ONNX Runtime's attention fusion does not recognize. Restored afterwards
    (the same model keeps serving torch)."""
    transformer: Any = getattr(model[0], "auto_model", None) if len(model) else None
    before = getattr(getattr(transformer, "config", None), "_attn_implementation", None)
    switched = False
    if before not in (None, "eager") and hasattr(transformer, "set_attn_implementation"):
        try:
            transformer.set_attn_implementation("eager")
            switched = True
        except Exception:  # a model without an eager path: trace what it has
            pass
    try:
        yield
    finally:
        if switched:
            transformer.set_attn_implementation(before)


def _export_fp32(model: Any, path: Path) -> None:
    """Trace the whole sentence-transformers model into one ONNX graph at `path`."""
    import torch

    sample = _features(model, _PROBE)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.st = model

        def forward(self, *inputs: Any) -> Any:
            return self.st(dict(zip(names, inputs, strict=True)))["sentence_embedding"]

    args = tuple(torch.from_numpy(sample[n]) for n in names)
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "sequence"} for n in names}
    with torch.no_grad(), warnings.catch_warnings(), _eager_attention(model):
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow, checked below
        torch.onnx.export(Graph().eval(), args, str(path), dynamo=False, input_names=names,
                          output_names=["sentence_embedding"],
                          dynamic_axes={**axes, "sentence_embedding": {0: "batch"}},
                          opset_version=OPSET, do_constant_folding=True)


def _fuse(model: Any, src: Path, dst: Path) -> bool:
    """ONNX Runtime's transformer optimizer on the traced graph (offline, Python only): attention,
    LayerNorm with the residual add, bias+GELU and the embeddings each become one fused kernel. False
    (nothing written) when the optimizer is missing or fuses no attention: the plain graph is kept."""
    config = getattr(getattr(model[0], "auto_model", None), "config", None) if len(model) else None
    heads, hidden = getattr(config, "num_attention_heads", 0), getattr(config, "hidden_size", 0)
    if not heads or not hidden:
        return False
    try:
        from onnxruntime.transformers.optimizer import optimize_model
    except ImportError:
        return False
    logging.disable(logging.WARNING)  # the optimizer logs each fusion
    try:
        optimized = optimize_model(str(src), model_type="bert", num_heads=int(heads), hidden_size=int(hidden),
                                   opt_level=0)
    except Exception:
        return False
    finally:
        logging.disable(logging.NOTSET)
    if not optimized.get_fused_operator_statistics().get("Attention"):
        return False
    optimized.save_model_to_file(str(dst))
    return True


def _int8_nodes(path: Path) -> list[str] | None:
    """The MatMuls int8 quantizes: each layer's FFN up-projection (hidden -> 4x hidden, named
    .../intermediate/dense/... in Hugging Face BERT-like models). Quantizing one group at a time on
    MiniLM, the attention projections and both output projections each cost more neighbour overlap
    than they gained speed on an AVX2 CPU (docs/RUNTIMES.md). None (every weight MatMul) for a model
    without such names."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    names = [n.name for n in graph.node if n.op_type == "MatMul" and "/intermediate/" in n.name]
    return names or None


def _quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic quantization: int8 weights per output channel, activations quantized at run time.
    Per-channel keeps MiniLM's mean cosine to fp32 above 0.99 where per-tensor gave about 0.96
    (measured; docs/RUNTIMES.md); only the FFN up-projections are quantized (see _int8_nodes): the
    fused attention, the output projections and the embeddings stay fp32."""
    import onnx

    import_onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)  # its root-logger advice to pre-process, on every quantization
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"], nodes_to_quantize=_int8_nodes(src),
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})  # fused ops' outputs
    finally:
        logging.disable(logging.NOTSET)


def _check_export(model: Any, path: Path, name: str) -> None:
    """The exported graph against torch, on batches of 1 and of mixed lengths."""
    session = _session(import_onnxruntime(), path, threads=1)
    inputs = [i.name for i in session.get_inputs()]
    for batch in ([_PROBE[0]], _PROBE, [_PROBE[1] * 40, *_PROBE]):  # the last one past max length
        want = np.asarray(model.encode(batch, batch_size=len(batch), convert_to_numpy=True), np.float64)
        features = _features(model, batch)
        got = np.asarray(session.run(None, {n: features[n] for n in inputs})[0], np.float64)
        cos = (want * got).sum(1) / (np.linalg.norm(want, axis=1) * np.linalg.norm(got, axis=1))
        if not cos.min() >= EXPORT_MIN_COSINE:
            raise ModelLoadError(f"model {name!r}: the ONNX export does not reproduce torch (cosine "
                                 f"{cos.min():.6f} on a batch of {len(batch)}); use --runtime torch")


def _write_atomically(path: Path, make: Any) -> None:
    tmp = path.with_name(f"{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.partial.onnx")
    try:
        make(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def ensure_exported(model: Any, revision: str, runtime: str, name: str,
                    cache: Path | None = None) -> Path:
    """The cached ONNX file for this model and runtime, exported (and quantized) if not there yet."""
    if runtime not in FILES:
        raise ModelLoadError(f"runtime {runtime!r} has no ONNX file; choose one of {', '.join(FILES)}")
    directory = (cache or cache_dir()) / revision / EXPORT_FORMAT
    target = directory / FILES[runtime]
    if target.is_file():
        return target
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelLoadError(f"cannot create the ONNX cache {directory} ({exc.strerror}); set "
                             "INDEXER_CACHE_DIR to a writable directory") from exc
    with _locked(directory):
        if target.is_file():  # another process exported it while we waited for the lock
            return target
        fp32 = directory / FILES["onnx"]
        _say(f"indexer: exporting model {name} to ONNX ({runtime}) into {directory}; once for this "
             "model, later runs reuse it")
        if not fp32.is_file():
            def export(tmp: Path) -> None:
                _export_fp32(model, tmp)
                _check_export(model, tmp, name)
                fused = tmp.with_name(tmp.name.replace(".partial.onnx", ".fused.partial.onnx"))
                try:
                    if _fuse(model, tmp, fused):
                        try:
                            _check_export(model, fused, name)
                        except ModelLoadError:  # keep the plain graph, which reproduces torch
                            return
                        fused.replace(tmp)
                finally:
                    fused.unlink(missing_ok=True)

            _write_atomically(fp32, export)
        if runtime == "onnx-int8":
            _write_atomically(target, lambda tmp: _quantize_int8(fp32, tmp))
    return target


def _say(message: str) -> None:
    """One line for the user on stderr (through logging, so that an application can route it), unless
    the CLI runs quietly (INDEXER_QUIET, which worker processes inherit)."""
    if os.environ.get("INDEXER_QUIET") != "1":
        logging.getLogger("indexer").warning(message)


def _session(ort: ModuleType, path: Path, threads: int) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: no warnings about unused initializers on stderr
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxEmbedder:
    """A sentence-transformers model run by ONNX Runtime on the CPU; info.runtime says which file."""

    def __init__(self, name: str, *, runtime: str = "onnx", batch_size: int = 32,
                 batch_tokens: int | None = None, device: str | None = None, model: Any = None,
                 cache: Path | None = None, threads: int | None = None, prompt: str = "") -> None:
        ort = import_onnxruntime()  # before the model loads: say what is missing at once
        if device not in (None, "cpu"):
            raise ModelLoadError(f"runtime {runtime!r} runs on the CPU only (asked for device {device!r}); "
                                 "use --runtime torch on GPUs")
        self.base = SentenceTransformerEmbedder(name, batch_size=batch_size, batch_tokens=batch_tokens,
                                                device="cpu", model=model, prompt=prompt)
        if prompt and excludes_prompt(self.base.model):
            # The exported graph pools over every token; it has no input for the prompt's length.
            raise ModelLoadError(f"model {name!r} leaves the prompt out of its pooling "
                                 f"(include_prompt=False), which runtime {runtime!r} cannot do; use "
                                 "--runtime torch with --prompt")
        self.model = self.base.model  # its tokenizer; the weights stay loaded for the weights hash only
        self.batch_size, self.batch_tokens = batch_size, batch_tokens
        self.path = ensure_exported(self.model, self.base.info.revision, runtime, name, cache)
        if threads is None:
            import torch  # the processes runner pins torch's threads; ONNX Runtime takes as many

            threads = torch.get_num_threads()
        try:
            self.session = _session(ort, self.path, threads)
        except Exception as exc:  # a damaged cache file: say where it is
            raise ModelLoadError(f"cannot load {self.path} ({type(exc).__name__}: {exc}); delete it to "
                                 "export the model again") from exc
        self.threads = threads
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.info = replace(self.base.info, runtime=runtime)

    def tokenize(self, texts: list[str]) -> Tokenized:
        return self.base.tokenize(texts)

    def token_lengths(self, texts: list[str]) -> np.ndarray:
        return self.base.token_lengths(texts)

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.embed_tokenized(self.tokenize(texts))

    def embed_tokenized(self, tok: Tokenized, *, on_batch: Callable[[int], None] | None = None,
                        **_: object) -> np.ndarray:
        """Batches cut from one tokenization exactly as SentenceTransformerEmbedder cuts them;
        `on_batch(n)` after each, as there."""
        n = len(tok.lengths)
        out = np.empty((n, self.info.dim), dtype=np.float32)
        sorted_lengths = tok.lengths[tok.order]
        start = 0
        while start < n:
            end = batch_end(sorted_lengths, start, self.batch_size, self.batch_tokens)
            idx = tok.order[start:end]
            features = tok.batch(idx)
            out[idx] = self.session.run(None, {k: features[k].numpy().astype(np.int64, copy=False)
                                               for k in self.input_names})[0]
            if on_batch is not None:
                on_batch(end - start)
            start = end
        return out
