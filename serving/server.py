"""HTTP server over an export directory (FastAPI + uvicorn).

    python -m serving.server --model EXPORT_DIR [--host 127.0.0.1] \\
        [--port 8000] [--reload-interval 5] [--max-body-bytes 1048576]

Endpoints (OpenAPI at /docs and /openapi.json):

    GET  /healthz
    GET  /v1/model
    POST /v1/recommend              {"user_id": ...} or {"history": [...]}
    GET  /v1/items/{item_id}/similar?k=10

Binds to loopback unless --host says otherwise. Newer export versions are
picked up while serving (serving.reload). Errors come back as
{"detail": ...}: 404 for unknown ids, 422 for invalid input, 413 for
bodies over the limit, 500 without internals for anything unexpected.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from serving.errors import (
    ServingError,
    UnknownItemError,
    UnknownUserError,
)
from serving.recommender import Recommendations
from serving.reload import ModelHolder

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 1 << 20
MAX_LIST_LENGTH = 10_000


# Request and response bodies.


class RangeFilter(BaseModel):
    """A numeric range; either end may be left out (ends included)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    min: float | None = None
    max: float | None = None


FilterValue = RangeFilter | list[str | float] | str


class RecommendRequest(BaseModel):
    """Exactly one of `user_id` and `history`."""

    model_config = ConfigDict(
        extra="forbid", allow_inf_nan=False, coerce_numbers_to_str=True
    )

    user_id: str | None = Field(None, description="a known user id")
    history: list[str] | None = Field(
        None,
        max_length=MAX_LIST_LENGTH,
        description="item ids of an anonymous session, any order",
    )
    k: int = Field(
        10, ge=1, strict=True, description="results wanted, at most max_k"
    )
    exclude: list[str] = Field(
        default_factory=list,
        max_length=MAX_LIST_LENGTH,
        description="item ids to leave out",
    )
    exclude_seen: bool = Field(
        True, description="leave out the user's training items"
    )
    filters: dict[str, FilterValue] | None = Field(
        None,
        description=(
            'metadata conditions, e.g. {"categories": ["Drama"], '
            '"year": {"min": 1990, "max": 1999}}'
        ),
    )
    diversity: float = Field(
        0.0, ge=0.0, le=1.0, description="MMR lambda; 0 = by similarity"
    )

    @model_validator(mode="after")
    def _one_query(self) -> RecommendRequest:
        if (self.user_id is None) == (self.history is None):
            raise ValueError("give exactly one of 'user_id' and 'history'")
        return self

    def plain_filters(self) -> dict[str, Any] | None:
        if self.filters is None:
            return None
        return {
            name: (
                value.model_dump(exclude_none=True)
                if isinstance(value, RangeFilter)
                else value
            )
            for name, value in self.filters.items()
        }


class ItemOut(BaseModel):
    item_id: str
    similarity: float = Field(description="cosine similarity (ranking)")
    score: float = Field(description="displayed score in [0, 1]")
    metadata: dict[str, Any]


class RecommendResponse(BaseModel):
    model_version: int
    score_kind: str = Field(description="'isotonic' or 'linear'")
    exact: bool = Field(description="exact search instead of the index")
    items: list[ItemOut]


class HealthResponse(BaseModel):
    status: str
    model_version: int


class ModelResponse(BaseModel):
    model_version: int
    versions_available: list[int]
    num_items: int
    embedding_dim: int
    max_k: int
    score_kind: str
    calibration_pairs: int
    filter_fields: dict[str, str]
    metrics: Any = None
    index: Any = None
    created: Any = None


class ErrorResponse(BaseModel):
    detail: Any


def _response(recs: Recommendations) -> RecommendResponse:
    return RecommendResponse(
        model_version=recs.model_version,
        score_kind=recs.score_kind,
        exact=recs.exact,
        items=[
            ItemOut(
                item_id=r.item_id,
                similarity=r.similarity,
                score=r.score,
                metadata=dict(r.metadata),
            )
            for r in recs.items
        ],
    )


# Request size limit.


