"""Real parts for the tests: a local S3 server, an ABID-shaped bucket, a DVC project in a temp git repo."""
