"""Training: the run (`fit`), the loops, the resumable checkpoint, DDP, the embeddings cache, profiling.
Imports binsight.data and binsight.model."""
