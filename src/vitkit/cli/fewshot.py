"""Few-shot linear evaluation of a checkpoint's frozen features (paper Sec. 4.1).

For each shot count k, k images per class are drawn from the train split of --data (per seed), a
regularised least-squares classifier is fitted in closed form to {-1, 1} targets on their pre-logit
features (L2 penalty by leave-one-out error over the shots), and its top-1 accuracy on the val split is
reported as mean +- std over seeds. Features are cached per checkpoint and split under the vitkit cache.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `vitkit fewshot`."""
    parser.add_argument(
        "checkpoint", metavar="CKPT", help="run directory, checkpoint directory, weights file or hub id"
    )
    parser.add_argument("--data", metavar="PATH", required=True, help="dataset ('digits', ImageFolder, CIFAR)")
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10, 25], help="images per class (1 5 10 25)")
    parser.add_argument("--seeds", type=int, default=3, help="draws of the shots; mean and std over them (3)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    runtime = parser.add_argument_group("runtime")
    runtime.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    runtime.add_argument("--batch-size", type=int, default=256, help="images per forward pass (256)")
    runtime.add_argument("--cache-dir", help="feature cache (default ~/.cache/vitkit; env VITKIT_CACHE)")


def run(args: argparse.Namespace) -> int:
    """Evaluate and print a table (or JSON)."""
    from vitkit.analysis.fewshot import fewshot_evaluate

    report = fewshot_evaluate(
        args.checkpoint, args.data, args.shots, args.seeds, batch_size=args.batch_size, device=args.device,
        cache_dir=args.cache_dir,
    )  # fmt: skip
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.table())
    return 0
