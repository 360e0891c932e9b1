"""Class policies and the shard data path on real bins: docs/policy.md."""
