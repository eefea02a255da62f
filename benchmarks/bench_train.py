"""One glyph epoch through `dml_core.train.train` vs a bare loop doing the same work; goal: ratio <= 1.1.

The bare loop is what a researcher would write by hand: same data, trunk, loss, miner, sampler, optimizer and
evaluation, with no config object, checkpoint dict, timing or callbacks. Both run one epoch (a full pass over the
training split) plus the evaluation on the test split; medians of --repeats runs, interleaved.

    python benchmarks/bench_train.py [--repeats 3] [--loss contrastive] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dml_core.data import load_dataset
from dml_core.losses import make_loss
from dml_core.metrics import retrieval_metrics
from dml_core.miners import make_miner
from dml_core.models import make_model
from dml_core.samplers import MPerClassSampler
from dml_core.config import DatasetConfig, TrainConfig
from dml_core.train import train


def bare_epoch(config: TrainConfig) -> float:
    """The same work as `train(config)` for one epoch, written as plainly as possible; returns recall@1."""
    torch.manual_seed(config.seed)
    split = load_dataset(config.dataset.name, **config.dataset.options)
    model = make_model(config.model.trunk, embedding_dim=config.model.embedding_dim,
                       in_channels=split.train.in_channels)
    loss_fn = make_loss(config.loss, num_classes=split.train.num_classes, embedding_dim=config.model.embedding_dim)
    miner = make_miner(config.miner)
    optimizer = torch.optim.Adam([{"params": model.parameters(), "lr": config.lr},
                                  {"params": loss_fn.parameters(), "lr": config.loss_lr or config.lr}])
    sampler = MPerClassSampler(split.train.labels, config.m_per_class, config.batch_size,
                               torch.Generator().manual_seed(config.seed))
    model.train()
    for indices in sampler:
        images, labels = split.train.get_batch(torch.as_tensor(indices))
        embeddings = model(images)
        loss = loss_fn(embeddings, labels, miner(embeddings.detach(), labels))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        order = torch.arange(len(split.test))
        embeddings = torch.cat([model(split.test.get_batch(order[i:i + config.eval_batch_size])[0])
                                for i in range(0, len(order), config.eval_batch_size)])
    return retrieval_metrics(embeddings, split.test.labels)["recall@1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loss", default="contrastive")
    parser.add_argument("--miner", default="none")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samples-per-face", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = TrainConfig(loss=args.loss, miner=args.miner, epochs=1,
                         dataset=DatasetConfig(options={"samples_per_face": args.samples_per_face}))
    load_dataset(config.dataset.name, **config.dataset.options)  # build the cache outside the timings
    ours, bare = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        summary = train(config)
        ours.append(time.perf_counter() - started)
        started = time.perf_counter()
        bare_r1 = bare_epoch(config)
        bare.append(time.perf_counter() - started)
    t_ours, t_bare = statistics.median(ours), statistics.median(bare)
    print(f"one glyph epoch ({args.loss}, samples_per_face={args.samples_per_face}, {args.threads} thread(s)), "
          f"median of {args.repeats}:")
    print(f"  train():   {t_ours:7.2f} s   recall@1 {summary.last_metrics['recall@1']:.4f}")
    print(f"  bare loop: {t_bare:7.2f} s   recall@1 {bare_r1:.4f}")
    print(f"  ratio train/bare = {t_ours / t_bare:.3f} (goal <= 1.10)")


if __name__ == "__main__":
    main()
