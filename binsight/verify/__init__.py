"""From a count to a decision: calibrated probabilities, count sets with a coverage guarantee, and the
accept/review verdict for an expected quantity. Fitted on the val split by the evaluate stage, stored in the
model file, used by evaluate, predict, verify and serve. Imports binsight.model and the top-level modules."""
