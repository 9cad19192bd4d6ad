"""What the model is used for: zero-shot segmentation and classification, evaluation, label sets, pictures."""
