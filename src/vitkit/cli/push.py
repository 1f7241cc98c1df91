"""Push a run or checkpoint to the Hugging Face hub, with a model card written from the run.

RUN_OR_CKPT is a run directory (its best checkpoint, with config.yaml, summary.json and curves.png beside it),
a checkpoint, a weights file or a hub id. --to vitkit (default) uploads vitkit's checkpoint, which
`vitkit.create_model(pretrained="hf-hub:OWNER/NAME")` and `vitkit predict hf-hub:OWNER/NAME` load; --to hf
uploads the transformers directory of `vitkit convert --to hf`, which transformers loads too. The token is
--token, else HF_TOKEN or the one `hf auth login` saved.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `vitkit push`."""
    parser.add_argument("source", metavar="RUN_OR_CKPT", help="run directory, checkpoint, weights file or hub id")
    parser.add_argument("repo_id", metavar="OWNER/NAME", help="hub repository to create or update")
    parser.add_argument(
        "--to", choices=("vitkit", "hf"), default="vitkit", help="vitkit checkpoint (default) | hf (transformers)"
    )
    hub = parser.add_argument_group("hub")
    hub.add_argument("--private", action="store_true", help="create the repository as private")
    hub.add_argument("--token", help="hub token with write access (default: HF_TOKEN or `hf auth login`'s)")


def run(args: argparse.Namespace) -> int:
    """Stage, write the card, upload; print the URL and the files."""
    from vitkit.export.push import push

    pushed = push(args.source, args.repo_id, to=args.to, private=args.private, token=args.token)
    print(f"pushed {args.source} to {pushed.url} ({args.to}): {', '.join(pushed.files)}")
    print(f"load it: vitkit predict hf-hub:{args.repo_id} IMAGE")
    return 0
