"""The local demo stack's shared settings: where its services listen, the per-machine demo
secrets, the environment the worker and the demo scripts need, and the releases of `web` the
Vercel fake serves.

The stack runner (`infra.stack`) and the demo scripts (`infra.demo_release`,
`infra.demo_backup`) import this module; none of them imports another.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

from activities import decision_tokens
from infra.fakes.platforms import VERCEL, Platform, Release

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".stack"
PG_PORT, APP_PORT, MOTO_PORT, TEMPORAL_PORT, UI_PORT, API_PORT = 55432, 8088, 5000, 7233, 8233, 8000
VERCEL_PORT = 8090
WORKER_METRICS_PORT = 9464
APP_URL = f"http://127.0.0.1:{APP_PORT}"
DEMO_SECRETS = (
    "PG_SUPERUSER_PASSWORD",
    "DEMO_APP_ADMIN_TOKEN",
    "REMEDIATE_APPROVAL_SIGNING_KEY",
    "ALERTMANAGER_TOKEN",
    "GRAFANA_WEBHOOK_SECRET",
    "PAGERDUTY_WEBHOOK_SECRET",
    "GENERIC_WEBHOOK_SECRET",
    "VERCEL_TOKEN",
)


def demo_secrets() -> dict[str, str]:
    """Per-machine demo secrets, generated once and kept in .stack/secrets."""
    path = STATE / "secrets"
    values = {}
    if path.exists():
        values = dict(line.split("=", 1) for line in path.read_text().splitlines() if line)
    for name in DEMO_SECRETS:
        values.setdefault(name, secrets.token_hex(16))
    if not _is_signing_key(values["REMEDIATE_APPROVAL_SIGNING_KEY"]):
        # The approval service's Ed25519 key (a stack from before signed decisions had an
        # HMAC key here).
        values["REMEDIATE_APPROVAL_SIGNING_KEY"] = decision_tokens.new_private_key_text()
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    path.chmod(0o600)
    return values


def worker_environment(values: dict[str, str] | None = None) -> dict[str, str]:
    """What the worker (and the demo scripts) need: the config, credential values for its
    references, and the local AWS emulator."""
    values = values or demo_secrets()
    password = values["PG_SUPERUSER_PASSWORD"]
    env = {
        "REMEDIATE_CONFIG": str(ROOT / "infra/config/example.toml"),
        "ORDERS_DB_DSN": f"postgresql://postgres:{password}@127.0.0.1:{PG_PORT}/orders",
        "DEMO_APP_ADMIN_TOKEN": values["DEMO_APP_ADMIN_TOKEN"],
        # Workers verify decisions; only the approval service can sign them.
        "REMEDIATE_APPROVAL_VERIFY_KEY": decision_tokens.public_text(
            decision_tokens.private_key(values["REMEDIATE_APPROVAL_SIGNING_KEY"])
        ),
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{MOTO_PORT}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    return env | {name: values[name] for name in DEMO_SECRETS[3:]}


def service_environment(values: dict[str, str] | None = None) -> dict[str, str]:
    """The approval service's: the worker's, and the private key it alone signs with."""
    values = values or demo_secrets()
    signing = {"REMEDIATE_APPROVAL_SIGNING_KEY": values["REMEDIATE_APPROVAL_SIGNING_KEY"]}
    return worker_environment(values) | signing


def _is_signing_key(text: str) -> bool:
    try:
        decision_tokens.private_key(text)
    except ValueError:
        return False
    return True


def demo_platform(token: str) -> Platform:
    """The Vercel fake as the stack runs it; the engine reads the token from VERCEL_TOKEN."""
    base = VERCEL.at(f"http://127.0.0.1:{VERCEL_PORT}")
    return Platform(base.name, base.module, "VERCEL_TOKEN", token, base.url)


async def ship(token: str, broken: bool) -> str:
    """Three good releases of `web`, the newest serving; `broken` ships a fourth, broken one.
    Returns the release production now serves."""
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
