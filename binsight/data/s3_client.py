"""An S3 client for the ABID bucket: anonymous by default, any S3-compatible endpoint."""

import boto3
from botocore import UNSIGNED
from botocore.config import Config


def make_client(region="us-east-1", endpoint_url=None, anonymous=True, max_connections=32, retries=5):
    """A thread-safe boto3 S3 client. Transient errors (5xx, throttling, timeouts, connection resets)
    are retried by botocore's "standard" mode with exponential backoff and jitter."""
    config = Config(
        signature_version=UNSIGNED if anonymous else None,
        retries={"max_attempts": retries, "mode": "standard"},
        max_pool_connections=max_connections,
        connect_timeout=10,
        read_timeout=30,
        # Custom endpoints (MinIO, moto, an IP) rarely resolve virtual-host bucket names.
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    return boto3.session.Session().client("s3", region_name=region, endpoint_url=endpoint_url, config=config)
