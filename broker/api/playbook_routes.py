"""Containment playbooks over the API: list them, edit one (a new version), run one, rehearse one (a drill), and
read past runs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import Field

from broker.api.deps import CurrentIdentity, NowDep, SessionDep, StateDep
from broker.api.schemas import Body
from broker.errors import Forbidden
from broker.identity.identities import has_role
from broker.respond import playbooks, reports, runner
from broker.respond.playbooks import STEP_TEXT
from broker.vocabulary import Role

router = APIRouter(tags=["playbooks"])


class EditIn(Body):
    steps: list[str] = Field(min_length=1, max_length=20)
    description: str | None = Field(default=None, max_length=1000)


class RunIn(Body):
    site: str | None = None
    identity: str | None = None
    reason: str
    execute: bool = False


def _shown(playbook: playbooks.Playbook) -> dict[str, Any]:
    return {"name": playbook.name, "version": playbook.version, "description": playbook.description,
            "needs_site": playbook.needs_site, "needs_identity": playbook.needs_identity,
            "steps": [{"step": str(step), "text": STEP_TEXT[step]} for step in playbook.steps]}


@router.get("/playbooks")
def list_playbooks(_identity: CurrentIdentity, session: SessionDep) -> list[dict[str, Any]]:
    return [_shown(p) for p in playbooks.list_playbooks(session)]


@router.put("/playbooks/{name}")
def edit_playbook(name: str, body: EditIn, identity: CurrentIdentity, session: SessionDep,
                  now: NowDep) -> dict[str, Any]:
    """A new version of a playbook (the old ones stay, and the trail says who changed what): security and admins,
    signed in with a second factor — weakening a containment playbook is itself an attack."""
    runner.check_editor(session, now=now, person=identity, name=name)
    return _shown(playbooks.edit_playbook(session, now=now, actor=identity.username, name=name, steps=body.steps,
                                          description=body.description))


# The answer is returned as it is (response_model=None): a run can end a hundred sessions at once, and their
# ends, reported by the gateways, fill the thread pool that FastAPI would otherwise serialise this answer in.
@router.post("/playbooks/{name}/run", response_model=None)
def run_playbook(name: str, body: RunIn, identity: CurrentIdentity, session: SessionDep, now: NowDep,
                 state: StateDep) -> JSONResponse:
    playbook = playbooks.get_playbook(session, name)
    runner.check_authority(session, now=now, person=identity, playbook=playbook, site_name=body.site,
                           username=body.identity)
    return JSONResponse(runner.run(session, now=now, vault=state.vault, events=state.hub, actor=identity.username,
                                   playbook=playbook, site_name=body.site, username=body.identity,
                                   reason=body.reason, commit=session.commit).as_dict())


@router.post("/playbooks/{name}/drill")
def drill_playbook(name: str, body: RunIn, identity: CurrentIdentity, session: SessionDep, now: NowDep,
                   state: StateDep) -> dict[str, Any]:
    playbook = playbooks.get_playbook(session, name)
    runner.check_authority(session, now=now, person=identity, playbook=playbook, site_name=body.site,
                           username=body.identity)
    return runner.run(session, now=now, vault=state.vault, events=state.hub, actor=identity.username,
                      playbook=playbook, site_name=body.site, username=body.identity, reason=body.reason,
                      drill=True, execute=body.execute).as_dict()


@router.get("/playbooks/runs")
def past_runs(identity: CurrentIdentity, session: SessionDep) -> list[dict[str, Any]]:
    if not (has_role(identity, Role.SECURITY) or has_role(identity, Role.ADMIN)):
        raise Forbidden("only security reviewers and admins can read the playbook runs")
    return [summary.as_dict() for summary in reports.recent_runs(session)]
