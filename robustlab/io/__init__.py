"""What robustlab writes and reads: atomic writes, hashes, and safetensors checkpoints with fingerprints."""
