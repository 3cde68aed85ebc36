"""What a trained network's outputs say: metrics, tables and figures, calibration of
its probabilities, and explanations (where it looks, its confident mistakes)."""
