"""The storm's senders: each alert posted until accepted, retrying 5xx answers and broken
connections with backoff as Alertmanager, Grafana and PagerDuty do; the figures they print."""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from dataclasses import dataclass, field

from benchmarks.raw_http import HTTPConnection
from tests import payloads

ROUTED = 50
FIRST_BACKOFF_SECONDS = 0.25
MAX_BACKOFF_SECONDS = 4.0
GIVE_UP_AFTER_SECONDS = 120.0


@dataclass
class Tally:
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    # By outcome: a coalesced duplicate is answered before Temporal has it; started and
    # attached alerts only once Temporal recorded them.
    by_outcome: dict[str, list[float]] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)  # alerts never accepted, by why
    retries: dict[str, int] = field(default_factory=dict)  # attempts answered 5xx or broken

    def print(self, workers: int, storm: Storm) -> None:
        accepted = sum(self.outcomes.values())
        self.latencies.sort()
        p99 = _p99(self.latencies)
        print(f"alerts posted: {len(storm.bodies)} ({storm.duplicates} duplicates of one, "
              f"{storm.distinct} distinct, {min(ROUTED, storm.distinct)} of those routed), "
              f"{workers} service process(es)")  # fmt: skip
        print(
            f"accepted: {accepted} in {self.elapsed:.1f} s = {accepted / self.elapsed:.0f} alerts/s"
        )
        p50 = statistics.median(self.latencies)
        print(f"webhook -> run started/attached (or coalesced) latency, retries included: "
              f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")  # fmt: skip
        for outcome, seconds in sorted(self.by_outcome.items()):
            seconds.sort()
            print(f"  {outcome:>9}: p50 {statistics.median(seconds) * 1000:.1f} ms, "
                  f"p99 {_p99(seconds) * 1000:.1f} ms ({len(seconds)} answers)")  # fmt: skip
        print(f"outcomes: {dict(sorted(self.outcomes.items()))}")
        print(f"errors (alerts never accepted): {self.errors or 0}")
        print(f"sender retries (5xx or broken connection, then accepted): {self.retries or 0}")
        print(f"runs started: {self.outcomes.get('started', 0)} "
              f"(expected 1 + {min(ROUTED, storm.distinct)} routed distinct)")  # fmt: skip


def _p99(ordered: list[float]) -> float:
    return ordered[max(int(len(ordered) * 0.99) - 1, 0)]


class Storm:
    def __init__(
        self, host: str, ports: list[int], token: str, duplicates: int, distinct: int
    ) -> None:
        self.host, self.ports = host, ports
        self.duplicates, self.distinct = duplicates, distinct
        self.headers = {**payloads.bearer(token), "Content-Type": "application/json"}
        dup = {"alertname": "Storm", "shard": "dup"}
        self.bodies = [payloads.encode(payloads.alertmanager("firing", dup, "d"))] * duplicates
        self.bodies += [
            payloads.encode(
                payloads.alertmanager("firing", {"alertname": "Storm", "shard": str(i)}, f"s{i}")
            )
            for i in range(distinct)
        ]
        random.Random(7).shuffle(self.bodies)  # noqa: S311 - an interleaving, not a secret

    async def run(self, concurrency: int) -> Tally:
        tally = Tally()
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        for body in self.bodies:
            queue.put_nowait(body)
        began = time.perf_counter()
        ports = [self.ports[i % len(self.ports)] for i in range(concurrency)]
        await asyncio.gather(*(self._sender(queue, tally, port) for port in ports))
        tally.elapsed = time.perf_counter() - began
        return tally

    async def _sender(self, queue: asyncio.Queue[bytes], tally: Tally, port: int) -> None:
        connection = HTTPConnection(self.host, port)
        while not queue.empty():
            await self._deliver(connection, queue.get_nowait(), tally)
        connection.close()

    async def _deliver(self, connection: HTTPConnection, body: bytes, tally: Tally) -> None:
        began = time.perf_counter()
        backoff = FIRST_BACKOFF_SECONDS
        while True:
            try:
                status, answer = await connection.post("/alerts/alertmanager", body, self.headers)
            except (OSError, asyncio.IncompleteReadError) as err:
                why = type(err).__name__
            else:
                if status == 202:
                    break
                why = str(status)
                if status < 500:
                    tally.errors[why] = tally.errors.get(why, 0) + 1
                    return
            if time.perf_counter() - began > GIVE_UP_AFTER_SECONDS:
                tally.errors[why] = tally.errors.get(why, 0) + 1
                return
            tally.retries[why] = tally.retries.get(why, 0) + 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
        took = time.perf_counter() - began
        tally.latencies.append(took)
        for result in json.loads(answer)["results"]:
            tally.outcomes[result["outcome"]] = tally.outcomes.get(result["outcome"], 0) + 1
            tally.by_outcome.setdefault(result["outcome"], []).append(took)
