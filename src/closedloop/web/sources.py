"""Management of sources and write keys: `/v1/sources` (admin token)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from closedloop import ingest
from closedloop.web.auth import AdminAuth
from closedloop.web.context import get_context

__all__ = ["router"]

router = APIRouter(prefix="/v1/sources", tags=["sources"])


class SourceOut(BaseModel):
    name: str
    kind: str
    key_hint: str = Field(description="The first characters of the write key, to tell keys apart.")
    enabled: bool
    created_at: datetime
    key_rotated_at: datetime | None

    @classmethod
    def of(cls, source: ingest.Source) -> SourceOut:
        return cls(
            name=source.name,
            kind=source.kind,
            key_hint=source.key_hint,
            enabled=source.enabled,
            created_at=source.created_at,
            key_rotated_at=source.key_rotated_at,
        )


class SourceWithKey(BaseModel):
    name: str
    kind: str
    write_key: str = Field(description="Shown once; only its hash is stored.")


class SourceIn(BaseModel):
    name: str = Field(max_length=64, examples=["web"])
    kind: str = Field(
        max_length=16, examples=["web"], description="web, app, server, pos, email or callcenter"
    )


class SourcePatch(BaseModel):
    enabled: bool


@router.get("", summary="List sources")
async def list_sources(request: Request, _auth: AdminAuth) -> list[SourceOut]:
    engine = get_context(request).engine
    return [SourceOut.of(s) for s in await run_in_threadpool(ingest.list_sources, engine)]


@router.post("", status_code=201, summary="Add a source; the answer holds its write key once")
async def add_source(request: Request, body: SourceIn, _auth: AdminAuth) -> SourceWithKey:
    engine = get_context(request).engine
    made = await run_in_threadpool(lambda: ingest.add_source(engine, body.name, kind=body.kind))
    return SourceWithKey(name=made.source.name, kind=made.source.kind, write_key=made.write_key)


@router.get("/{name}", summary="One source")
async def get_source(request: Request, name: str, _auth: AdminAuth) -> SourceOut:
    engine = get_context(request).engine
    return SourceOut.of(await run_in_threadpool(ingest.get_source, engine, name))


@router.patch("/{name}", summary="Enable or disable a source")
async def patch_source(
    request: Request, name: str, body: SourcePatch, _auth: AdminAuth
) -> SourceOut:
    engine = get_context(request).engine
    source = await run_in_threadpool(
        lambda: ingest.set_source_enabled(engine, name, enabled=body.enabled)
    )
    return SourceOut.of(source)


@router.post("/{name}/rotate", summary="Replace the write key; the answer holds the new one once")
async def rotate(request: Request, name: str, _auth: AdminAuth) -> SourceWithKey:
    engine = get_context(request).engine
    made = await run_in_threadpool(ingest.rotate_write_key, engine, name)
    return SourceWithKey(name=made.source.name, kind=made.source.kind, write_key=made.write_key)
