"""Helpers of tests/test_data_shards_distributed.py that run inside torchrun's processes (not a test module).

`python tests/shard_helpers.py SHARDS OUT_DIR BATCH SEED EPOCH START WORKERS`: this rank's batches of one epoch
of the packed train split, as the sample numbers the images spell, written to OUT_DIR/rank{RANK}.json.
`DyingSupervised`: the supervised objective, except that the process ends (as a kill would end it) on the
forward of step $SHARDS_TEST_DIE_AFTER + 1; without that variable it trains exactly as `supervised`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from vitkit.training.objectives import Supervised


class DyingSupervised(Supervised):
    """`supervised`, ending the process abruptly after $SHARDS_TEST_DIE_AFTER steps of this process."""

    calls = 0

    def forward(self, model, batch):  # noqa: D102 - see the class
        limit = int(os.environ.get("SHARDS_TEST_DIE_AFTER", "0"))
        DyingSupervised.calls += 1
        if limit and DyingSupervised.calls > limit:
            os._exit(17)
        return super().forward(model, batch)


def rank_batches() -> None:
    from vitkit.data import DataConfig, load_dataset, make_loader

    shards, out, batch, seed, epoch, start, workers = sys.argv[1:8]
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    train = load_dataset(DataConfig(path=shards, img_size=8, num_workers=int(workers))).train
    loader = make_loader(
        train, int(batch), shuffle=True, seed=int(seed), epoch=int(epoch), start_batch=int(start), drop_last=True,
        rank=rank, world_size=world, num_workers=int(workers),
    )  # fmt: skip
    batches = [(x[:, 0, 0, 0].long() + 256 * x[:, 1, 0, 0].long()).tolist() for x, _ in loader]
    Path(out, f"rank{rank}.json").write_text(json.dumps({"batches": batches, "len": len(loader)}))


if __name__ == "__main__":
    rank_batches()
