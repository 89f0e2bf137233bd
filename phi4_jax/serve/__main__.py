"""Serve a model over the OpenAI HTTP API (completions, chat completions, streaming).

PATH is a GGUF file, a Hugging Face checkpoint directory, or a training work dir (its newest
checkpoint, or --step); the tokenizer and chat template come with it. Requests are batched
into waves of up to --max_batch rows; more than --max_queue waiting requests get 429 with
Retry-After. SIGTERM (or Ctrl-C) stops accepting connections, finishes every accepted request,
and exits 0. Bind to 127.0.0.1 unless you mean to expose it (there is no authentication).
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Sequence

from phi4_jax import cli

PROG = "python -m phi4_jax.serve"
DTYPES = ("float32", "bfloat16", "float16")


def parse_args(argv: Sequence[str]):
    parser = cli.parser(PROG, __doc__, example=f"{PROG} --model=$(python -c 'from "
                        "phi4_jax.convert.gguf import smollm2_path; print(smollm2_path())')")
    parser.add_argument("--model", required=True, help="GGUF file, HF directory or work dir")
    parser.add_argument("--step", type=int, default=None,
                        help="checkpoint step of a work dir (default: the newest good one)")
    parser.add_argument("--dtype", choices=DTYPES, default=None,
                        help="compute dtype (default: the checkpoint's)")
    parser.add_argument("--param_dtype", choices=DTYPES, default=None,
                        help="weight storage dtype; bfloat16 halves the bytes a decode step "
                        "streams (default: the loader's, float32)")
    parser.add_argument("--served_model_name", default=None,
                        help="the `model` clients send (default: PATH's base name)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max_batch", type=int, default=32,
                        help="rows decoded together (also the largest n)")
    parser.add_argument("--max_queue", type=int, default=64,
                        help="waiting requests before new ones get 429")
    parser.add_argument("--segment", type=int, default=8,
                        help="decode steps between host checks (streaming, stops, cancels)")
    parser.add_argument("--default_max_tokens", type=int, default=512,
                        help="max_tokens of chat requests that give none")
    parser.add_argument("--log_level", default="info",
                        choices=("critical", "error", "warning", "info", "debug"))
    args = parser.parse_args(cli.strip_debug(argv))
    for name in ("max_batch", "max_queue", "segment", "default_max_tokens"):
        if getattr(args, name) < 1:
            raise cli.UsageError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if not 0 <= args.port < 65536:
        raise cli.UsageError(f"--port must be in [0, 65535], got {args.port}")
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    cli.quiet_library_noise()
    import uvicorn

    from phi4_jax.serve.app import Settings, create_app
    from phi4_jax.serve.loading import load

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    served = load(args.model, step=args.step, dtype=args.dtype, param_dtype=args.param_dtype,
                  name=args.served_model_name)
    print(f"{PROG}: serving {served.name} ({served.kind}: {served.source}, "
          f"{served.model.config.dtype}) on http://{args.host}:{args.port}", file=sys.stderr,
          flush=True)
    settings = Settings(max_batch=args.max_batch, max_queue=args.max_queue,
                        segment=args.segment, default_max_tokens=args.default_max_tokens)
    config = uvicorn.Config(create_app(served, settings), host=args.host, port=args.port,
                            log_level=args.log_level, timeout_graceful_shutdown=None)
    # uvicorn drains on SIGTERM / SIGINT, then re-raises the signal to the handler that was
    # installed before it: a no-op one here, so the process exits 0 after the drain.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    cli.run(main)
