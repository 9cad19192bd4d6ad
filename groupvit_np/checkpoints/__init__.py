"""Checkpoint files without torch: safetensors, torch zip pickles under an allow-list, NVlabs `.pth` conversion,
and loading any of them into a validated, HF-named state dict."""
