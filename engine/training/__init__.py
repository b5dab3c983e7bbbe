"""Training: the trainer loop, devices and precision, torchrun (DDP / FSDP), and preparing a run."""
