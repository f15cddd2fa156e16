"""Stage 2: offline step-wise PPO and the SFT baseline (losses, adapters, trainer, export)."""
