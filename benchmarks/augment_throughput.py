"""Image augmentation throughput, and the share of training-step time spent waiting for data.

On a SynthPedes dataset generated in a temporary folder, measures images/s (decode + transform)
through the plain training transform (resize + horizontal flip: the in-run baseline) and through
the recipe's augmentation (``data.augment``, the TBPS-CLIP pool in ``tbps-clip-small``), in a
single process and through a DataLoader with ``--workers`` workers. Then trains the recipe for
``--steps`` steps, with and without its augmentation, and reports ``data_wait_frac`` from the
run's metrics.jsonl (first ``--warmup`` steps left out). Target: at most 10% waiting.

    python benchmarks/augment_throughput.py [--recipe tbps-clip-small] [--steps 30] [--set key=value]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from torch.utils.data import DataLoader, Dataset

from tbpr.data.synthpedes import generate
from tbpr.data.transforms import build_image_transform, load_image
from tbpr.train import TrainConfig, load_config, train

log = logging.getLogger("augment_throughput")


class ImageFiles(Dataset):
    """Decodes and transforms image files."""

    def __init__(self, paths: list[Path], transform):
        self.paths = paths
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        return self.transform(load_image(self.paths[index]))


def images_per_s(data: ImageFiles, workers: int | None, batch: int) -> float:
    """Images/s iterating ``data`` in this process (``workers`` None) or through a DataLoader."""
    start = time.perf_counter()
    if workers is None:
        for i in range(len(data)):
            data[i]
    else:
        for _ in DataLoader(data, batch_size=batch, num_workers=workers):
            pass
    return len(data) / (time.perf_counter() - start)


def data_wait(cfg: TrainConfig, warmup: int) -> tuple[float, float]:
    """Train ``cfg``; (samples/s, step-time-weighted data_wait_frac) over the steps after ``warmup``."""
    train(cfg, resume=False)
    lines = (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()
    records = [r for r in map(json.loads, lines) if r["kind"] == "train" and r["step"] > warmup]
    seconds = [1.0 / r["samples_per_s"] for r in records]  # per sample, proportional to step time
    total = sum(seconds)
    return len(records) / total, sum(r["data_wait_frac"] * s for r, s in zip(records, seconds)) / total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--recipe", default="tbps-clip-small", help="training recipe (default: tbps-clip-small)"
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="config override key=value"
    )
    parser.add_argument("--size", default="small", help="SynthPedes size (default: small)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (default: 2)")
    parser.add_argument("--steps", type=int, default=30, help="training steps per run (default: 30)")
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out (default: 5)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("tbpr").setLevel(logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(root / "data", size=args.size, seed=0)

        def recipe(name: str, *extra: str) -> TrainConfig:
            return load_config(
                args.recipe,
                [
                    f"data.path={root / 'data'}",
                    f"output_dir={root / name}",
                    f"data.num_workers={args.workers}",
                    f"max_steps={args.steps}",
                    "log_every=1",
                    "eval_every=0",
                    *args.overrides,
                    *extra,
                ],
            )

        cfg = recipe("augmented")
        if not cfg.data.augment.ops:
            parser.error(f"recipe {args.recipe!r} has no data.augment.ops; add them with --set")
        d, size = cfg.data, tuple(cfg.model.image_size)
        transforms = {
            "plain": build_image_transform(size, d.mean, d.std, train=True, hflip=True),
            "augmented": build_image_transform(
                size, d.mean, d.std, train=True, hflip=d.hflip, augment=d.augment
            ),
        }
        paths = sorted(p for p in (root / "data" / "imgs").rglob("*") if p.is_file())
        log.info("%d images, size %s, augmentation %s", len(paths), size, d.augment)
        rows = []
        for label, workers in (("1 process", None), (f"loader x{args.workers}", args.workers)):
            speed = {
                k: images_per_s(ImageFiles(paths, t), workers, d.batch_size) for k, t in transforms.items()
            }
            rows.append((label, speed["plain"], speed["augmented"]))
        log.info("training %s for %d steps, with and without data.augment", args.recipe, args.steps)
        runs = {
            "augmented": data_wait(cfg, args.warmup),
            "no augment": data_wait(
                recipe("plain", "data.augment.ops=[]", "data.augment.mode=sequence"), args.warmup
            ),
        }

    print(f"\nImage transform throughput ({len(paths)} SynthPedes-{args.size} images, {size[0]}x{size[1]})")
    print(f"{'setting':<12} {'plain img/s':>12} {'augment img/s':>14} {'augment/plain':>14}")
    for label, plain, augmented in rows:
        print(f"{label:<12} {plain:>12.0f} {augmented:>14.0f} {augmented / plain:>13.2f}x")
    print(
        f"\nTraining {args.recipe}, {args.workers} workers, steps {args.warmup + 1}-{args.steps} (target <= 10% wait)"
    )
    print(f"{'run':<12} {'samples/s':>12} {'data wait':>14}")
    for label, (speed, wait) in runs.items():
        print(f"{label:<12} {speed:>12.1f} {100 * wait:>13.1f}%")


if __name__ == "__main__":
    main()
