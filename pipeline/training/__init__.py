"""Training: the loop and its checkpoints, the distillation losses, the student, sparsity measurement,
and the Intel Neural Compressor adapter (the one module that imports neural_compressor)."""