class BodySizeLimit:
    """ASGI middleware answering 413 to bodies over `max_bytes`.

    Checks Content-Length first, then counts the streamed body (chunked
    uploads carry no length), buffering at most `max_bytes`.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await self._reject(send, 400, "invalid Content-Length")
                    return
                if length > self.max_bytes:
                    await self._too_large(send)
                    return

        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._too_large(send)
                return
            if not message.get("more_body", False):
                break

        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body)}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send) -> None:
        await self._reject(
            send,
            413,
            f"request body over {self.max_bytes} bytes; send fewer ids",
        )

    @staticmethod
    async def _reject(send, status: int, detail: str) -> None:
        payload = json.dumps({"detail": detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


# The application.


def create_app(
    holder: ModelHolder, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> FastAPI:
    """The FastAPI app serving `holder`'s current model.

    Args:
      holder: loaded model; its poll thread runs while the app does.
      max_body_bytes: largest request body accepted.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        holder.start()
        try:
            yield
        finally:
            holder.stop()

    app = FastAPI(
        title="Two-tower recommender",
        version="1",
        description="Top-k items from a two-tower retrieval model export.",
        lifespan=lifespan,
    )
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    errors = {
        404: {"model": ErrorResponse, "description": "unknown id"},
        422: {"model": ErrorResponse, "description": "invalid input"},
    }

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        # FastAPI's own handler echoes the input back, which fails on NaN
        # and can be large; where and what is enough to fix a request.
        return JSONResponse(
            {
                "detail": [
                    {"loc": list(e.get("loc", ())), "msg": e.get("msg", "")}
                    for e in exc.errors()
                ]
            },
            status_code=422,
        )

    @app.exception_handler(UnknownUserError)
    @app.exception_handler(UnknownItemError)
    async def _not_found(request: Request, exc: Exception):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(ServingError)
    async def _invalid(request: Request, exc: Exception):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        logger.exception("unhandled error on %s", request.url.path)
        return JSONResponse(
            {"detail": "internal error; the server log has the details"},
            status_code=500,
        )

    @app.get("/healthz", response_model=HealthResponse)
    def healthz() -> HealthResponse:
        return HealthResponse(status="ok", model_version=holder.current.version)

    @app.get("/v1/model", response_model=ModelResponse)
    def model_info() -> ModelResponse:
        from serving import export_dir

        rec = holder.current
        meta = rec.metadata
        return ModelResponse(
            model_version=rec.version,
            versions_available=export_dir.list_versions(holder.path),
            num_items=rec.num_items,
            embedding_dim=int(rec.item_embeddings.shape[1]),
            max_k=rec.max_k,
            score_kind=rec.score_kind,
            calibration_pairs=rec.calibration.num_pairs,
            filter_fields={n: f.kind for n, f in rec.catalogue.fields.items()},
            metrics=meta.get("metrics"),
            index=meta.get("index"),
            created=meta.get("created_at", meta.get("created")),
        )

    @app.post(
        "/v1/recommend", response_model=RecommendResponse, responses=errors
    )
    def recommend(body: RecommendRequest) -> RecommendResponse:
        rec = holder.current
        if body.user_id is not None:
            recs = rec.recommend(
                body.user_id,
                k=body.k,
                exclude_seen=body.exclude_seen,
                exclude=body.exclude,
                filters=body.plain_filters(),
                diversity=body.diversity,
            )
        else:
            recs = rec.recommend_for_history(
                body.history,
                k=body.k,
                exclude=body.exclude,
                filters=body.plain_filters(),
                diversity=body.diversity,
            )
        return _response(recs)

    @app.get(
        "/v1/items/{item_id:path}/similar",
        response_model=RecommendResponse,
        responses=errors,
    )
    def similar(
        item_id: str, k: int = Query(10, ge=1, description="at most max_k")
    ) -> RecommendResponse:
        return _response(holder.current.similar_items(item_id, k=k))

    return app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m serving.server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="EXPORT_DIR")
    parser.add_argument(
        "--version", type=int, help="serve this version only (no reload)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--reload-interval",
        type=float,
        default=5.0,
        help="seconds between checks for a newer version; 0 disables",
    )
    parser.add_argument(
        "--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES
    )
    parser.add_argument("--log-level", default="info")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        holder = ModelHolder(
            args.model, args.version, poll_interval_s=args.reload_interval
        )
    except (ServingError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    import uvicorn

    app = create_app(holder, max_body_bytes=args.max_body_bytes)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
