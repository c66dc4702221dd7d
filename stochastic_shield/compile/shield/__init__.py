"""Shield operators compiled into the model: Monte Carlo dropout driven by a counter-based RNG."""
