"""The reference Mask R-CNN: roiops.MultiScaleRoIAlign is torchvision's pooler (values,
gradients, inside torchvision's MaskRCNN), every RoI layer trains through the model,
training resumes exactly and data-parallel replicas agree, and a few images overfit."""

import os
import socket
from collections import OrderedDict

import pytest
import torch

# The reference model, its data and training need the models extra.
for _extra in ("torchvision", "pycocotools", "tqdm", "PIL"):
    pytest.importorskip(_extra, reason=f"the reference model needs {_extra}: pip install roiops[models]")

import torchvision  # noqa: E402

import roiops  # noqa: E402
from roiops.models import ROI_LAYERS, mask_rcnn  # noqa: E402
from roiops.models.train import TrainConfig, batch_indices, evaluate, train  # noqa: E402
from roiops.testing import random_rois  # noqa: E402


def features(gen, names=("0", "1", "2", "3"), C=4, H=64, W=80):
    return OrderedDict((n, torch.randn(2, C, H >> i, W >> i, generator=gen, dtype=torch.float64))
                       for i, n in enumerate(names))


@pytest.mark.parametrize("names", [["0"], ["0", "1", "2", "3"], ["1", "2"]])
def test_multiscale_roi_align_is_torchvisions(names):
    gen = torch.Generator().manual_seed(0)
    feats = features(gen)
    image_shapes = [(256, 320), (240, 300)]
    boxes = [random_rois(n, 1, (240, 300), min_size=4, generator=gen, dtype=torch.float64)[:, 1:]
             for n in (13, 7)]
    ours = roiops.MultiScaleRoIAlign(names, (5, 4), 2)
    theirs = torchvision.ops.MultiScaleRoIAlign(names, (5, 4), 2)
    fa = OrderedDict((k, v.clone().requires_grad_()) for k, v in feats.items())
    fb = OrderedDict((k, v.clone().requires_grad_()) for k, v in feats.items())
    ba = [b.clone().requires_grad_() for b in boxes]
    out_a, out_b = ours(fa, ba, image_shapes), theirs(fb, boxes, image_shapes)
    torch.testing.assert_close(out_a, out_b, atol=1e-12, rtol=1e-12)
    g = torch.randn(out_a.shape, generator=gen, dtype=torch.float64)
    out_a.backward(g)
    out_b.backward(g)
    for k in names:
        torch.testing.assert_close(fa[k].grad, fb[k].grad, atol=1e-12, rtol=1e-12)
    assert all(b.grad is not None for b in ba)  # roiops adds box gradients


def test_inside_torchvisions_mask_rcnn_losses_and_gradients_match():
    """torchvision's own FPN Mask R-CNN with roiops' poolers assigned computes the
    same losses and gradients (same weights, same sampling seed)."""
    torch.manual_seed(0)
    backbone = torchvision.models.detection.backbone_utils.resnet_fpn_backbone(
        backbone_name="resnet18", weights=None, trainable_layers=5)
    model = torchvision.models.detection.MaskRCNN(backbone, 4, min_size=96, max_size=96).double()
    images = [torch.rand(3, 96, 96, dtype=torch.float64) for _ in range(2)]
    masks = torch.zeros(2, 96, 96, dtype=torch.uint8)
    masks[0, 10:50, 20:60] = 1
    masks[1, 40:90, 5:45] = 1
    targets = [dict(boxes=torch.tensor([[20.0, 10, 60, 50], [5, 40, 45, 90]], dtype=torch.float64),
                    labels=torch.tensor([1, 3]), masks=masks)] * 2

    def losses_and_grads():
        torch.manual_seed(1)
        model.zero_grad()
        losses = model(images, targets)
        sum(losses.values()).backward()
        return losses, [p.grad.clone() for p in model.parameters() if p.grad is not None]

    model.train()
    want, want_grads = losses_and_grads()
    heads = model.roi_heads
    heads.box_roi_pool = roiops.MultiScaleRoIAlign(heads.box_roi_pool.featmap_names, 7, 2)
    heads.mask_roi_pool = roiops.MultiScaleRoIAlign(heads.mask_roi_pool.featmap_names, 14, 2)
    got, got_grads = losses_and_grads()
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=1e-9, rtol=1e-9)
    for a, b in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=1e-7)


