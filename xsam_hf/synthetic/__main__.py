"""``python -m xsam_hf.synthetic --output DIR --seed S --train N --val M``: write the synthetic world."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from .writer import write_world


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m xsam_hf.synthetic",
                                     description="Write the synthetic world's data for every X-SAM task in the "
                                                 "official on-disk formats.")
    parser.add_argument("--output", required=True, help="folder to write (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same files (default 0)")
    parser.add_argument("--train", type=int, default=2000, help="training scenes (default 2000)")
    parser.add_argument("--val", type=int, default=200, help="validation scenes (default 200)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="processes rendering scenes; the files do not depend on it (default: up to 4 CPUs)")
    parser.add_argument("--dense-train-chat", action="store_true",
                        help="training chat records ask up to 12 questions instead of 3-4 (the default recipe's world)")
    parser.add_argument("--identify-train-chat", action="store_true",
                        help="training chat records end with up to 6 'What is <referring expression>?' questions")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    manifest = write_world(args.output, args.seed, args.train, args.val, workers=args.workers,
                           dense_train_chat=args.dense_train_chat, identify_train_chat=args.identify_train_chat)
    elapsed = time.perf_counter() - start
    counts = manifest["counts"]
    print(f"wrote {args.train} train + {args.val} val scenes to {args.output} in {elapsed:.1f} s "
          f"({counts['train']['objects'] + counts['val']['objects']} objects, "
          f"{counts['train']['referring_expressions'] + counts['val']['referring_expressions']} referring "
          f"expressions); manifest: {os.path.join(args.output, 'world.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
