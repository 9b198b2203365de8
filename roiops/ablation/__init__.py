"""``python -m roiops.ablation``: the Mask R-CNN paper's RoI-layer ablation (Table 2c,
2d) reproduced with roiops' kernels on a synthetic COCO-format data set, or on any
COCO-format folder (``--data``). Needs the ``models`` extra."""
