"""The process pool's worker side on its own: the messages between pool and workers (runners/_messages.py),
a real spawned worker (runners/_worker_main.py) spoken to through its pipes without the pool, and the
CPU helpers the local pool and the Ray actors share (runners/_cpus.py).

The pool itself, with its restarts, hangs and stops, is tests/integration/test_runners_processes.py.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import pickle
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, get_args

import numpy as np
import pytest

from indexer.embedders import load_embedder
from indexer.embedders.fake import FakeEmbedder
from indexer.errors import ModelLoadError
from indexer.runners import make_runner
from indexer.runners._cpus import THREAD_VARS, pin_threads, usable_cpus
from indexer.runners._messages import (
    DEFAULT_EMBEDDER_FACTORY,
    BatchFinished,
    Claim,
    ClaimFailed,
    Embedded,
    Limits,
    LoadFailed,
    Ready,
    Stop,
    WorkerMessage,
    WorkerSpec,
)
from indexer.runners._worker_main import embedder_factory, run

from helpers import ROOT

INFO = FakeEmbedder(16).info


# -- the messages ------------------------------------------------------------------------------------------

def every_message() -> list[Any]:
    vectors = FakeEmbedder(16).embed(["a", "b"])
    return [
        WorkerSpec(model="fake:16", batch_size=8, embedder_options={"prompt": "q: "}, threads=2,
                   device="cpu", batch_tokens=512, embedder_factory="tests_helper:load"),
        Claim(3, ["a", "b"]), Stop(),
        Ready(1234, INFO, Limits(8, None), 91.5), LoadFailed("ModelLoadError: no such model"),
        BatchFinished(3, 2), ClaimFailed(3, "RuntimeError: boom", 7.25),
        Embedded(3, vectors, {1: "embedding failed: ValueError: x"}, Limits(4, 256), 92.0, 7.25),
    ]


def test_every_message_is_a_frozen_dataclass() -> None:
    kinds = {type(m) for m in every_message()}
    assert set(get_args(WorkerMessage)) <= kinds  # every kind a worker sends is checked here
    for kind in kinds | {Limits}:
        assert dataclasses.is_dataclass(kind) and kind.__dataclass_params__.frozen, kind  # type: ignore[attr-defined]
    claim = Claim(3, ["a"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        claim.task = 4  # type: ignore[misc]


def test_every_message_crosses_a_pipe_unchanged() -> None:
    for message in every_message():
        back = pickle.loads(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        assert type(back) is type(message)
        if isinstance(message, Embedded):
            assert isinstance(back, Embedded)
            assert back.vectors.dtype == np.float32 and back.vectors.tobytes() == message.vectors.tobytes()
            assert dataclasses.replace(back, vectors=message.vectors).__dict__ == message.__dict__
        else:
            assert back == message


# -- a real worker, without the pool ---------------------------------------------------------------------

@pytest.fixture
def worker() -> Iterator[Any]:
    """`start(spec) -> (process, tasks, results)`: spawns workers as the pool does; kills what is left."""
    started: list[BaseProcess] = []
    ctx = multiprocessing.get_context("spawn")

    def start(spec: WorkerSpec) -> tuple[BaseProcess, Connection, Connection]:
        task_r, task_w = ctx.Pipe(duplex=False)
        result_r, result_w = ctx.Pipe(duplex=False)
        process = ctx.Process(target=run, args=(task_r, result_w, spec), daemon=True)
        process.start()
        started.append(process)
        task_r.close()
        result_w.close()
        return process, task_w, result_r

    yield start
    for process in started:
        if process.is_alive():
            process.kill()
        process.join(10)


def receive(results: Connection, timeout: float = 60.0) -> WorkerMessage:
    assert results.poll(timeout), "the worker said nothing"
    message: WorkerMessage = results.recv()
    return message


def test_a_worker_answers_each_claim_in_order_and_exits_when_told(worker: Any) -> None:
    process, tasks, results = worker(WorkerSpec(model="fake:16", batch_size=2, embedder_options={},
                                                threads=1))
    ready = receive(results)
    assert isinstance(ready, Ready), ready
    assert ready.pid == process.pid and ready.info == INFO and ready.peak_rss_mb > 0
    assert ready.limits == Limits(batch_size=2, batch_tokens=None)

    texts = [f"text {i}" for i in range(5)]
    before = time.monotonic()
    tasks.send(Claim(7, texts))
    tasks.send(Claim(8, texts[:1]))  # the second waits in the pipe while the first is embedded
    answers = [receive(results) for _ in range(6)]
    assert answers[:3] == [BatchFinished(7, 2), BatchFinished(7, 2), BatchFinished(7, 1)]
    first, second = answers[3], answers[5]
    assert isinstance(first, Embedded) and first.task == 7 and first.failures == {}
    assert first.vectors.tobytes() == FakeEmbedder(16).embed(texts).astype(np.float32).tobytes()
    assert first.limits == Limits(2, None) and first.peak_rss_mb > 0
    assert before <= first.started <= time.monotonic()  # the worker's clock is the driver's
    assert answers[4] == BatchFinished(8, 1)
    assert isinstance(second, Embedded) and second.task == 8 and second.started >= first.started

    tasks.send(Stop())
    process.join(30)
    assert process.exitcode == 0
    with pytest.raises(EOFError):  # nothing more was said
        results.recv()


@pytest.mark.parametrize(("factory", "model", "reason"), [
    (DEFAULT_EMBEDDER_FACTORY, "fake:0", r"^ModelLoadError: model 'fake:0': the fake model needs a dim"),
    ("no_such_module_here:load", "fake:16", r"^ModuleNotFoundError: .*no_such_module_here"),
    ("indexer.embedders:no_such_function", "fake:16", r"^AttributeError: .*no_such_function"),
    ("indexer.embedders.load_embedder", "fake:16", r"^IndexerError: .*expected 'module:function'"),
])
def test_a_worker_that_cannot_load_says_why_and_exits(worker: Any, factory: str, model: str,
                                                        reason: str) -> None:
    process, _, results = worker(WorkerSpec(model=model, batch_size=2, embedder_options={}, threads=1,
                                            embedder_factory=factory))
    message = receive(results)
    assert isinstance(message, LoadFailed), message
    assert re.search(reason, message.reason), message.reason
    process.join(30)
    assert process.exitcode == 0


def test_the_default_factory_is_load_embedder_and_a_bad_one_fails_the_pool_start() -> None:
    assert embedder_factory(DEFAULT_EMBEDDER_FACTORY) is load_embedder
    with pytest.raises(ModelLoadError, match=r"could not be loaded in worker 0 on cpu.*no_such_module_here"):
        make_runner("gpus", "fake:16", batch_size=8, devices="cpu", embedder_factory="no_such_module_here:f")


# -- the CPUs ------------------------------------------------------------------------------------------------

def test_pin_threads_limits_every_math_library_and_the_tokenizer(monkeypatch: pytest.MonkeyPatch) -> None:
    pinned = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", *THREAD_VARS)
    for name in (*pinned, "TOKENIZERS_PARALLELISM", "RAYON_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)  # put back as they were after the test
    pin_threads(3, tokenizer_threads=2)
    assert {name: os.environ[name] for name in pinned} == dict.fromkeys(pinned, "3")
    assert (os.environ["TOKENIZERS_PARALLELISM"], os.environ["RAYON_NUM_THREADS"]) == ("true", "2")
    pin_threads(1)  # a CPU worker's default: the tokenizer on the worker's one thread
    assert os.environ["OMP_NUM_THREADS"] == "1"
    assert (os.environ["TOKENIZERS_PARALLELISM"], os.environ["RAYON_NUM_THREADS"]) == ("false", "1")


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_usable_cpus_follow_the_affinity_mask_not_the_machine() -> None:
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from indexer.runners._cpus import usable_cpus; print(usable_cpus())")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
    assert usable_cpus() == len(os.sched_getaffinity(0))


def _running(started: Any) -> None:
    started.set()
    time.sleep(60)


def test_a_worker_that_reported_nothing_yet_has_its_peak_read_from_the_kernel() -> None:
    """A short sync can end while a worker still loads its model: it reported no peak, yet its live
    process holds memory (the kernel's VmHWM), and that is what the summary reports; a gone one, what
    it reported."""
    from indexer.runners._messages import WorkerSpec
    from indexer.runners._worker_handle import WorkerHandle

    handle = WorkerHandle(0, WorkerSpec(model="fake:8", batch_size=1, embedder_options={}, threads=1), "w0")
    ctx = multiprocessing.get_context("spawn")
    started = ctx.Event()
    process = ctx.Process(target=_running, args=(started,))
    process.start()
    handle.process = process
    try:
        assert started.wait(60)  # the child runs Python: its interpreter is in memory
        assert handle.peak_rss_mb == 0.0
        assert (handle.peak_rss_so_far() > 1.0) == sys.platform.startswith("linux")
    finally:
        process.kill()
        process.join()
    process.close()
    handle.peak_rss_mb = 42.0
    assert handle.peak_rss_so_far() == 42.0
