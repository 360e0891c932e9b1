"""Serving a trained model: the Predictor (image bytes -> count), `binsight predict` and `binsight serve`."""
