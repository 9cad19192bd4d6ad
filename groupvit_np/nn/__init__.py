"""The math: GroupViT as pure functions of the checkpoint's parameter tree, on any Array API namespace.

Read top to bottom: `special` (erf) -> `ops` (dense layers, norms, activations) -> `attention` -> `grouping` (the
grouping block) -> `resize` -> `vision`, `text` (the towers) -> `heads` (projections, logits, loss, segmentation
logits) -> `functional` (the whole model). These modules import only `backend`, `config` and each other.
"""
