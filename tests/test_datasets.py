"""Images kept in memory give the very tensors that decoding every time gives, and their batch
augmentation only ever flips or turns a photo (never crops, so no item leaves the frame)."""

import torch

from binsight.data.image_datasets import BinImages, InMemoryBatches, InMemoryImages, augment_batch, eval_transform
from binsight.data.square_views import dihedral
from binsight.train.distributed import ShardSampler
from tests.support.bucket import REAL_SAMPLE

SIZE = 48


def rows():
    return [(p.stem, 1 + i % 5) for i, p in enumerate(sorted((REAL_SAMPLE / "bin-images").glob("*.jpg"))[:10])]


def test_in_memory_images_equal_decoded_ones():
    r, classes = rows(), [1, 2, 3, 4, 5]
    decoded = BinImages(r, REAL_SAMPLE / "bin-images", classes, eval_transform(SIZE), SIZE)
    cached = InMemoryImages(r, REAL_SAMPLE / "bin-images", classes, SIZE)
    for i in range(len(r)):
        (a, ya), (b, yb) = decoded[i], cached[i]
        assert torch.equal(a, b) and ya == yb


def test_batches_follow_the_sampler_and_only_flip():
    r = rows()
    cached = InMemoryImages(r, REAL_SAMPLE / "bin-images", [1, 2, 3, 4, 5], SIZE)
    sampler = ShardSampler(len(r), shuffle=True, seed=3)
    plain = list(InMemoryBatches(cached, 4, sampler))
    assert [len(y) for _, y in plain] == [4, 4, 2]
    order = list(sampler)
    assert torch.equal(torch.cat([y for _, y in plain]), cached.targets[order])
    torch.manual_seed(0)
    flipped = torch.cat([x for x, _ in InMemoryBatches(cached, 4, sampler, "flips")])
    originals = torch.stack([cached[i][0] for i in order])
    assert not torch.equal(flipped, originals)  # something was flipped
    for got, original in zip(flipped, originals):
        assert any(torch.equal(got, dihedral(original, k)) for k in (0, 2, 4, 6)), "not one of the 4 flips"


def test_dihedral_augmentation_uses_all_eight_views():
    x = torch.arange(16, dtype=torch.uint8).reshape(1, 1, 4, 4).repeat(200, 3, 1, 1)
    torch.manual_seed(1)
    out = augment_batch(x, "dihedral")
    assert len({tuple(o[0].flatten().tolist()) for o in out}) == 8
    assert torch.equal(augment_batch(x, "none"), x)
