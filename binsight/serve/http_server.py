"""HTTP server for the trained counter: what the notebook deployed as a SageMaker endpoint, without a cloud account.

    python -m binsight.serve.http_server --model models/model.pt --host 127.0.0.1 --port 8080

    curl -s --data-binary @bin.jpg -H 'Content-Type: image/jpeg' localhost:8080/predict
    curl -s -d '{"url": "s3://aft-vbi-pds/bin-images/00013.jpg"}' -H 'Content-Type: application/json' \\
        localhost:8080/predict
    curl -s -F image=@a.jpg -F image=@b.png localhost:8080/predict            # a batch
    curl -s localhost:8080/health ; curl -s localhost:8080/metadata

POST /predict takes an image/jpeg or image/png body, a JSON {"url": "s3://bucket/key"} (or
{"urls": [...]}), or multipart/form-data with one or more image files. One image answers
{"count", "probability", "probabilities": {"1": .., "5": ..}, "model"}; a batch answers
{"predictions": [...], "model"}. "model" is the first 12 hex digits of the model file's sha256. A calibrated
model (evaluate's models/model.pt) adds "count_set": the counts that hold the true one at its coverage.

POST /verify checks an expected quantity: image/jpeg or image/png with ?expected=N, JSON {"url": "s3://...",
"expected": N} (or {"checks": [{"url", "expected"}, ...]}), or multipart/form-data with image files and as
many `expected` fields. It answers {"verdict": "accept" | "review", "p_expected", "count_set", "reason",
"expected", "count", "probability", "model"} (a batch: {"verdicts": [...], "model"}); an expected quantity
that is not a whole number of items gets 400, an uncalibrated model 409.
Bad input gets a 4xx with {"error": "..."}: 400 undecodable or empty, 413 over --max-body-mb,
415 another content type. The model loads once at start; concurrent requests share forward
passes (micro-batching, at most --max-batch images each).
S3 URLs are read anonymously (the ABID bucket is public) from AWS, or from --s3-endpoint /
env AWS_ENDPOINT_URL (MinIO, moto), and only from the buckets --allow-bucket names (default: the
ABID bucket): any other gets 403. With --token (or env BINSIGHT_SERVE_TOKEN), /predict, /verify
and /metadata need `Authorization: Bearer <token>` (401 without it); /health stays open for probes
and says whether the model is loaded and the forward-pass worker is alive (503 when not).
"""

import argparse
import asyncio
import hmac
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import uvicorn
from botocore.exceptions import BotoCoreError, ClientError
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from binsight.data.s3_client import make_client
from binsight.errors import BadImage, check_device_name, one_line_errors, require_model_file
from binsight.verify.quantity_check import BadExpectation, parse_expected

IMAGE_TYPES = {"image/jpeg", "image/jpg", "image/png"}
ABID_BUCKET = "aft-vbi-pds"
TOKEN_ENV = "BINSIGHT_SERVE_TOKEN"
OPEN_PATHS = {"/health"}  # load balancers and probes ask without a token