def toy_batch(n=2, size=128):
    gen = torch.Generator().manual_seed(3)
    images = [torch.rand(3, size, size, generator=gen) for _ in range(n)]
    targets = []
    for i in range(n):
        masks = torch.zeros(2, size, size, dtype=torch.uint8)
        masks[0, 10 + i:60, 12:50] = 1
        masks[1, 70:100, 60 + i:110] = 1
        targets.append(dict(boxes=torch.tensor([[12.0, 10 + i, 50, 60], [60 + i, 70, 110, 100]]),
                            labels=torch.tensor([1, 4]), masks=masks))
    return images, targets


@pytest.mark.parametrize("layer", sorted(ROI_LAYERS))
def test_every_roi_layer_trains_through_the_model(layer):
    torch.manual_seed(0)
    model = mask_rcnn(layer)
    images, targets = toy_batch()
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(3):
        losses = model(images, targets)
        assert all(torch.isfinite(v) for v in losses.values())
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    pool = model.roi_heads.box_roi_pool
    assert isinstance(pool, roiops.MultiScaleRoIAlign) and pool.options["op"] == ROI_LAYERS[layer].op
    model.eval()
    out = model(images[:1])[0]
    assert out["masks"].shape[1:] == (1, 128, 128)


@pytest.mark.parametrize("variant,stride", [("c4", 32), ("fpn", 16)])
def test_other_variants_train(variant, stride):
    torch.manual_seed(0)
    model = mask_rcnn("roialign-avg", variant=variant, stride=stride)
    images, targets = toy_batch()
    losses = model(images, targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())


class ToySet(torch.utils.data.Dataset):
    def __init__(self, n=6):
        self.images, self.targets = toy_batch(n)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], dict(self.targets[i], image_id=torch.tensor(i))


def test_batches_are_a_function_of_seed_and_iteration():
    config = TrainConfig(batch_size=4, seed=5)
    seen = [i for it in range(5) for i in batch_indices(config, it, 10)]
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))
    assert batch_indices(config, 3, 10) == batch_indices(config, 3, 10)
    halves = batch_indices(TrainConfig(batch_size=2, seed=5), 1, 10, rank=0, world=2) + batch_indices(
        TrainConfig(batch_size=2, seed=5), 1, 10, rank=1, world=2)
    assert halves == batch_indices(config, 1, 10)


def test_checkpoint_resume_is_exact(tmp_path):
    data = ToySet()
    config = TrainConfig(iterations=5, batch_size=2, checkpoint_every=2, warmup=2, seed=1)

    def fresh():
        torch.manual_seed(0)
        return mask_rcnn("roialign-avg")

    whole = fresh()
    train(whole, data, config)
    resumed = fresh()
    train(resumed, data, config, checkpoint=tmp_path / "c.pt", until=3)  # interrupted after 3
    # A new process would start from a new model: only the checkpoint carries over.
    resumed = fresh()
    train(resumed, data, config, checkpoint=tmp_path / "c.pt")
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def _ddp_worker(rank, world, port, path):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = mask_rcnn("roialign-avg")
    train(model, ToySet(), TrainConfig(iterations=3, batch_size=1, warmup=1, seed=2))
    torch.save(model.state_dict(), f"{path}/rank{rank}.pt")
    dist.destroy_process_group()


def test_two_gloo_processes_keep_equal_replicas(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2)
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    start = mask_rcnn("roialign-avg").state_dict()
    moved = False
    for k in a:
        assert torch.equal(a[k], b[k]), k
        moved |= not torch.equal(a[k], start[k])
    assert moved


@pytest.mark.slow
def test_a_few_images_overfit(tmp_path):
    """Eight synthetic images, 200 iterations: the loss more than halves and the
    training images' masks come back far above an untrained model's AP (about 0)."""
    from roiops.data import CocoInstances, make_synthetic_coco

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small ops: one thread is several times faster here
    try:
        data = CocoInstances(make_synthetic_coco(tmp_path, "train", 8, seed=3, progress=False))
        torch.manual_seed(0)
        model = mask_rcnn("roialign-avg", num_classes=len(data.category_names) + 1)
        log = train(model, data, TrainConfig(iterations=200, batch_size=4, warmup=20, lr=0.02, seed=0))
        ap = evaluate(model, data)
    finally:
        torch.set_num_threads(threads)
    first = sum(sum(x.values()) for x in log[:10]) / 10
    last = sum(sum(x.values()) for x in log[-10:]) / 10
    assert last < 0.5 * first
    assert ap["segm"]["AP50"] > 10 and ap["bbox"]["AP50"] > 15, ap
