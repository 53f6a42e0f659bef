"""The baseline: a bare POST endpoint on the same stack (FastAPI on uvicorn, same options)."""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI, Request
from starlette.responses import Response

app = FastAPI()


@app.post("/v1/track")
async def bare(request: Request) -> Response:
    await request.body()
    return Response(b'{"success":true}', media_type="application/json")


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