class ApiError(Exception):
    """A request the server refuses: answered with `status` and {"error": message}."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status, self.message = status, message


class BodyTooLarge(ApiError):
    def __init__(self, limit):
        super().__init__(413, f"request body is larger than the {limit / 2**20:g} MB limit (--max-body-mb)")


@dataclass
class Settings:
    max_body: int = 10 * 2**20  # bytes
    max_files: int = 256  # images per multipart or {"urls": [...]} request
    s3_client: object = None  # a boto3 client, or None to refuse s3:// URLs
    allowed_buckets: frozenset = frozenset({ABID_BUCKET})  # s3:// URLs may only read these
    token: str | None = None  # bearer token every request but /health must carry; None = open
    metrics: dict = field(default_factory=dict)


def media_type(content_type):
    return (content_type or "").split(";")[0].strip().lower()


def parse_s3_url(url):
    """ "s3://bucket/key" -> (bucket, key); ApiError 400 for anything else."""
    parsed = urlparse(url) if isinstance(url, str) else None
    if not parsed or parsed.scheme != "s3" or not parsed.netloc or not parsed.path.strip("/"):
        raise ApiError(400, f"expected an s3://bucket/key URL, got {url!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def fetch_s3(client, url, max_bytes, allowed_buckets=frozenset({ABID_BUCKET})):
    """The bytes of an S3 object in an allowed bucket, refusing objects over `max_bytes`. Errors -> ApiError."""
    bucket, key = parse_s3_url(url)
    if client is None:
        raise ApiError(400, "s3:// URLs are turned off on this server")
    if bucket not in allowed_buckets:
        raise ApiError(
            403,
            f"bucket {bucket!r} is not allowed on this server (allowed: "
            f"{', '.join(sorted(allowed_buckets))}; see --allow-bucket)",
        )
    try:
        obj = client.get_object(Bucket=bucket, Key=key)
        if obj.get("ContentLength", 0) > max_bytes:
            obj["Body"].close()
            raise BodyTooLarge(max_bytes)
        return obj["Body"].read()
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in ("NoSuchKey", "NoSuchBucket", "404") or status == 404:
            raise ApiError(404, f"{url} not found") from None
        if code in ("AccessDenied", "403") or status == 403:
            raise ApiError(403, f"{url}: access denied") from None
        raise ApiError(502, f"{url}: S3 answered {code or status}") from None
    except BotoCoreError as exc:
        raise ApiError(502, f"{url}: S3 unreachable ({exc})") from None


class LimitBody:
    """ASGI middleware: 413 for a body over `max_bytes`, by its Content-Length before reading any
    of it, else while it streams in (chunked uploads)."""

    def __init__(self, app, max_bytes):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await error_response(BodyTooLarge(self.max_bytes))(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise BodyTooLarge(self.max_bytes)
            return message

        return await self.app(scope, limited, send)


def error_response(exc):
    return JSONResponse({"error": exc.message}, status_code=exc.status)


class RequireToken:
    """ASGI middleware: 401 for a request without `Authorization: Bearer <token>`, except on
    OPEN_PATHS. The comparison takes the same time whatever the guess."""

    def __init__(self, app, token):
        self.app, self.expected = app, f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"authorization", b"")
        if not hmac.compare_digest(given, self.expected):
            response = JSONResponse(
                {"error": "missing or wrong bearer token (Authorization: Bearer <token>)"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def register_error_handlers(app):
    """Every refusal and failure answers JSON {"error": ...} with its status."""

    @app.exception_handler(ApiError)
    async def api_error(request, exc):
        return error_response(exc)

    @app.exception_handler(BadImage)
    async def bad_image(request, exc):
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(request, exc):  # a bug, not bad input: still JSON (the traceback is logged)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)


async def predict_many(predictor, batcher, images):
    """Image bytes -> result dicts. Decoding runs in worker threads (PIL releases the GIL);
    forwards go through the micro-batching queue."""
    tensors = await asyncio.gather(
        *(run_in_threadpool(predictor.tensor, data) for data in images), return_exceptions=True
    )
    for i, t in enumerate(tensors):
        if isinstance(t, BaseException):
            if isinstance(t, BadImage) and len(images) > 1:
                raise BadImage(f"image {i + 1}: {t}")
            raise t
    return await asyncio.gather(*map(asyncio.wrap_future, batcher.submit(tensors)))


async def images_from_json(request, settings):
    """{"url": ...} -> ([bytes], None); {"urls": [...]} -> ([bytes, ...], urls)."""
    try:
        payload = json.loads(await request.body())
    except ValueError:
        raise ApiError(400, "body is not valid JSON") from None
    if isinstance(payload, dict) and isinstance(payload.get("url"), str):
        urls, names = [payload["url"]], None
    elif isinstance(payload, dict) and isinstance(payload.get("urls"), list) and payload["urls"]:
        urls = names = payload["urls"]
        if len(urls) > settings.max_files:
            raise ApiError(413, f"{len(urls)} URLs, more than the {settings.max_files} allowed (--max-files)")
    else:
        raise ApiError(400, 'expected {"url": "s3://bucket/key"} or {"urls": [...]}')
    images = await asyncio.gather(
        *(run_in_threadpool(fetch_s3, settings.s3_client, u, settings.max_body, settings.allowed_buckets) for u in urls)
    )
    return images, names


async def images_from_form(request, settings):
    """multipart/form-data -> ([bytes, ...], filenames): every file part, in order."""
    form = await request.form(max_files=settings.max_files)
    try:
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise ApiError(400, "no image files in the multipart body")
        return [await f.read() for f in files], [f.filename for f in files]
    finally:
        await form.close()


def expected_of(value, where):
    """A request's expected quantity -> an int, or 400 naming it (binsight.verify.quantity_check)."""
    try:
        return parse_expected(value)
    except BadExpectation as exc:
        raise ApiError(400, f"{where}: {exc}") from None


