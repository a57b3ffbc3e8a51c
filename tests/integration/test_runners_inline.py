"""The inline runner (runners/inline.py: the model in the driver's own process) held to the contract every
backend keeps (tests/runner_contract.py), for the parts that apply to a runner without workers."""

from __future__ import annotations

from runner_contract import Lacks, RunnerContract

NO_WORKERS = "the model runs in the driver's own process: there is no worker to kill, stop or measure"


class TestInlineRunner(RunnerContract):
    backend = "inline"
    capacity = 1  # one claim at a time, embedded within submit()
    load_error_match = r"model 'fake:0': the fake model needs a dimension"
    can_kill_a_worker = Lacks(NO_WORKERS)
    watches_for_hangs = Lacks(NO_WORKERS)
    reports_worker_memory = Lacks(NO_WORKERS)
    reports_within_a_claim = Lacks("the fake model has no batches of its own: the inline runner embeds a "
                                   "claim in one call and reports it once (a model that tokenizes "
                                   "reports each forward pass)")

    def backend_options(self, workers: int) -> dict[str, object]:
        return {}  # the inline runner takes no worker options
