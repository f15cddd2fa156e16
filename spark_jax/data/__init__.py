"""Data: MMLU-Pro (reading, validation, the category-stratified train / held-out split, an optional
tensorflow-datasets builder), the Stage 2 Grain input pipeline and sequence packing."""