async def checks_from_json(request, settings):
    """{"url", "expected"} -> ([bytes], None, [expected]); {"checks": [{"url", "expected"}, ...]} -> a batch."""
    try:
        payload = json.loads(await request.body())
    except ValueError:
        raise ApiError(400, "body is not valid JSON") from None
    if isinstance(payload, dict) and isinstance(payload.get("checks"), list) and payload["checks"]:
        checks, batch = payload["checks"], True
        if len(checks) > settings.max_files:
            raise ApiError(413, f"{len(checks)} checks, more than the {settings.max_files} allowed (--max-files)")
    elif isinstance(payload, dict) and "url" in payload:
        checks, batch = [payload], False
    else:
        raise ApiError(400, 'expected {"url": "s3://bucket/key", "expected": N} or {"checks": [...]}')
    urls, expected = [], []
    for i, check in enumerate(checks):
        where = f"check {i + 1}" if batch else "body"
        if not isinstance(check, dict) or not isinstance(check.get("url"), str):
            raise ApiError(400, f'{where}: expected {{"url": "s3://bucket/key", "expected": N}}')
        urls.append(check["url"])
        expected.append(expected_of(check.get("expected"), f"{where} expected"))
    images = await asyncio.gather(
        *(run_in_threadpool(fetch_s3, settings.s3_client, u, settings.max_body, settings.allowed_buckets) for u in urls)
    )
    return images, urls if batch else None, expected


async def checks_from_form(request, settings):
    """multipart/form-data: image files and as many `expected` fields, in the same order."""
    form = await request.form(max_files=settings.max_files)
    try:
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        values = [v for k, v in form.multi_items() if k == "expected" and not isinstance(v, UploadFile)]
        if not files:
            raise ApiError(400, "no image files in the multipart body")
        if len(values) != len(files):
            raise ApiError(400, f"{len(files)} images and {len(values)} expected fields: send one expected per image")
        expected = [expected_of(v, f"expected {i + 1}") for i, v in enumerate(values)]
        return [await f.read() for f in files], [f.filename for f in files], expected
    finally:
        await form.close()


