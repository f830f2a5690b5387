"""`lmbench-generate`: sample text from a trained model of any family.

    lmbench-generate <run id> --prompt "the market" --tokens 40 --temperature 0.8 --top-k 50 --seed 1
    lmbench-generate <run id> --prompt "the market" --top-p 0.9      # nucleus sampling
    lmbench-generate <run id> --prompt "the market" --temperature 0  # greedy: the likeliest token each time
    lmbench-generate runs:/<run id>/model | models:/<name>/<version> | <run folder> | <model folder>

The prompt is cut by the model's own tokenizer and continued on its line; the output is the prompt
followed by the sampled tokens, detokenized (words joined by spaces and the end-of-sentence token
read as a line end; characters joined as they are; subword pieces joined by their tokenizer's
decoder, `▁the` read as " the"). The same seed gives the same text.
"""

from __future__ import annotations

import argparse
import sys

from lmbench import interrupts
from lmbench.errors import LmbenchError, exit_with
from lmbench.models.base import check_sampling
from lmbench.training.native import quiet_tensorflow_import

PROG = "lmbench-generate"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "model", help="run id, runs:/<id>/model, models:/<name>/<version>, a run folder or a model folder"
    )
    parser.add_argument("--prompt", default=None, help="text to continue (default: start a new line)")
    parser.add_argument("-n", "--tokens", type=int, default=50, help="tokens to sample (default 50)")
    parser.add_argument(
        "--temperature", type=float, default=1.0, help=">= 0; below 1 sharper, above 1 flatter, 0 greedy"
    )
    parser.add_argument("--top-k", type=int, default=None, help="sample only among the k likeliest tokens")
    parser.add_argument(
        "--top-p", type=float, default=None, help="in (0, 1]: sample only among the fewest tokens holding mass p"
    )
    parser.add_argument("--seed", type=int, default=None, help="the same seed gives the same text")
    parser.add_argument("--samples", type=int, default=1, help="independent samples (seeds seed, seed+1, ...)")
    parser.add_argument("--tracking-uri", help="store (default: $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db)")
    args = parser.parse_args(argv)
    try:  # a bad value fails at once, before TensorFlow loads
        check_sampling(args.temperature, args.top_k, args.top_p)
        if args.tokens < 1:
            raise LmbenchError(f"the number of tokens to generate must be >= 1, got {args.tokens}")
    except LmbenchError as ex:
        exit_with(PROG, ex)

    quiet_tensorflow_import()
    from lmbench.artifacts.bundle import load_bundle

    interrupts.handle_signals()
    try:
        bundle = load_bundle(args.model, tracking_uri=args.tracking_uri)
        for i in range(max(1, args.samples)):
            seed = None if args.seed is None else args.seed + i
            text = bundle.generate_text(
                args.prompt, args.tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=seed
            )
            if args.samples > 1:
                print(f"--- sample {i + 1}" + ("" if seed is None else f" (seed {seed})"))
            print(text.rstrip("\n"))
    except LmbenchError as ex:
        exit_with(PROG, ex)
    except KeyboardInterrupt as ex:  # Ctrl-C or SIGTERM: no traceback
        interrupts.caught()
        print(f"\n{PROG}: {interrupts.said(ex)}", file=sys.stderr, flush=True)
        sys.exit(interrupts.exit_status(ex))


if __name__ == "__main__":
    main()
