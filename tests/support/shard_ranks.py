"""Run under torchrun (gloo): each rank streams two epochs of train shards and writes what it saw.

python -m torch.distributed.run --nproc_per_node 2 tests/support/shard_ranks.py SHARDS OUT BATCH WORKERS
"""

import json
import sys

import torch
import torch.distributed as dist

from binsight.data.shard_stream import ShardBatches, ShardSet, ShardStream, steps_per_epoch


def main(shards_dir, out, batch, workers):
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    shards = ShardSet(shards_dir)
    classes = sorted({c for e in shards.entries("train") for c in e["labels"]})
    steps = steps_per_epoch(shards.entries("train"), world, max(workers, 1), batch)
    stream = ShardStream(shards, "train", classes, rank, world, workers, shuffle=True, buffer=16, seed=3)
    batches = ShardBatches(stream, batch, torch.device("cpu"), workers, steps=steps, drop_last=True)
    seen = []
    for epoch in (0, 1):
        batches.set_epoch(epoch)
        n = 0
        for x, _ in batches:
            n += 1
            assert x.dtype == torch.float32 and x.shape[0] == batch
        seen.append({"steps": n, "positions": batches.order().tolist()})
        dist.barrier()
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump({"world": world, "epochs": seen}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
