"""Training: the trainer, the densification strategy and its optimiser surgery, losses, frame samplers."""
