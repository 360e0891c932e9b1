"""Real parts for tests and benchmarks: a local S3 server, an ABID-shaped bucket, generated bins,
project copies driven by the real dvc CLI, a served model, a headless browser."""
