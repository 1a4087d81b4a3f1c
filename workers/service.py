"""The intake and approval HTTP service: one ASGI app, stateless (all state is in Temporal).
This module only assembles it; each role's routes are in their own module:

    workers/intake_routes.py    POST /alerts/alertmanager | grafana | pagerduty | generic
    workers/approval_routes.py  GET /approvals, POST /approvals/{workflow_id}/approve|reject,
                                POST /runs/{workflow_id}/end-hold
    workers/run_routes.py       POST /runs (start a runbook as the caller)
    workers/report_routes.py    GET /runs/{workflow_id}/report, GET /stats (incident records,
                                the team's numbers)
    workers/safety_routes.py    POST /safety/pause | resume, GET /safety (the kill switch)
    workers/slack_routes.py     POST /slack/interactions
    workers/codec_routes.py     POST /codec/decode | encode (the Temporal UI's codec server)
    workers/session_routes.py   POST | DELETE | GET /session (a browser session cookie)
    workers/page_routes.py      GET /ui/gates | /ui/gates/{workflow_id} | /ui/runs |
                                /ui/runs/{workflow_id}, POST /ui/gates/{workflow_id}/decide
                                (the approval pages; page_views.py, templates/)
    workers/sign_in_routes.py   GET /ui/sign-in, /ui/oidc/login | callback (OpenID Connect),
                                POST /ui/sign-in/token, /ui/sign-out
    workers/health_routes.py    GET /healthz, GET /livez, GET /metrics (workers/metrics.py)

Shared per-app state (`Settings`, the Temporal client, the alert `Dispatcher`) is put on
`app.state` at start-up and read by the routes through `workers.http_common.temporal_client`
and `request.app.state`.

Run: `uvicorn workers.service:app` (or `remediate-service`), with REMEDIATE_CONFIG set.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from activities.config import load_config
from workers import (
    approval_routes,
    codec_routes,
    error_handlers,
    health_routes,
    intake_routes,
    logs,
    page_routes,
    report_routes,
    run_routes,
    safety_routes,
    session_routes,
    sign_in_routes,
    slack_routes,
)
from workers.body_limit import BodyLimit
from workers.dispatch import Dispatcher
from workers.exits import exit_now, fail
from workers.replay import DeliveryCache
from workers.settings import Settings, coalesce_policy, connect, load_settings
from workers.temporal_config import TemporalConfigError


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = Settings()
    load_config()  # a broken config stops start-up with its own message
    app.state.settings = settings
    app.state.client = await connect(settings)
    app.state.dispatcher = Dispatcher(
        app.state.client, settings.task_queue, coalesce_policy(settings)
    )
    yield
    await app.state.dispatcher.close()  # batched duplicates reach their runs before exit


def create_app() -> FastAPI:
    """The service's app: every router, in the order their routes were always matched;
    bodies bounded before anything reads them (`workers.body_limit`); errors as
    `{"error": "..."}` (`workers.error_handlers`)."""
    app = FastAPI(title="Remediation engine: intake and approvals", lifespan=lifespan)
    routers = (
        intake_routes,
        approval_routes,
        run_routes,
        report_routes,
        safety_routes,
        slack_routes,
        codec_routes,
        session_routes,
        page_routes,
        sign_in_routes,
    )
    for module in (*routers, health_routes):
        app.include_router(module.router)
    error_handlers.install(app)
    app.add_middleware(BodyLimit)
    # Per process, so only a hint (see `workers.replay`): a redelivery that reaches another
    # process or a restarted one attaches to its run as a duplicate, nothing worse.
    app.state.deliveries = DeliveryCache()
    return app


app = create_app()


def main() -> None:
    import uvicorn

    settings = load_settings()
    logs.configure(settings.log_format)
    try:  # Temporal's configuration first: a failure is one line saying what to fix
        asyncio.run(connect(settings))
    except TemporalConfigError as err:
        fail(str(err))
    uvicorn.run(app, host=settings.api_host, port=settings.api_port, log_config=None)
    exit_now(0)  # see workers/exits.py


if __name__ == "__main__":
    main()
