"""The demo's deploy platform (`make run` serves a local Vercel fake on :8090): three good
releases of `web`, the newest serving. `--broken` ships a fourth, broken release, the way a
bad deploy reaches production: the demo app's /health answers 500 and its error rate is 1.0.

    .venv/bin/python -m infra.demo_release --broken    # then: remediate start rollback --target web
    .venv/bin/python -m infra.demo_release             # back to the good state
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime, timedelta

from infra.fakes.platforms import VERCEL, Platform, Release

VERCEL_PORT = 8090
APP_URL = "http://127.0.0.1:8088"


def demo_platform(token: str) -> Platform:
    """The Vercel fake as the stack runs it; the engine reads the token from VERCEL_TOKEN."""
    base = VERCEL.at(f"http://127.0.0.1:{VERCEL_PORT}")
    return Platform(base.name, base.module, "VERCEL_TOKEN", token, base.url)


async def ship(token: str, broken: bool) -> str:
    count = 4 if broken else 3
    now = datetime.now(UTC).replace(microsecond=0)
    # A release a day for the last three days; the broken one shipped ten minutes ago.
    shipped = [now - timedelta(days=3 - i) for i in range(3)] + [now - timedelta(minutes=10)]
    releases = [
        Release.numbered(i, count, healthy=i < 3).model_copy(update={"created_at": shipped[i]})
        for i in range(count)
    ]
    current = releases[-1].name
    await demo_platform(token).scenario(
        releases, current=current, on_switch=f"{APP_URL}/debug/release", switch_after_seconds=2
    )
    return current


def main() -> None:
    from infra.stack import demo_secrets

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broken", action="store_true", help="ship a broken release")
    args = parser.parse_args()
    current = asyncio.run(ship(demo_secrets()["VERCEL_TOKEN"], args.broken))
    state = "broken" if args.broken else "healthy"
    print(f"production of web now serves {current} ({state}); {APP_URL}/health shows it")


if __name__ == "__main__":
    main()
