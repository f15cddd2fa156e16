"""Data: MMLU-Pro, chat templates, and the Grain input pipeline."""
