"""The safety envelope: one long-lived workflow per deployment that every runbook consults.

- One destructive remediation per target at a time, across all runbooks (a lease, taken
  after approval and released when the run ends; a run that died frees it after a TTL).
- Per target and runbook: a cooldown after each action and an hourly budget. Outside them
  nothing passes a gate unattended: a lead must approve, and is paged.
- A global kill switch: while paused no run acts; alerts are still taken and recorded. Pause
  and resume are decisions signed by the approval service (resume: its group only), verified
  here, and recorded in the envelope's audit with who and why.

Durable in Temporal; it continues as new when its history grows.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal, NoReturn

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities import known_keys
    from activities.decision_tokens import (
        DecisionClaims,
        TokenRefusedError,
        UnknownKeyError,
        verify,
    )
    from activities.safety import (
        CheckInResult,
        LeaseCheckIn,
        LeaseRelease,
        LeaseRequest,
        LeaseResult,
        PauseRequest,
        SafetyActivities,
        SafetyPolicy,
        SafetyQuery,
        SafetyStatus,
        SwitchRecord,
    )
    from workflows.approval_gate import KEYS_RETRY, REFUSALS_METRIC
    from workflows.key_reloads import KEY_RELOAD_PATCH, KeyReloads
    from workflows.policies import HEARTBEAT_TIMEOUT

HOUR = timedelta(hours=1)
AUDIT_KEPT = 100
SIGNED_SWITCH_PATCH = "signed-kill-switch-v1"
# Envelopes from before a pause being verified held back new leases.
PAUSE_FIRST_PATCH = "pause-before-leases-v1"
SwitchKind = Literal["pause", "resume"]


class Lease(BaseModel):
    holder: str
    runbook: str
    plan_id: str
    acquired_at: datetime
    expires_at: datetime


class ActionRecord(BaseModel):
    target: str
    runbook: str
    at: datetime
    cooldown_until: datetime
    # When its run released the lease (None while held, or if it expired instead).
    ended_at: datetime | None = None


class EnvelopeState(BaseModel):
    paused: bool = False
    paused_by: str = ""
    pause_reason: str = ""
    leases: dict[str, Lease] = Field(default_factory=dict)
    actions: list[ActionRecord] = Field(default_factory=list)
    # Who paused and resumed (or tried), newest last; the last AUDIT_KEPT entries.
    audit: list[SwitchRecord] = Field(default_factory=list)
    # Ids of signed switch decisions already used, until they expire.
    used_tokens: dict[str, datetime] = Field(default_factory=dict)


@workflow.defn(name="SafetyEnvelopeWorkflow")
class SafetyEnvelopeWorkflow:
    @workflow.init
    def __init__(self, state: EnvelopeState | None = None) -> None:
        self.state = state or EnvelopeState()
        # Keys and the resume group come from the worker's config (an activity), never from
        # the input: whoever could start this workflow could otherwise bring their own keys.
        self.policy: SafetyPolicy | None = None
        # Pauses received and still being verified (loading the keys is an activity): no
        # lease is granted meanwhile, so a pause sent before an acquire wins.
        self.pausing = 0
        # Reads of the keys again, for a switch signed with a key added since (a rotation).
        self.key_reloads = KeyReloads()

    @workflow.run
    async def run(self, state: EnvelopeState | None = None) -> None:
        await workflow.wait_condition(
            lambda: (
                workflow.info().is_continue_as_new_suggested() and workflow.all_handlers_finished()
            )
        )
        workflow.continue_as_new(self.state)

    def _prune(self) -> datetime:
        now = workflow.now()
        leases = self.state.leases.items()
        self.state.leases = {t: lease for t, lease in leases if lease.expires_at > now}
        self.state.actions = [a for a in self.state.actions if now - a.at < HOUR]
        return now

    @workflow.update
    def acquire(self, request: LeaseRequest) -> LeaseResult:
        now = self._prune()
        if self.state.paused:
            return LeaseResult(granted=False, reason=self._paused_reason())
        if self.pausing and workflow.patched(PAUSE_FIRST_PATCH):
            return LeaseResult(granted=False, reason="a pause is being recorded")
        ttl = request.limits.lease_ttl_seconds
        targets = [request.target, *(t for t in request.also if t != request.target)]
        for target in targets:
            lease = self.state.leases.get(target)
            if lease is not None and lease.holder != request.holder:
                return LeaseResult(
                    granted=False,
                    reason=f"{target} is being remediated by {lease.holder} ({lease.runbook})",
                )
        if request.target not in self.state.leases:
            self.state.actions.append(
                ActionRecord(
                    target=request.target,
                    runbook=request.runbook,
                    at=now,
                    cooldown_until=now + timedelta(seconds=request.limits.cooldown_seconds),
                )
            )
        for target in targets:
            self.state.leases.setdefault(
                target,
                Lease(
                    holder=request.holder,
                    runbook=request.runbook,
                    plan_id=request.plan_id,
                    acquired_at=now,
                    expires_at=now + timedelta(seconds=ttl),
                ),
            )
        return LeaseResult(granted=True, ttl_seconds=ttl)

    @workflow.update
    def check_in(self, request: LeaseCheckIn) -> CheckInResult:
        """A holder's leases last another TTL from now (one that expired and nobody took is
        taken again); the answer says whether the kill switch is on and what was lost."""
        now = self._prune()
        ttl = request.limits.lease_ttl_seconds
        lost: list[str] = []
        for target in request.targets:
            lease = self.state.leases.get(target)
            if lease is not None and lease.holder != request.holder:
                lost.append(f"{target} ({lease.holder})")
                continue
            expires = now + timedelta(seconds=ttl)
            if lease is None:
                lease = Lease(
                    holder=request.holder,
                    runbook=request.runbook,
                    plan_id=request.plan_id,
                    acquired_at=now,
                    expires_at=expires,
                )
            self.state.leases[target] = lease.model_copy(update={"expires_at": expires})
        paused = self.state.paused
        return CheckInResult(
            paused=paused,
            reason=self._paused_reason() if paused else "",
            lost=lost,
            ttl_seconds=ttl,
        )

    def _paused_reason(self) -> str:
        return f"paused by {self.state.paused_by}: {self.state.pause_reason}".rstrip(": ")

    @workflow.update
    def release(self, release: LeaseRelease) -> None:
        for target in [release.target, *release.also]:
            lease = self.state.leases.get(target)
            if lease is not None and lease.holder == release.holder:
                del self.state.leases[target]
                ours = [
                    a
                    for a in self.state.actions
                    if a.target == target and a.at == lease.acquired_at
                ]
                for action in ours:
                    action.ended_at = workflow.now()
                if not release.acted:
                    self.state.actions = [a for a in self.state.actions if a not in ours]

    # -- the kill switch: signed decisions, like a gate's ---------------------------------

    @workflow.update
    async def pause(self, request: PauseRequest) -> SafetyStatus:
        return await self._switch("pause", request)

    @pause.validator
    def _validate_pause(self, request: PauseRequest) -> None:
        self._validate("pause", request)

    @workflow.update
    async def resume(self, request: PauseRequest) -> SafetyStatus:
        return await self._switch("resume", request)

    @resume.validator
    def _validate_resume(self, request: PauseRequest) -> None:
        self._validate("resume", request)

    def _validate(self, kind: SwitchKind, request: PauseRequest) -> None:
        """Before the Update enters history: unsigned, forged, replayed or unauthorized
        switches are refused here, logged and counted on the worker."""
        try:
            if not request.token:
                raise TokenRefusedError("unsigned (no token from the approval service)")
            if self.policy is not None:
                self._authorized(kind, request)
        except UnknownKeyError as err:
            # A key this worker lists, added since the envelope read its keys: the handler
            # reads them again. Any other key is refused here.
            if not known_keys.known(err.kid):
                self._refuse_unrecorded(kind, str(err))
            if not self.key_reloads.unknown_allowed():
                self._refuse_unrecorded(kind, f"{err}; keys were read again under a minute ago")
        except TokenRefusedError as err:
            self._refuse_unrecorded(kind, str(err))

    def _refuse_unrecorded(self, kind: SwitchKind, reason: str) -> NoReturn:
        workflow.logger.warning("refused %s of the kill switch: %s", kind, reason)
        workflow.metric_meter().create_counter(
            REFUSALS_METRIC, "decisions refused before they reached a run's history"
        ).add(1, {"kind": kind})
        raise ApplicationError(
            f"{kind} refused: {reason}", type="DecisionRefused", non_retryable=True
        )

    async def _switch(self, kind: SwitchKind, request: PauseRequest) -> SafetyStatus:
        if not workflow.patched(SIGNED_SWITCH_PATCH):
            return self._legacy_switch(kind, request)
        if self.policy is None:
            self.policy = await self._load_policy(kind)
        try:
            claims = await self._claims(kind, request)
        except TokenRefusedError as err:
            self._record("refused", request.by or "unknown", f"{kind}: {err}")
            raise ApplicationError(f"{kind} refused: {err}", type="DecisionRefused") from None
        self.state.used_tokens[claims.jti] = claims.expires_at
        if kind == "pause":
            self.state.paused, self.state.paused_by = True, claims.sub
            self.state.pause_reason = claims.reason
        else:
            self.state.paused, self.state.paused_by, self.state.pause_reason = False, "", ""
        self._record("paused" if kind == "pause" else "resumed", claims.sub, claims.reason)
        return self._status(None)

    async def _load_policy(self, kind: SwitchKind) -> SafetyPolicy:
        self.pausing += kind == "pause"
        try:
            policy = await workflow.execute_activity_method(
                SafetyActivities.safety_policy,
                start_to_close_timeout=timedelta(seconds=30),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=KEYS_RETRY,
            )
        finally:
            self.pausing -= kind == "pause"
        self.key_reloads.read()
        return policy

    async def _claims(self, kind: SwitchKind, request: PauseRequest) -> DecisionClaims:
        """`_authorized` with the keys and resume group as the worker's config lists them now:
        read again first unless read within a minute (workflows/key_reloads.py)."""
        unknown = ""
        try:
            claims = self._authorized(kind, request)
            if not workflow.patched(KEY_RELOAD_PATCH) or not self.key_reloads.due():
                return claims
        except UnknownKeyError as err:
            if not workflow.patched(KEY_RELOAD_PATCH):
                raise
            unknown = err.kid
        fresh = await self.key_reloads.reload(
            lambda: self._load_policy(kind), unknown=bool(unknown)
        )
        if fresh is not None:
            if unknown or fresh != self.policy:
                why = f"a {kind} named signing key {unknown!r}" if unknown else "due"
                self._record("keys_read", "engine", f"keys and resume group read again ({why})")
            self.policy = fresh
        return self._authorized(kind, request)

    def _authorized(self, kind: SwitchKind, request: PauseRequest) -> DecisionClaims:
        assert self.policy is not None
        claims = verify(
            request.token,
            self.policy.verify_keys,
            audience="safety",
            now=workflow.now(),
            max_age=timedelta(seconds=self.policy.max_decision_age_seconds),
        )
        if claims.kind != kind or claims.wid != workflow.info().workflow_id:
            raise TokenRefusedError(f"a {claims.kind} of {claims.wid}, not a {kind} of this switch")
        if claims.jti in self.state.used_tokens:
            raise TokenRefusedError(f"decision {claims.jti} was already used")
        if kind == "resume" and self.policy.resume_group not in claims.groups:
            raise TokenRefusedError(
                f"{claims.sub} is not in {self.policy.resume_group}, who may resume remediations"
            )
        return claims

    def _record(self, kind: str, by: str, reason: str) -> None:
        now = workflow.now()
        self.state.audit = [
            *self.state.audit[-(AUDIT_KEPT - 1) :],
            SwitchRecord(at=now, kind=kind, by=by, reason=reason),
        ]
        self.state.used_tokens = {j: exp for j, exp in self.state.used_tokens.items() if exp > now}

    def _legacy_switch(self, kind: SwitchKind, request: PauseRequest) -> SafetyStatus:
        """What envelopes did before switches were signed; only their replays come here."""
        if kind == "pause":
            self.state.paused, self.state.paused_by = True, request.by
            self.state.pause_reason = request.reason
        else:
            self.state.paused, self.state.paused_by, self.state.pause_reason = False, "", ""
        return self._status(None)

    @workflow.query
    def status(self, query: SafetyQuery) -> SafetyStatus:
        return self._status(query)

    @workflow.query
    def held_leases(self) -> dict[str, Lease]:
        """The leases held now, by target (for the service's metrics and operators)."""
        now = workflow.now()
        return {t: lease for t, lease in self.state.leases.items() if lease.expires_at > now}

    def _status(self, query: SafetyQuery | None) -> SafetyStatus:
        now = workflow.now()
        if query is not None and query.now is not None:
            now = max(now, query.now)
        status = SafetyStatus(
            paused=self.state.paused,
            paused_by=self.state.paused_by,
            pause_reason=self.state.pause_reason,
            audit=list(self.state.audit),
        )
        if query is None:
            return status
        lease = self.state.leases.get(query.target)
        mine = [
            a
            for a in self.state.actions
            if a.target == query.target and a.runbook == query.runbook and now - a.at < HOUR
        ]
        cooling = [a.cooldown_until for a in mine if a.cooldown_until > now]
        acted = [a.ended_at or a.at for a in self.state.actions if a.target == query.target]
        return status.model_copy(
            update={
                "holder": lease.holder if lease and lease.expires_at > now else None,
                "actions_last_hour": len(mine),
                "hourly_budget": query.limits.hourly_budget,
                "cooldown_until": max(cooling) if cooling else None,
                "last_action_at": max(acted) if acted else None,
            }
        )
