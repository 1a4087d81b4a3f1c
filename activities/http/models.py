"""What the HTTP probes take and report."""

from __future__ import annotations

from pydantic import BaseModel


class ProbeInput(BaseModel):
    target: str
    timeout_seconds: float = 5.0


class ProbeResult(BaseModel):
    url: str
    healthy: bool
    status_code: int | None = None
    latency_ms: float
    error: str = ""


class AssessInput(BaseModel):
    target: str
    rounds: int = 3
    interval_seconds: float = 2.0
    down_rounds: int = 2
    timeout_seconds: float = 5.0


class ProbeRound(BaseModel):
    round: int
    results: list[ProbeResult]

    @property
    def failed(self) -> bool:
        return not all(r.healthy for r in self.results)


class DownAssessment(BaseModel):
    down: bool
    failed_rounds: int
    rounds: list[ProbeRound]

    def describe(self) -> str:
        failing = sorted({r.url for rnd in self.rounds for r in rnd.results if not r.healthy})
        return f"{self.failed_rounds}/{len(self.rounds)} probe rounds failed" + (
            f" ({', '.join(failing)})" if failing else ""
        )
