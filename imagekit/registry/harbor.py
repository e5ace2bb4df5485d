"""Harbor's own REST API, for what the OCI API cannot do: project, tag immutability, retention,
robot accounts, Harbor's scanner. Channel moves never come here: they are OCI manifest PUTs.

Through PyPI `harborapi` (its async client, which keeps no cookies: Harbor checks CSRF tokens on
cookie sessions) with basic auth from the variables the profile names. Repository names are
URL-encoded twice in REST paths (`a/b` -> `a%252Fb`), as Harbor requires.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from harborapi import HarborAsyncClient
from harborapi.exceptions import HarborAPIException, StatusError
from harborapi.models import (
    Access,
    ImmutableRule,
    ImmutableSelector,
    ProjectMetadata,
    ProjectReq,
    RetentionPolicy,
    RetentionPolicyScope,
    RetentionRule,
    RetentionRuleTrigger,
    RetentionSelector,
    RobotCreate,
    RobotPermission,
)
from harborapi.utils import get_artifact_path

from imagekit.config import Profile
from imagekit.errors import InputError, ToolError

T = TypeVar("T")
VERSION_TAGS = "{[0-9]*,git-*}"
"""Versions start with a digit (processor.yaml's version pattern); git-<sha> is immutable too.
Channel tags must never match, or a rollback could not move them."""
VULNERABILITY_MIME = "application/vnd.security.vulnerability.report; version=1.1"
SEVERITIES = ("Critical", "High", "Medium", "Low", "Unknown")


def version_tag_matches(tag: str) -> bool:
    """What VERSION_TAGS matches, as Harbor's doublestar matcher reads it."""
    return bool(re.fullmatch(r"[0-9].*|git-.*", tag))


def immutability_rule(channels: list[str]) -> ImmutableRule:
    clashing = [c for c in channels if version_tag_matches(c)]
    if clashing:
        raise InputError(
            f"release.channels {', '.join(clashing)}: a channel name must not start with a digit or "
            "'git-' (those tags are made immutable in Harbor, and a channel must move)"
        )
    return ImmutableRule(
        disabled=False,
        action="immutable",
        template="immutable_template",
        tag_selectors=[ImmutableSelector(kind="doublestar", decoration="matches", pattern=VERSION_TAGS)],
        scope_selectors={
            "repository": [ImmutableSelector(kind="doublestar", decoration="repoMatches", pattern="**")]
        },
    )


def retention_policy(project_id: int, keep: int, channels: list[str]) -> RetentionPolicy:
    """Keep the `keep` most recently pushed versions, and whatever a channel points at, always."""
    if keep < 1:
        raise InputError(f"--keep must be at least 1, got {keep}")
    every_repository = {
        "repository": [RetentionSelector(kind="doublestar", decoration="repoMatches", pattern="**")]
    }
    return RetentionPolicy(
        algorithm="or",
        rules=[
            RetentionRule(
                disabled=False,
                action="retain",
                template="latestPushedK",
                params={"latestPushedK": keep},
                tag_selectors=[
                    RetentionSelector(kind="doublestar", decoration="matches", pattern=VERSION_TAGS)
                ],
                scope_selectors=every_repository,
            ),
            RetentionRule(
                disabled=False,
                action="retain",
                template="always",
                params={},
                tag_selectors=[
                    RetentionSelector(
                        kind="doublestar", decoration="matches", pattern="{" + ",".join(channels) + "}"
                    )
                ],
                scope_selectors=every_repository,
            ),
        ],
        trigger=RetentionRuleTrigger(kind="Schedule", settings={"cron": ""}),
        scope=RetentionPolicyScope(level="project", ref=project_id),
    )


@dataclass(frozen=True)
class RetentionPlan:
    policy_id: int
    execution: str
    tasks: list[dict[str, Any]]


def vulnerability_counts(body: Any) -> dict[str, int]:
    """Severity counts from Harbor's report: a JSON object keyed by report MIME type (the spec says a
    string; a string holding that JSON is accepted too)."""
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            body = None
    report = next(iter(body.values()), None) if isinstance(body, dict) and body else None
    if not isinstance(report, dict) or not isinstance(report.get("vulnerabilities"), list):
        raise ToolError(
            "Harbor returned no vulnerability report (not an object keyed by MIME type); scan first"
        )
    counts = dict.fromkeys(SEVERITIES, 0)
    for item in report["vulnerabilities"]:
        severity = str(item.get("severity", "Unknown")).capitalize()
        counts[severity if severity in counts else "Unknown"] += 1
    return counts


class Harbor:
    """The Harbor calls imagekit makes; each one a fresh client, so nothing is kept between calls."""

    def __init__(
        self,
        profile: Profile,
        *,
        env: Mapping[str, str] | None = None,
        api_url: str | None = None,
        on_request: Callable[[httpx.Request], None] | None = None,
    ) -> None:
        env = os.environ if env is None else env
        settings = profile.registry
        self.username = env.get(settings.username_env, "")
        self.secret = env.get(settings.password_env, "")
        if not (self.username and self.secret):
            raise InputError(
                f"Harbor {settings.url} needs credentials: "
                f"set {settings.username_env} and {settings.password_env}"
            )
        self.names = f"{settings.username_env}/{settings.password_env}"
        self.url = api_url or f"{'http' if settings.insecure else 'https'}://{settings.url}/api/v2.0"
        self.channels = profile.release.channels
        self.on_request = on_request

    def _run(self, what: str, work: Callable[[HarborAsyncClient], Awaitable[T]]) -> T:
        async def main() -> T:
            client = HarborAsyncClient(url=self.url, username=self.username, secret=self.secret, retry=None)
            if self.on_request is not None:
                hook = self.on_request

                async def record(request: httpx.Request) -> None:
                    hook(request)

                client.client.event_hooks["request"].append(record)
            try:
                return await work(client)
            except StatusError as exc:
                status = exc.status_code
                if status == 401:
                    raise InputError(
                        f"Harbor {self.url}: {what}: credentials in {self.names} refused"
                    ) from exc
                raise ToolError(f"Harbor {self.url}: {what}: HTTP {status}: {_first(exc)}") from exc
            except (HarborAPIException, httpx.HTTPError) as exc:
                raise ToolError(f"Harbor {self.url}: {what}: {type(exc).__name__}: {exc}") from exc
            finally:
                await client.client.aclose()

        return asyncio.run(main())

    def ensure_project(self, project: str) -> bool:
        """Create the (private) project if absent; True when it was created."""

        async def work(client: HarborAsyncClient) -> bool:
            if await client.project_exists(project):
                return False
            meta = ProjectMetadata(public="false", auto_scan="true")
            await client.create_project(ProjectReq(project_name=project, metadata=meta))
            return True

        return self._run(f"ensure project {project}", work)

    def ensure_immutability(self, project: str) -> bool:
        """Add the version-tags immutability rule unless the project has it; True when added."""
        rule = immutability_rule(self.channels)

        async def work(client: HarborAsyncClient) -> bool:
            for existing in await client.get_project_immutable_tag_rules(project):
                patterns = [s.pattern for s in existing.tag_selectors or []]
                if patterns == [VERSION_TAGS] and not existing.disabled:
                    return False
            await client.create_project_immutable_tag_rule(project, rule)
            return True

        return self._run(f"immutability rule of {project}", work)

    def set_retention(self, project: str, keep: int) -> int:
        """Create or update the project's retention policy; returns its id. Nothing runs yet."""

        async def work(client: HarborAsyncClient) -> int:
            found = await client.get_project(project)
            policy = retention_policy(int(found.project_id or 0), keep, self.channels)
            known = found.metadata.retention_id if found.metadata else None
            if known and str(known).isdigit():
                await client.update_retention_policy(int(known), policy)
                return int(known)
            location = await client.create_retention_policy(policy)
            created = location.rstrip("/").rsplit("/", 1)[-1]
            if not created.isdigit():
                raise ToolError(f"Harbor did not say the new retention policy's id (Location: {location!r})")
            return int(created)

        return self._run(f"retention policy of {project}", work)

    def run_retention(self, policy_id: int, *, dry_run: bool) -> RetentionPlan:
        """Run the policy; as a dry run, what it would delete is listed and nothing is deleted. The CLI
        runs it for real only after showing a dry run."""

        async def work(client: HarborAsyncClient) -> RetentionPlan:
            location = await client.start_retention_execution(policy_id, dry_run=dry_run)
            execution = location.rstrip("/").rsplit("/", 1)[-1]
            tasks = await client.get_retention_tasks(policy_id, int(execution)) if execution.isdigit() else []
            rows = [t.model_dump(include={"repository", "total", "retained", "status"}) for t in tasks]
            return RetentionPlan(policy_id, execution, rows)

        return self._run(f"retention {'dry run' if dry_run else 'run'} of policy {policy_id}", work)

    def create_robot(self, project: str, name: str, *, days: int = 365) -> tuple[str, str]:
        """A project robot that can push and pull; returns (name, secret): print it once, store it never."""
        access = [Access(resource="repository", action=action) for action in ("pull", "push")] + [
            Access(resource="artifact", action="read"),
            Access(resource="tag", action="create"),
        ]
        robot = RobotCreate(
            name=name,
            description="imagekit CI",
            level="project",
            duration=days,
            disable=False,
            permissions=[RobotPermission(kind="project", namespace=project, access=access)],
        )

        async def work(client: HarborAsyncClient) -> tuple[str, str]:
            created = await client.create_robot(robot)
            return str(created.name or name), str(created.secret or "")

        return self._run(f"robot account for {project}", work)

    def scan(self, project: str, repository: str, reference: str) -> None:
        """Ask Harbor's scanner to scan an artifact (it runs asynchronously in Harbor)."""

        async def work(client: HarborAsyncClient) -> None:
            await client.scan_artifact(project, repository, reference)

        self._run(f"scan {project}/{repository}:{reference}", work)

    def vulnerabilities(self, project: str, repository: str, reference: str) -> dict[str, int]:
        """Severity counts of Harbor's vulnerability report for an artifact."""

        async def work(client: HarborAsyncClient) -> Any:
            path = get_artifact_path(project, repository, reference) + "/additions/vulnerabilities"
            return await client.get(path, headers={"X-Accept-Vulnerabilities": VULNERABILITY_MIME})

        return vulnerability_counts(self._run(f"vulnerabilities of {project}/{repository}:{reference}", work))


def _first(exc: StatusError) -> str:
    errors = getattr(exc, "errors", None) or []
    return "; ".join(f"{getattr(e, 'code', '')}: {getattr(e, 'message', '')}" for e in errors[:2]) or str(exc)
