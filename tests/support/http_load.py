"""A bounded HTTP load generator for POST /predict: N requests at a fixed concurrency, latency percentiles.

    python -m tests.support.http_load http://127.0.0.1:8080 a.jpg b.jpg --requests 500 --concurrency 16
    python -m tests.support.http_load http://127.0.0.1:8080 a.jpg --batch 8    # multipart, 8 images each

Prints one JSON object: requests, ok, errors ({status or exception: count}), seconds,
requests_per_s, images_per_s, p50_ms, p90_ms, p99_ms, max_ms.
"""

import argparse
import asyncio
import json
import math
import time
from collections import Counter
from pathlib import Path

import httpx


def percentile(sorted_values, q):
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


def request_kwargs(images, i, batch):
    """Request i: one image as an image/jpeg|png body, or `batch` images as multipart."""

    def pick(j):
        return images[j % len(images)]

    if batch <= 1:
        name, data = pick(i)
        kind = "image/png" if name.lower().endswith(".png") else "image/jpeg"
        return {"content": data, "headers": {"Content-Type": kind}}
    return {"files": [("image", pick(i * batch + j)) for j in range(batch)]}


async def _load(url, images, requests, concurrency, batch, timeout):
    latencies, errors = [], Counter()
    next_index = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:

        async def worker():
            for i in next_index:
                start = time.perf_counter()
                try:
                    resp = await client.post("/predict", **request_kwargs(images, i, batch))
                    ok = resp.status_code == 200 and ("count" in resp.json() or "predictions" in resp.json())
                    if not ok:
                        errors[str(resp.status_code)] += 1
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] += 1
                    continue
                if ok:
                    latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    latencies.sort()
    ms = [v * 1000 for v in latencies]
    return {
        "requests": requests,
        "ok": len(latencies),
        "errors": dict(errors),
        "concurrency": concurrency,
        "batch": max(batch, 1),
        "seconds": round(seconds, 3),
        "requests_per_s": round(len(latencies) / seconds, 1) if seconds else 0.0,
        "images_per_s": round(len(latencies) * max(batch, 1) / seconds, 1) if seconds else 0.0,
        **{f"p{q}_ms": round(percentile(ms, q), 2) for q in (50, 90, 99)},
        "max_ms": round(ms[-1], 2) if ms else float("nan"),
    }


def run_load(url, images, requests=500, concurrency=16, batch=1, timeout=60.0):
    """`images`: [(filename, bytes)], cycled through. Returns the stats dict described above."""
    return asyncio.run(_load(url, images, requests, concurrency, batch, timeout))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="the server's base URL")
    parser.add_argument("images", nargs="+", help="JPEG or PNG files to send, cycled through")
    parser.add_argument("--requests", type=int, default=500, help="(default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (default: %(default)s)")
    parser.add_argument(
        "--batch", type=int, default=1, help="images per request; >1 sends multipart (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    images = [(Path(p).name, Path(p).read_bytes()) for p in args.images]
    print(json.dumps(run_load(args.url, images, args.requests, args.concurrency, args.batch)))


if __name__ == "__main__":
    main()
