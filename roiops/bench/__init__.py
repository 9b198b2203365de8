"""``python -m roiops.bench``: roiops against torchvision, ONNX Runtime, OpenVINO and its
pure-PyTorch reference, on the same inputs in one run.

It runs typical detection workloads (Faster/Mask R-CNN C4 and FPN heads, training and
inference, Fast R-CNN RoIPool; listed in ``roiops/bench/cases.py``) and edge cases, the
fused FPN multilevel op against one roiops call per level, and scaling with threads, RoI
count and channels; forward and forward+backward,
float32 and bfloat16, NCHW and channels_last, each glibc allocator setting in a process
of its own. Every timing is the median of repeats after a warm-up, with its spread;
bandwidths are compared with this run's own copy bandwidth. The report judges the speed
targets and is written as JSON, markdown and PNGs under ``benchmarks/results/``
(``--quick``: ``benchmarks/results/quick/``).

    python -m roiops.bench                  # the full run, about 20 minutes on 2 cores
    python -m roiops.bench --quick          # scaled-down cases, about 2 minutes
    python -m roiops.bench --cases box-50x84,multilevel --peers torchvision
    python -m roiops.bench --device cuda    # on a GPU (needs roiops built with CUDA)

Optional peers (torchvision, onnxruntime, openvino; onnx for the last two), tqdm for the
progress bar and matplotlib for the figures are imported only here; one that is missing
is skipped with a note. ``import roiops`` needs torch alone.
"""
