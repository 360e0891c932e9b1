"""Stage `featurize`: store the frozen backbone's pooled embeddings of every split image once.

    python -m stages.featurize        # what `dvc repro featurize` runs

Its params in dvc.yaml are only those that change the vectors (arch, weights, freeze_backbone,
image_size, augment, jpeg_draft, and seed: the init of a backbone without pretrained weights), so a
change of lr or batch_size reruns train and evaluate but never this stage. When the
backbone is fine-tuned or the images are augmented the features cannot be cached: the stage then
only writes data/features/meta.json saying so, and train reads images as before.
"""

import argparse
import time

from binsight.data.split_files import read_split
from binsight.errors import one_line_errors
from binsight.params import ModelParams, load_params, section, train_section
from binsight.train.feature_store import SPLITS, cacheable, feature_key, write_features, write_not_cached


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--split", default="data/split")
    parser.add_argument("--images", default="data/raw/images")
    parser.add_argument("--out", default="data/features")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default: %(default)s)")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    model_params, train_params = section(params, ModelParams), train_section(params)
    ok, why = cacheable(model_params, train_params)
    if not ok:
        write_not_cached(args.out, why)
        print(f"featurize: nothing to cache ({why}); train reads images")
        return
    rows = {split: read_split(args.split, split, args.images) for split in SPLITS}
    # torch takes seconds to import: only when there is something to compute
    from binsight.model.counting_model import model_from_params
    from binsight.train.embeddings import backbone_digest, compute_features
    from binsight.train.loops import amp_dtype, pick_device, seed_everything

    # The same seed and build as the train stage: a backbone without pretrained weights gets the
    # same random init there, and the digest in meta.json proves it.
    seed_everything(train_params.seed)
    classes = sorted({label for split in ("train", "val") for _, label in rows[split]})
    model = model_from_params(model_params, len(classes))
    device = pick_device()
    backbone = model.backbone.to(device)
    start = time.perf_counter()
    dtype = amp_dtype(train_params.amp, device, training=True)  # the precision the image path trains at
    arrays = {
        split: compute_features(
            backbone,
            rows[split],
            args.images,
            train_params.image_size,
            train_params.jpeg_draft,
            args.batch_size,
            train_params.num_workers,
            device,
            dtype,
        )
        for split in SPLITS
    }
    seconds = time.perf_counter() - start
    n = sum(len(r) for r in rows.values())
    meta = {
        "cached": True,
        **feature_key(model_params, train_params),
        "feature_dim": model.feature_dim,
        "backbone_sha256": backbone_digest(backbone),
        "splits": {s: len(r) for s, r in rows.items()},
    }
    write_features(args.out, meta, arrays, rows)
    print(
        f"featurize: {n} images -> {model.feature_dim}-d {model_params.arch} features at "
        f"{train_params.image_size} px in {seconds:.1f}s on {device} ({n / max(seconds, 1e-9):.0f} img/s) "
        f"-> {args.out}"
    )


if __name__ == "__main__":
    main()