def create_app(predictor, batcher, settings):
    """The FastAPI app around a loaded Predictor and its BatchQueue."""
    app = FastAPI(
        title="binsight", description="Counts the items (1-5) in Amazon bin photos.", version=predictor.version
    )
    register_error_handlers(app)

    @app.post("/predict", response_model=None)  # the dict is the response as it is, not a model to validate
    async def predict(request: Request) -> dict[str, Any]:
        kind = media_type(request.headers.get("content-type"))
        if kind in IMAGE_TYPES:
            images, names = [await request.body()], None
        elif kind == "application/json":
            images, names = await images_from_json(request, settings)
        elif kind == "multipart/form-data":
            images, names = await images_from_form(request, settings)
        else:
            raise ApiError(
                415,
                f"Content-Type {kind or '(none)'} is not accepted: send image/jpeg, image/png, "
                'application/json {"url": "s3://..."} or multipart/form-data',
            )
        results = await predict_many(predictor, batcher, images)
        if names is None:  # one image: the seed endpoint's answer
            return {**results[0], "model": predictor.version}
        key = "url" if kind == "application/json" else "filename"
        return {"predictions": [{key: n, **r} for n, r in zip(names, results)], "model": predictor.version}

    @app.post("/verify", response_model=None)  # the dict is the response as it is, not a model to validate
    async def verify(request: Request) -> dict[str, Any]:
        if predictor.calibration is None:
            name = predictor.path.name
            raise ApiError(409, f"{name} is not calibrated: serve models/model.pt, which `dvc repro evaluate` writes")
        kind = media_type(request.headers.get("content-type"))
        if kind in IMAGE_TYPES:
            expected, names = [expected_of(request.query_params.get("expected"), "?expected=")], None
            images = [await request.body()]
        elif kind == "application/json":
            images, names, expected = await checks_from_json(request, settings)
        elif kind == "multipart/form-data":
            images, names, expected = await checks_from_form(request, settings)
        else:
            raise ApiError(
                415,
                f"Content-Type {kind or '(none)'} is not accepted: send image/jpeg or image/png with ?expected=N, "
                'application/json {"url": "s3://...", "expected": N} or multipart/form-data (image + expected)',
            )
        results = await predict_many(predictor, batcher, images)
        verdicts = [
            {**predictor.verdict(r, e), "count": r["count"], "probability": r["probability"]}
            for r, e in zip(results, expected)
        ]
        if names is None:
            return {**verdicts[0], "model": predictor.version}
        key = "url" if kind == "application/json" else "filename"
        return {"verdicts": [{key: n, **v} for n, v in zip(names, verdicts)], "model": predictor.version}

    @app.get("/health")
    async def health():
        loaded, working = predictor.model is not None, batcher.alive()
        body = {
            "status": "ok" if loaded and working else "unavailable",
            "model_loaded": loaded,
            "batch_worker_alive": working,
            "model": predictor.version,
            "device": str(predictor.device),
            "forward_passes": batcher.batches,
        }
        return JSONResponse(body, status_code=200 if loaded and working else 503)

    @app.get("/metadata")
    async def metadata():
        return {
            **predictor.metadata(),
            "metrics": settings.metrics,
            "serving": {
                "max_body_mb": settings.max_body / 2**20,
                "max_batch": batcher.max_batch,
                "max_files": settings.max_files,
            },
        }

    app.add_middleware(LimitBody, max_bytes=settings.max_body)
    if settings.token:
        app.add_middleware(RequireToken, token=settings.token)
    return app


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="binsight serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default="models/model.pt", help="a model file from the train stage (default: %(default)s)"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 for every interface (default: %(default)s)"
    )
    parser.add_argument("--port", type=int, default=8080, help="(default: %(default)s)")
    parser.add_argument(
        "--max-body-mb", type=float, default=10.0, help="larger request bodies get 413 (default: %(default)s)"
    )
    parser.add_argument("--max-files", type=int, default=256, help="images per batch request (default: %(default)s)")
    parser.add_argument(
        "--max-batch",
        type=int,
        default=32,
        help="images per forward pass across concurrent requests (default: %(default)s)",
    )
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=0.0,
        help="how long a forward pass waits for more requests to join it; 0 = take what is queued "
        "(default: %(default)s)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: the GPU when there is one)")
    parser.add_argument(
        "--tta",
        choices=("none", "flips", "dihedral"),
        default=None,
        help="test-time augmentation: average over flipped/rotated views (default: what the model "
        "file says, i.e. what evaluate used; each view costs one more forward pass)",
    )
    parser.add_argument(
        "--s3-endpoint",
        default=os.environ.get("AWS_ENDPOINT_URL"),
        help="S3-compatible endpoint for s3:// URLs (default: env AWS_ENDPOINT_URL, else AWS)",
    )
    parser.add_argument("--s3-region", default="us-east-1", help="(default: %(default)s)")
    parser.add_argument(
        "--s3-signed", action="store_true", help="sign S3 requests with the usual AWS credentials (default: anonymous)"
    )
    parser.add_argument(
        "--allow-bucket",
        action="append",
        default=None,
        metavar="BUCKET",
        help=f"a bucket s3:// URLs may read; repeat for more (default: {ABID_BUCKET}); others get 403",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV) or None,
        help=f"require `Authorization: Bearer TOKEN` on /predict and /metadata (default: env {TOKEN_ENV}; "
        "unset = no token); set it whenever --host is not 127.0.0.1",
    )
    parser.add_argument(
        "--dvc-lock",
        default="dvc.lock",
        help="/metadata shows the dvclive metrics that this lock file records for the model (default: %(default)s)",
    )
    parser.add_argument("--no-access-log", action="store_true", help="no log line per request")
    args = parser.parse_args(argv)
    for name in ("max_body_mb", "max_files", "max_batch"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.max_wait_ms < 0:
        parser.error("--max-wait-ms must be 0 or more")
    return args


def build(args):
    """-> (app, its forward-pass worker, the predictor) for parsed `args`: what `main` serves."""
    from binsight.serve.predictor import BatchQueue, Predictor, lock_metrics

    predictor = Predictor(args.model, args.device, tta=args.tta)
    batcher = BatchQueue(predictor.predict_tensors, args.max_batch, args.max_wait_ms / 1000)
    settings = Settings(
        max_body=int(args.max_body_mb * 2**20),
        max_files=args.max_files,
        s3_client=make_client(args.s3_region, args.s3_endpoint, anonymous=not args.s3_signed, retries=3),
        allowed_buckets=frozenset(args.allow_bucket or [ABID_BUCKET]),
        token=args.token,
        metrics=lock_metrics(args.model, args.dvc_lock),
    )
    return create_app(predictor, batcher, settings), batcher, predictor


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    check_device_name(args.device)
    require_model_file(args.model)
    # torch takes seconds to import: only now (in build), so --help and a wrong path answer at once
    app, batcher, predictor = build(args)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.token:
        print(
            f"serve: warning: listening on {args.host} without --token: anyone who reaches it can use it",
            file=sys.stderr,
            flush=True,
        )
    meta = predictor.metadata()
    print(
        f"serve: model {predictor.version} ({meta['arch']}, {meta['image_size']} px, counts {meta['classes']}) "
        f"on {predictor.device}",
        file=sys.stderr,
        flush=True,
    )
    try:
        uvicorn.run(app, host=args.host, port=args.port, access_log=not args.no_access_log, log_level="info")
    finally:
        batcher.close()


if __name__ == "__main__":
    main()
