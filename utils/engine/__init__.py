"""The training engine: the resolved configuration, the encoder and its blocks, the loop (Trainer), its run
directory and guard, the optimizer, the weight average, the kNN monitor, and the encoders it loads (a teacher, a
checkpoint to evaluate)."""
