"""The approval service's side for benchmarks that start runs themselves: a fresh key pair
per run of the benchmark, and inputs with their requester signed, as the service starts them
(an unsigned start has an unverified requester, and nothing passes its gates unattended)."""

from __future__ import annotations

from activities import decision_tokens
from activities.config import load_config
from workers.signing import start_token
from workflows.models import RunbookInput

APPROVALS_TOML = (
    "[approvals]\n"
    'signing_key = { env = "BENCH_SIGNING_KEY" }\n'
    'verify_keys = [{ env = "BENCH_VERIFY_KEY" }]\n'
)


def key_env() -> dict[str, str]:
    private = decision_tokens.new_private_key_text()
    public = decision_tokens.public_text(decision_tokens.private_key(private))
    return {"BENCH_SIGNING_KEY": private, "BENCH_VERIFY_KEY": public}


def signed(params: RunbookInput, workflow_id: str) -> RunbookInput:
    """`params` with the requester signed (needs REMEDIATE_CONFIG and `key_env()` set)."""
    token = start_token(load_config(), workflow_id, params)
    return params.model_copy(update={"requester_token": token})
