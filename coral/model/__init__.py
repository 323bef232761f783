"""The model box: base model loading, prompts, training data, adapter training, generation."""
