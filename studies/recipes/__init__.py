"""The recipe study on real bins, its bare-loop baseline and the from-scratch map: docs/results.md."""
