"""Data: the ABID formats, class policies, the split, S3, download and listing, raw and training shards,
the streaming reader, image decoding and the datasets that feed a model. Imports only the top-level modules."""
