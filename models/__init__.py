"""Neural network models: the person detector and the Re-ID-AR model."""
