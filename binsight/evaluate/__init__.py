"""Evaluation: scoring a saved model on a split, the metrics, the groups the evaluate stage logs, and the
HTML report."""
