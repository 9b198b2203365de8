"""Training and evaluation of the reference Mask R-CNN: a plain PyTorch loop with
seeded determinism, checkpoints with exact resume, and data-parallel training under
``torchrun`` (DDP: gloo on CPU, nccl on GPU).

Exact resume: the batch of iteration ``i`` is a pure function of (seed, i), and a
checkpoint holds the model, optimizer, schedule and RNG state, so a run stopped at a
checkpoint and resumed computes the same weights as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ..data import collate_fn
from ..eval import coco_evaluate


@dataclasses.dataclass
class TrainConfig:
    iterations: int = 1200
    batch_size: int = 4  # images per process and iteration
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup: int = 100  # linear warm-up iterations
    decay_at: tuple[float, ...] = (0.75, 0.9)  # fractions of the run where lr drops 10x
    checkpoint_every: int = 200
    seed: int = 0


def learning_rate_factor(config: TrainConfig, iteration: int) -> float:
    warm = min(1.0, (iteration + 1) / config.warmup) if config.warmup > 0 else 1.0
    drops = sum(iteration >= f * config.iterations for f in config.decay_at)
    return warm * 0.1**drops


def batch_indices(config: TrainConfig, iteration: int, size: int, rank: int = 0, world: int = 1) -> list[int]:
    """This process's images of iteration ``iteration``: consecutive slices of a
    permutation of the data set drawn per epoch from (seed, epoch)."""
    per_iteration = config.batch_size * world
    start = (iteration * per_iteration + rank * config.batch_size)
    out = []
    for position in range(start, start + config.batch_size):
        epoch, offset = divmod(position, size)
        order = torch.randperm(size, generator=torch.Generator().manual_seed(config.seed * 1_000_003 + epoch))
        out.append(int(order[offset]))
    return out


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def train(
    model: nn.Module,
    dataset,
    config: TrainConfig,
    checkpoint: str | Path | None = None,
    progress: bool = False,
    device: str | torch.device = "cpu",
    until: int | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` (a torchvision detection model) on ``dataset`` (image, target)
    pairs for ``config.iterations`` iterations; returns the per-iteration losses.

    With ``checkpoint``, state is saved there every ``config.checkpoint_every``
    iterations and at the end, and a run finds and resumes it. Under torchrun (a
    process group initialised), each process trains on its slice of every batch and
    DistributedDataParallel keeps the replicas equal. ``until`` stops after that many
    iterations (saving a checkpoint there), as an interruption would.
    """
    rank, world = _world()
    torch.manual_seed(config.seed * 7919 + rank)  # RPN/RoI sampling draws from this
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: learning_rate_factor(config, i))
    start, log = 0, []
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.exists():
        state = torch.load(path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["rng"][rank] if world > 1 else state["rng"])
        start, log = state["iteration"], state["log"]
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model

    def save(iteration: int) -> None:
        rng = torch.get_rng_state()
        if world > 1:
            states = [None] * world
            dist.all_gather_object(states, rng)
            rng = states
        if rank == 0 and path is not None:
            state = dict(model=_unwrap(net).state_dict(), optimizer=optimizer.state_dict(),
                         schedule=schedule.state_dict(), rng=rng, iteration=iteration, log=log)
            tmp = path.with_suffix(".tmp")
            torch.save(state, tmp)
            os.replace(tmp, path)  # a crash mid-write leaves the previous checkpoint

    end = config.iterations if until is None else min(until, config.iterations)
    bar = range(start, end)
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(bar, initial=start, total=config.iterations, desc="train", leave=False)
    for iteration in bar:
        images, targets = collate_fn([dataset[i] for i in batch_indices(config, iteration, len(dataset), rank, world)])
        images = [im.to(device) for im in images]
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        losses = net(images, targets)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        log.append({k: float(v.detach()) for k, v in losses.items()})
        if progress and rank == 0:
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        done = iteration + 1
        if path is not None and (done % config.checkpoint_every == 0 or done == end):
            save(done)
    if world > 1:
        # DDP broadcasts rank 0's buffers (BatchNorm statistics) before each forward;
        # do it once more so the replicas also agree after the last one.
        for buffer in _unwrap(net).buffers():
            dist.broadcast(buffer, 0)
    return log


@torch.no_grad()
def evaluate(model: nn.Module, dataset, batch_size: int = 8, device: str | torch.device = "cpu",
             progress: bool = False) -> dict[str, dict[str, float]]:
    """COCO box and mask AP (pycocotools) of ``model`` on ``dataset`` (a
    :class:`roiops.data.CocoInstances`)."""
    model = _unwrap(model).to(device).eval()
    chunks = range(0, len(dataset), batch_size)
    if progress:
        from tqdm import tqdm

        chunks = tqdm(chunks, desc="eval", leave=False)
    results = []
    for start in chunks:
        images, targets = collate_fn([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        outputs = model([im.to(device) for im in images])
        for target, output in zip(targets, outputs, strict=True):
            results.append((int(target["image_id"]), {k: v.cpu() for k, v in output.items()}))
    return coco_evaluate(dataset.coco, results, dataset.label_to_category)


def main(argv=None) -> None:
    """``python -m roiops.models.train`` (one process) or ``torchrun --nproc_per_node N
    -m roiops.models.train`` (data-parallel): train one model on a COCO-format folder
    and print its COCO AP on the validation folder."""
    import argparse

    from ..data import CocoInstances
    from . import mask_rcnn

    p = argparse.ArgumentParser(prog="python -m roiops.models.train", description=main.__doc__)
    p.add_argument("--data", type=Path, required=True, help="folder with train/ and val/ COCO-format subfolders")
    p.add_argument("--roi", default="roialign-avg", help="RoI layer (roiops.models.ROI_LAYERS)")
    p.add_argument("--variant", default="c4", choices=["c4", "fpn"])
    p.add_argument("--stride", type=int, default=16)
    p.add_argument("--iterations", type=int, default=TrainConfig.iterations)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size, help="images per process")
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", type=Path, default=None, help="save here, and resume from here if it exists")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("nccl" if str(args.device).startswith("cuda") else "gloo")
        if str(args.device).startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    train_set, val_set = CocoInstances(args.data / "train"), CocoInstances(args.data / "val")
    torch.manual_seed(args.seed)
    model = mask_rcnn(args.roi, num_classes=len(train_set.category_names) + 1, variant=args.variant,
                      stride=args.stride)
    config = TrainConfig(iterations=args.iterations, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    train(model, train_set, config, checkpoint=args.checkpoint, progress=True, device=args.device)
    if _world()[0] == 0:
        print(f"{args.roi} on {args.device} x {world}:", evaluate(model, val_set, device=args.device))
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
