"""A workflow that stands for a remediation waiting at its gate: open, tagged with its target
as every run is, holding no lease. In a module of its own, with nothing but temporalio to
import, so the workflow sandbox can load it."""

from __future__ import annotations

from temporalio import workflow


@workflow.defn(name="RemediationAtItsGate")
class AtItsGate:
    def __init__(self) -> None:
        self.done = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self.done)

    @workflow.signal
    def finish(self) -> None:
        self.done = True
