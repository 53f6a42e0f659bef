"""Mood rules: `/v1/mood/rules` (admin token)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from closedloop import mood
from closedloop.web._json import JSONOut
from closedloop.web.auth import AdminAuth
from closedloop.web.context import get_context

__all__ = ["router"]

router = APIRouter(prefix="/v1/mood", tags=["mood"])


def _out(found: mood.RuleSet) -> dict[str, Any]:
    return {
        "version": found.version,
        "created_at": found.created_at.isoformat() if found.created_at else None,
        **found.rules.model_dump(mode="json", exclude_none=True),
    }


@router.get("/rules", summary="The mood rules in force (version 0: the shipped defaults)")
async def get_rules(request: Request, _auth: AdminAuth) -> Response:
    engine = get_context(request).engine
    return JSONOut(_out(await run_in_threadpool(mood.current_rules, engine)))


@router.put("/rules", summary="Replace the mood rules with a new version")
async def put_rules(
    request: Request,
    _auth: AdminAuth,
    document: Annotated[
        dict[str, Any],
        Body(
            examples=[
                {
                    "rules": [
                        {
                            "name": "nps",
                            "label": "NPS answer",
                            "event": "NPS Answered",
                            "weight": 1.0,
                            "scale": {"property": "score", "points": [[0, -1], [10, 1]]},
                        }
                    ]
                }
            ]
        ),
    ],
) -> Response:
    engine = get_context(request).engine
    rules = mood.parse_rules(document)
    return JSONOut(_out(await run_in_threadpool(mood.store_rules, engine, rules)))
