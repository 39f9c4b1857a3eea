"""A student built from a spec: its start, calibration, losses, training, scoring and use."""
