"""Pack a dataset into webdataset tar shards with an index (`vitkit data pack`), and check them (`verify`).

    vitkit data pack FOLDER --out SHARDS_DIR [--shard-size 512MB] [--split train val] [--seed 0]
    vitkit data verify SHARDS_DIR [--decode]

FOLDER is an ImageFolder (with or without train/ and val/) or a CIFAR-10/100 python folder or .tar.gz. Train,
fine-tune, pre-train and evaluate on the result with `--data SHARDS_DIR` (or an fsspec URL of a copy of it).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `pack` and `verify` sub-commands."""
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    pack = sub.add_parser("pack", help="an ImageFolder or CIFAR files to tar shards + index (original bytes)")
    pack.add_argument("folder", metavar="FOLDER", help="ImageFolder directory, or CIFAR-10/100 python folder/.tar.gz")
    pack.add_argument("--out", required=True, metavar="SHARDS_DIR", help="directory to write the shards and index to")
    pack.add_argument("--shard-size", default="512MB", help="target bytes per shard: 512MB, 1GiB, ... (default 512MB)")
    pack.add_argument(
        "--split", nargs="+", default=["train", "val"], choices=["train", "val"], help="splits to pack (default both)"
    )
    pack.add_argument("--overwrite", action="store_true", help="replace shards already in SHARDS_DIR")
    split = pack.add_argument_group("splitting")
    split.add_argument("--seed", type=int, default=0, help="seed of the one shuffle of the training split (and split)")
    split.add_argument(
        "--val-fraction", type=float, default=0.1, help="held-out share of a folder without train/ and val/ (0.1)"
    )
    verify = sub.add_parser("verify", help="check every shard's size, sha256 and samples against the index")
    verify.add_argument("shards", metavar="SHARDS_DIR", help="a packed directory, or an fsspec URL of one")
    verify.add_argument("--decode", action="store_true", help="also decode every image and list those that fail")


def run(args: argparse.Namespace) -> int:
    """Pack or verify; verify exits 1 when a shard does not match its index."""
    if args.data_command == "pack":
        return run_pack(args)
    return run_verify(args)


def run_pack(args: argparse.Namespace) -> int:
    """Pack and say what was written."""
    from vitkit.data.shards.pack import pack

    index = pack(
        args.folder, args.out, shard_size=args.shard_size, splits=args.split, seed=args.seed,
        val_fraction=args.val_fraction, overwrite=args.overwrite,
    )  # fmt: skip
    for name, split in index.splits.items():
        size = sum(s.bytes for s in split.shards)
        left_out = f", {len(split.skipped)} file(s) left out (listed in the index)" if split.skipped else ""
        print(f"{name}: {split.samples} samples in {len(split.shards)} shard(s), {size / 1e6:.1f} MB{left_out}")
    print(f"{len(index.class_names)} classes; index {args.out}/vitkit-shards.json; train with --data {args.out}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    """Verify and print one line per split, then every problem."""
    from vitkit.data.shards.verify import verify

    report = verify(args.shards, decode=args.decode)
    for split, samples in report.samples.items():
        print(f"{split}: {samples} samples in {report.shards[split]} shard(s)")
    for problem in report.problems:
        print(f"problem: {problem}")
    for sample in report.undecodable:
        print(f"undecodable (replaced by the next sample when training): {sample}")
    print("ok: every shard matches the index" if report.ok else f"{len(report.problems)} problem(s) found")
    return 0 if report.ok else 1
