"""Audio decoding, log-Mel features and the synthetic corpus (no TensorFlow: used by workers)."""
