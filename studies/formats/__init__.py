"""Shard formats side by side (webdataset, litdata, mosaicml-streaming): docs/scale.md."""
