"""Benchmark: the HTTP server's throughput and latency, single-image and batched requests.

Saves an untrained model of the chosen architecture (the weights do not change the cost), starts
`python -m binsight.serve.http_server` in a subprocess on 127.0.0.1, and sends photo-sized synthetic JPEGs
from this process over real HTTP. Prints requests/s, images/s and p50/p99 latency for:

  single, 1 at a time       one image per request, sequential: the latency floor
  single, concurrent        one image per request, --concurrency in flight (micro-batched)
  single, no micro-batching the same against a second server started with --max-batch 1
  batch                     --batch images per multipart request

    python -m bench.serve [--arch resnet18] [--image-size 224] [--requests 200] [--concurrency 16]
        [--batch 16]
"""

import argparse
import random
import tempfile
from pathlib import Path

import httpx

from tests.support.http_load import run_load
from tests.support.serving import Server, untrained_model
from tests.support.synthetic import draw_bin, jpeg_bytes


def photos(n, seed=0):
    """Bin-photo-sized JPEGs (ABID photos are about 300-800 px a side)."""
    rng = random.Random(seed)
    return [
        (f"bin{i}.jpg", jpeg_bytes(draw_bin(rng.randint(1, 5), (rng.randint(400, 640), rng.randint(300, 480)), rng)))
        for i in range(n)
    ]


def row(name, stats):
    return (
        f"  {name:<26} {stats['requests']:>5} {stats['batch']:>4} {stats['concurrency']:>5} "
        f"{stats['requests_per_s']:>8.1f} {stats['images_per_s']:>8.1f} {stats['p50_ms']:>8.1f} {stats['p99_ms']:>8.1f}"
        + (f"  errors {stats['errors']}" if stats["errors"] else "")
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet18", help="torchvision architecture (default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=224, help="model input size (default: %(default)s)")
    parser.add_argument(
        "--requests", type=int, default=200, help="single-image requests per run (default: %(default)s)"
    )
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=16, help="images per batched request (default: %(default)s)")
    parser.add_argument("--device", default=None, help="server device (default: the GPU when there is one)")
    args = parser.parse_args()

    images = photos(32)
    device = ["--device", args.device] if args.device else []
    with tempfile.TemporaryDirectory() as tmp:
        model = untrained_model(Path(tmp) / "model.pt", args.arch, args.image_size)
        results = []
        with Server(model, Path(tmp) / "server.log", "--no-access-log", *device) as server:
            run_load(server.url, images, requests=20, concurrency=4)  # warm-up: threads, allocator, caches
            results.append(("single, 1 at a time", run_load(server.url, images, args.requests, 1)))
            results.append(("single, concurrent", run_load(server.url, images, args.requests, args.concurrency)))
            batched = max(20, args.requests // args.batch)
            results.append(
                (f"batch of {args.batch}, 1 at a time", run_load(server.url, images, batched, 1, args.batch))
            )
            results.append((f"batch of {args.batch}, concurrent", run_load(server.url, images, batched, 4, args.batch)))
            health = httpx.get(f"{server.url}/health").json()
        with Server(model, Path(tmp) / "server1.log", "--no-access-log", "--max-batch", 1, *device) as server:
            run_load(server.url, images, requests=20, concurrency=4)
            results.append(("single, no micro-batching", run_load(server.url, images, args.requests, args.concurrency)))

    print(
        f"{args.arch} at {args.image_size} px on {health['device']}, {len(images)} distinct JPEGs of 400-640 px, "
        f"server and client on this machine"
    )
    print(f"  {'':<26} {'reqs':>5} {'imgs':>4} {'conc':>5} {'req/s':>8} {'img/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for name, stats in results:
        print(row(name, stats))


if __name__ == "__main__":
    main()
