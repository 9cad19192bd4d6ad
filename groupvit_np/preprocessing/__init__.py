"""Inputs to the model: CLIP's BPE tokenizer, CLIP's image processor, and the processor that holds both."""
