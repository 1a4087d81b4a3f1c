"""Railway deploy provider: the deployments of one service in one environment, over Railway's
public GraphQL API (`POST https://backboard.railway.com/graphql/v2`).

Sources: https://docs.railway.com/integrations/api (endpoint, tokens, rate limits),
https://docs.railway.com/integrations/api/manage-deployments (operations, statuses),
https://docs.railway.com/integrations/api/graphql-overview (Relay pagination),
https://docs.railway.com/guides/deployment-actions (rollback, redeploy, restart) and the
introspected schema the Railway CLI ships (`src/gql/schema.json` in railwayapp/cli), which is
authoritative where the docs' examples differ from it.

Operations, all sent with `Authorization: Bearer <token>` (an account or team token; project
tokens use `Project-Access-Token` and are not supported here):

- `deployments(input: {serviceId, environmentId[, status: {in: [...]}]}, first, after)`: a
  Relay connection, newest first: `edges { node { id status createdAt url staticUrl canRollback
  meta } }`, `pageInfo { hasNextPage endCursor }`. `meta` is a JSON scalar holding
  `commitHash`, `commitMessage`, `image`, ... History follows `endCursor` as `after`; the active
  deployment is the newest with status SUCCESS (or SLEEPING), asked for with `status.in`.
- `deployment(id)`: one deployment, to check the rollback target (`canRollback`, its service and
  environment).
- `deploymentRollback(id): Boolean!`: roll back to an older deployment. Railway does this by
  creating a new deployment from the old one's image and variables; when it is SUCCESS the one
  it replaces becomes REMOVED. The docs' examples select `{ id status }` on it; the schema says
  `Boolean!`, which is what is sent.
- `deploymentRedeploy(id, usePreviousImageTag: true): Deployment!`: "roll forward" to a newer
  deployment (a new deployment with the same code and configuration).
- `deploymentRestart(id): Boolean!`: restart the active deployment without rebuilding.

Errors: a GraphQL error comes back as HTTP 200 `{"errors": [{"message": ...}]}`. "Not
Authorized" (what Railway says for a bad token, and for ids the token cannot see) and "... not
found" are final; any other GraphQL error is retried. Every non-2xx answer goes through
`error_for_status`; a 429 waits `Retry-After` seconds (Railway sends it once the window is used
up, with `X-RateLimit-Limit`/`-Remaining`/`-Reset`).

Where the docs are silent, this module chooses:

- States: SUCCESS and SLEEPING are `ready` (a sleeping service still serves: it wakes on a
  request); FAILED, CRASHED `failed`; REMOVED and REMOVING `removed`; BUILDING, DEPLOYING,
  INITIALIZING, QUEUED, WAITING, NEEDS_APPROVAL `building`; SKIPPED `canceled`.
- A REMOVED deployment is `good` only when Railway says `canRollback: true`: Railway removes
  crashed deployments too, and the status alone cannot tell them from ones that served well.
- How Railway marks the deployment a rollback creates is not documented. A deployment "is" the
  release `to` when it is `to`, or is newer than `to`, has the same source (`meta.commitHash`,
  else `meta.image`) and a `meta.reason` that is absent, "rollback" or "redeploy". A
  deployment with `meta.reason == "rollback"` that served marks the release that served before
  it as rolled back away from (`good=False`).
- Railway takes no idempotency key. `rollback` does nothing when `to` already serves or a
  deployment of it is still building; `restart` cannot tell a retry from a second restart.
- The roll forward sends `usePreviousImageTag: true` (in the schema, not described in the
  docs) so the newer release's built image is deployed again rather than rebuilt.
- The active deployment is asked for with `status: {in: [SUCCESS, SLEEPING]}` as the schema's
  `DeploymentStatusInput` has it; the docs' example (`status: {successfulOnly: true}`) is not
  in the schema.
- Deployment URLs are reported as `https://<staticUrl or url>`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import httpx

from activities.config import RailwayDeploy
from activities.deploy.models import Deployment, DeployState, RollbackProgress
from activities.http.errors import ProviderError, error_for_status, unreachable

VENDOR = "Railway"
Json = Mapping[str, Any]

DEPLOYMENTS_QUERY = """
query deployments($input: DeploymentListInput!, $first: Int, $after: String) {
  deployments(input: $input, first: $first, after: $after) {
    edges {
      node { id status createdAt url staticUrl canRollback meta }
    }
    pageInfo { hasNextPage endCursor }
  }
}
"""

DEPLOYMENT_QUERY = """
query deployment($id: String!) {
  deployment(id: $id) {
    id status createdAt url staticUrl canRollback meta serviceId environmentId
  }
}
"""

ROLLBACK_MUTATION = """
mutation deploymentRollback($id: String!) {
  deploymentRollback(id: $id)
}
"""

REDEPLOY_MUTATION = """
mutation deploymentRedeploy($id: String!, $usePreviousImageTag: Boolean) {
  deploymentRedeploy(id: $id, usePreviousImageTag: $usePreviousImageTag) { id status }
}
"""

RESTART_MUTATION = """
mutation deploymentRestart($id: String!) {
  deploymentRestart(id: $id)
}
"""

_STATES: dict[str, DeployState] = {
    "SUCCESS": "ready",
    "SLEEPING": "ready",
    "FAILED": "failed",
    "CRASHED": "failed",
    "REMOVED": "removed",
    "REMOVING": "removed",
    "BUILDING": "building",
    "DEPLOYING": "building",
    "INITIALIZING": "building",
    "QUEUED": "building",
    "WAITING": "building",
    "NEEDS_APPROVAL": "building",
    "SKIPPED": "canceled",
}
ACTIVE = ("SUCCESS", "SLEEPING")
# Statuses of a deployment that once served.
SERVED = ("SUCCESS", "SLEEPING", "REMOVED", "REMOVING")
ENDED_BADLY = ("FAILED", "CRASHED", "SKIPPED")
_KNOWN_BAD: frozenset[DeployState] = frozenset({"failed", "canceled"})
_SAME_RELEASE_REASONS = (None, "rollback", "redeploy")
# How many of the newest deployments `rollback` and `rollback_progress` look at.
RECENT = 20

Source = tuple[str, str]


class _Page(NamedTuple):
    nodes: list[Json]
    has_next: bool
    end_cursor: str | None


class RailwayProvider:
    """A `DeployProvider` for one Railway service in one environment."""

    def __init__(
        self,
        config: RailwayDeploy,
        token: str,
        client: httpx.AsyncClient,
        *,
        page_size: int = 50,
    ) -> None:
        self._config = config
        self._client = client
        self._headers = {"Authorization": f"Bearer {token}"}
        self._page_size = max(1, min(page_size, 100))
        self._where = f"service {config.service_id} in environment {config.environment_id}"

    # -- DeployProvider ------------------------------------------------------------------

    async def current(self) -> Deployment:
        active = await self._active()
        if active is None:
            raise self._no_active()
        return _deployment(active, frozenset())

    async def history(self, limit: int) -> list[Deployment]:
        nodes = await self._list(limit)
        bad = _rolled_back_from(nodes)
        return [_deployment(node, bad) for node in nodes]

    async def rollback(self, to: Deployment, key: str) -> None:
        """Make `to` serve: `deploymentRollback` to an older deployment, else a redeploy.

        `key` is not sent (Railway takes none); a rollback already done or under way is not
        started again.
        """
        target = await self._target(to.id)
        source = _source(_meta(target)) or _commit_source(to)
        recent = (await self._page(RECENT, None)).nodes
        active = _newest_active(recent) or await self._active()
        if _serves(active, to, source) or _attempt(recent, active, to, source, _building):
            return
        if active is not None and _created(target) >= _created(active):
            await self._redeploy(to.id)
        elif target.get("canRollback") is True:
            await self._mutate(ROLLBACK_MUTATION, "deploymentRollback", to.id, "roll back to")
        else:
            raise self._cannot_roll_back(to)

    async def rollback_progress(self, to: Deployment) -> RollbackProgress:
        source = _commit_source(to) or _source(_meta(await self._target(to.id)))
        recent = (await self._page(RECENT, None)).nodes
        active = _newest_active(recent) or await self._active()
        serving = _id(active) if active is not None else "no deployment"
        if _serves(active, to, source):
            return RollbackProgress(state="succeeded", detail=f"Railway serves {serving}")
        attempt = _attempt(recent, active, to, source, _any)
        if attempt is None:
            detail = f"no deployment of {to.id} has started yet; Railway serves {serving}"
            return RollbackProgress(state="in_progress", detail=detail)
        status = _status(attempt)
        detail = f"Railway deployment {_id(attempt)} of {to.id} is {status}; {serving} serves"
        if status in ENDED_BADLY:
            return RollbackProgress(state="failed", detail=detail)
        return RollbackProgress(state="in_progress", detail=detail)

    async def restart(self, key: str) -> None:
        """Restart the active deployment in place (`key` is not sent: Railway takes none)."""
        active = await self._active()
        if active is None:
            raise self._no_active()
        await self._mutate(RESTART_MUTATION, "deploymentRestart", _id(active), "restart")

    # -- requests ------------------------------------------------------------------------

    async def _list(self, limit: int) -> list[Json]:
        nodes: list[Json] = []
        seen: set[str] = set()
        after: str | None = None
        while len(nodes) < limit:
            page = await self._page(min(self._page_size, limit - len(nodes)), after)
            fresh = [node for node in page.nodes if _id(node) not in seen]
            seen.update(_id(node) for node in fresh)
            nodes.extend(fresh)
            if not fresh or not page.has_next or page.end_cursor in (None, after):
                break
            after = page.end_cursor
        return sorted(nodes, key=_created, reverse=True)[:limit]

    async def _page(self, first: int, after: str | None, **scope: Any) -> _Page:
        variables = {"input": {**self._scope(), **scope}, "first": first, "after": after}
        what = f"list deployments of {self._where}"
        data = await self._graphql(DEPLOYMENTS_QUERY, variables, what)
        connection = data.get("deployments")
        if not isinstance(connection, Mapping) or not isinstance(connection.get("edges"), list):
            raise _unexpected(what, "no `deployments.edges` list")
        edges = [edge for edge in connection["edges"] if isinstance(edge, Mapping)]
        nodes = [edge["node"] for edge in edges if isinstance(edge.get("node"), Mapping)]
        info = connection.get("pageInfo")
        info = info if isinstance(info, Mapping) else {}
        cursor = info.get("endCursor")
        return _Page(nodes, info.get("hasNextPage") is True, str(cursor) if cursor else None)

    async def _active(self) -> Json | None:
        page = await self._page(1, None, status={"in": list(ACTIVE)})
        return _newest_active(page.nodes)

    async def _target(self, deployment_id: str) -> Json:
        what = f"read deployment {deployment_id} of {self._where}"
        data = await self._graphql(DEPLOYMENT_QUERY, {"id": deployment_id}, what)
        node = data.get("deployment")
        if not isinstance(node, Mapping):
            raise _unexpected(what, "no `deployment`")
        belongs = (node.get("serviceId"), node.get("environmentId"))
        if belongs != (self._config.service_id, self._config.environment_id):
            raise ProviderError(
                f"{VENDOR} deployment {deployment_id} belongs to service {belongs[0]} in "
                f"environment {belongs[1]}, not to the target's {self._where}",
                retryable=False,
            )
        return node

    async def _redeploy(self, deployment_id: str) -> None:
        what = f"redeploy {deployment_id} of {self._where}"
        variables = {"id": deployment_id, "usePreviousImageTag": True}
        data = await self._graphql(REDEPLOY_MUTATION, variables, what)
        if not isinstance(data.get("deploymentRedeploy"), Mapping):
            raise _unexpected(what, "no `deploymentRedeploy` deployment")

    async def _mutate(self, document: str, name: str, deployment_id: str, verb: str) -> None:
        what = f"{verb} deployment {deployment_id} of {self._where}"
        data = await self._graphql(document, {"id": deployment_id}, what)
        if data.get(name) is not True:
            raise ProviderError(f"{VENDOR} answered {data.get(name)!r} to {what}", retryable=True)

    async def _graphql(self, document: str, variables: Mapping[str, Any], what: str) -> Json:
        response = await self._post({"query": document, "variables": variables}, what)
        if not response.is_success:
            raise error_for_status(
                VENDOR,
                response.status_code,
                what,
                _error_text(response),
                retry_after=response.headers.get("Retry-After"),
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise ProviderError(f"{VENDOR} answered {what} with no JSON", retryable=True) from exc
        if not isinstance(body, Mapping):
            raise _unexpected(what, "the answer is not a JSON object")
        if body.get("errors"):
            raise self._graphql_error(body["errors"], what)
        data = body.get("data")
        if not isinstance(data, Mapping):
            raise _unexpected(what, "no `data`")
        return data

    async def _post(self, body: Mapping[str, Any], what: str) -> httpx.Response:
        try:
            return await self._client.post(
                self._config.api_url,
                json=body,
                headers=self._headers,
                timeout=self._config.timeout_seconds,
            )
        except httpx.TransportError as exc:
            raise unreachable(VENDOR, what, exc) from None

    def _scope(self) -> dict[str, str]:
        return {"serviceId": self._config.service_id, "environmentId": self._config.environment_id}

    # -- errors --------------------------------------------------------------------------

    def _graphql_error(self, errors: object, what: str) -> ProviderError:
        text = _messages(errors)
        lowered = text.lower()
        if "not authorized" in lowered or "unauthorized" in lowered:
            return ProviderError(
                f"{VENDOR} refused the token for {what}: {text}; check the token reference in "
                f"the target's [deploy] config: it must be an account or team token (sent as "
                f"`Authorization: Bearer`) that can see {self._where} (Railway also answers "
                f"this for ids the token cannot see)",
                status=401,
                retryable=False,
            )
        if "not found" in lowered:
            return ProviderError(
                f"{VENDOR} found nothing for {what}: {text}; check service_id "
                f"{self._config.service_id!r} and environment_id "
                f"{self._config.environment_id!r} in the target's [deploy] config",
                status=404,
                retryable=False,
            )
        return ProviderError(f"{VENDOR} failed to {what}: {text}", retryable=True)

    def _no_active(self) -> ProviderError:
        return ProviderError(
            f"{VENDOR} has no active (SUCCESS) deployment for {self._where}: nothing serves "
            f"to roll back from or restart",
            retryable=False,
        )

    def _cannot_roll_back(self, to: Deployment) -> ProviderError:
        return ProviderError(
            f"{VENDOR} cannot roll {self._where} back to {to.describe()}: the deployment has "
            f"canRollback false (older than the plan's retention, or it never served)",
            retryable=False,
        )


# -- response shapes -----------------------------------------------------------------------


def _messages(errors: object) -> str:
    if isinstance(errors, list):
        texts = [str(e.get("message")) for e in errors if isinstance(e, Mapping)]
        if texts:
            return "; ".join(texts)
    return str(errors)[:200]


def _error_text(response: httpx.Response) -> str:
    """The GraphQL error messages of a non-2xx answer, else its raw text."""
    try:
        body = response.json()
    except ValueError:
        return response.text
    if isinstance(body, Mapping) and body.get("errors"):
        return _messages(body["errors"])
    return response.text


def _id(node: Json) -> str:
    value = node.get("id")
    if not isinstance(value, str) or not value:
        raise _unexpected("read a deployment", "a deployment has no id")
    return value


def _status(node: Json) -> str:
    return str(node.get("status") or "UNKNOWN").upper()


def _meta(node: Json) -> Json:
    meta = node.get("meta")
    return meta if isinstance(meta, Mapping) else {}


def _text(meta: Json, key: str) -> str | None:
    value = meta.get(key)
    return value if isinstance(value, str) and value else None


def _created(node: Json) -> datetime:
    value = node.get("createdAt")
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise _unexpected("read a deployment", f"createdAt {value!r} is not a date") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _url(node: Json) -> str | None:
    host = node.get("staticUrl") or node.get("url")
    if not isinstance(host, str) or not host:
        return None
    return host if host.startswith(("https://", "http://")) else f"https://{host}"


def _deployment(node: Json, bad: frozenset[str]) -> Deployment:
    raw_state = _status(node)
    state = _STATES.get(raw_state, "unknown")
    meta = _meta(node)
    return Deployment(
        id=_id(node),
        created_at=_created(node),
        state=state,
        raw_state=raw_state,
        url=_url(node),
        commit=_text(meta, "commitHash"),
        message=_text(meta, "commitMessage"),
        good=_good(node, state, bad),
    )


def _good(node: Json, state: DeployState, bad: frozenset[str]) -> bool:
    if state in _KNOWN_BAD or _id(node) in bad:
        return False
    return node.get("canRollback") is True if state == "removed" else True


def _rolled_back_from(nodes: Sequence[Json]) -> frozenset[str]:
    """Releases that served when a (successful) rollback replaced them. Newest first."""
    bad: set[str] = set()
    for index, node in enumerate(nodes):
        if _meta(node).get("reason") != "rollback" or _status(node) not in SERVED:
            continue
        before = next((n for n in nodes[index + 1 :] if _status(n) in SERVED), None)
        if before is not None:
            bad.add(_id(before))
    return frozenset(bad)


def _newest_active(nodes: Sequence[Json]) -> Json | None:
    active = [node for node in nodes if _status(node) in ACTIVE]
    return max(active, key=_created) if active else None


def _source(meta: Json) -> Source | None:
    if commit := _text(meta, "commitHash"):
        return ("commit", commit)
    if image := _text(meta, "image"):
        return ("image", image)
    return None


def _commit_source(to: Deployment) -> Source | None:
    return ("commit", to.commit) if to.commit else None


def _is_release(node: Json, to: Deployment, source: Source | None) -> bool:
    """Whether `node` is `to`, or a deployment Railway made from it (rollback or redeploy)."""
    if _id(node) == to.id:
        return True
    if source is None or _created(node) <= to.created_at:
        return False
    meta = _meta(node)
    return meta.get("reason") in _SAME_RELEASE_REASONS and _source(meta) == source


def _serves(active: Json | None, to: Deployment, source: Source | None) -> bool:
    return active is not None and _is_release(active, to, source)


def _any(node: Json) -> bool:
    return True


def _building(node: Json) -> bool:
    return _STATES.get(_status(node)) == "building"


def _attempt(
    nodes: Sequence[Json],
    active: Json | None,
    to: Deployment,
    source: Source | None,
    accept: Callable[[Json], bool],
) -> Json | None:
    """The newest deployment of `to` made after the active one, if `accept` takes it."""
    since = _created(active) if active is not None else None
    for node in sorted(nodes, key=_created, reverse=True):
        if since is not None and _created(node) <= since:
            return None
        if _id(node) != to.id and _is_release(node, to, source):
            return node if accept(node) else None
    return None


def _unexpected(what: str, detail: str) -> ProviderError:
    return ProviderError(
        f"{VENDOR} answered an unexpected shape to {what}: {detail}", retryable=False
    )
