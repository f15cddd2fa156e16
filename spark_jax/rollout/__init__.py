"""Stage 1: judged, rarity-first trajectories cut into step-wise (state, action, reward) records."""
