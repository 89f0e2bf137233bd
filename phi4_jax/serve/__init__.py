"""The OpenAI-compatible HTTP server: `python -m phi4_jax.serve --model=PATH`.

    loading.py      PATH (GGUF file, Hugging Face directory, training work dir) -> model + codec
    codecs.py       tokenizers behind one interface (GGUF, tokenizer.json, Phi-4 tiktoken)
    protocol.py     request bodies and OpenAI error objects
    validate.py     prompts, chat messages and the context length, checked against the model
    jobs.py         a request as the scheduler sees it, its choices and their text
    scheduler.py    the thread that owns the model: waves of requests, streaming, cancellation
    scoring_jobs.py echo + logprobs requests (lm-eval log-likelihoods) in one forward pass
    responses.py    OpenAI response bodies and stream chunks
    app.py          the FastAPI routes; __main__.py the command (uvicorn, SIGTERM drain)

The HTTP layer lives here, apart from `phi4_jax.inference` (decoding, the segment engine
`inference.engine.Wave`), so the inference package keeps no web dependencies; see docs/serve.md.
"""
