"""pool_restart as workers before gate listings ran it: its gate publishes nothing to
visibility (no memo, no gate search attributes, no patch marker). In a module of its own so
the workflow sandbox imports it without the test's imports."""

from __future__ import annotations

from temporalio import workflow

from workflows.pool_restart import PoolRestartWorkflow

with workflow.unsafe.imports_passed_through():
    from workflows.models import RunbookInput, RunReport


@workflow.defn(name="PoolRestartWorkflow")
class PoolRestartBeforeListing(PoolRestartWorkflow):
    @workflow.init
    def __init__(self, params: RunbookInput) -> None:
        super().__init__(params)
        self.gate.publish = lambda: None

    @workflow.run
    async def run(self, params: RunbookInput) -> RunReport:
        return await super().run(params)
