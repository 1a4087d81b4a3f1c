"""The demo's deploy platform (`make run` serves a local Vercel fake on :8090): three good
releases of `web`, the newest serving. `--broken` ships a fourth, broken release, the way a
bad deploy reaches production: the demo app's /health answers 500 and its error rate is 1.0.

    .venv/bin/python -m infra.demo_release --broken    # then: remediate start rollback --target web
    .venv/bin/python -m infra.demo_release             # back to the good state
"""

from __future__ import annotations

import argparse
import asyncio

from infra.demo_config import APP_URL, demo_secrets, ship


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broken", action="store_true", help="ship a broken release")
    args = parser.parse_args()
    current = asyncio.run(ship(demo_secrets()["VERCEL_TOKEN"], args.broken))
    state = "broken" if args.broken else "healthy"
    print(f"production of web now serves {current} ({state}); {APP_URL}/health shows it")


if __name__ == "__main__":
    main()
