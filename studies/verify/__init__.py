"""Which counting loss, with and without test-time views, makes the best verifier: docs/verify.md."""
