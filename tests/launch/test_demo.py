"""`make demo`: the real SmolLM2-135M GGUF loads offline and answers a question greedily."""

import pytest

pytest.importorskip("gguf")


@pytest.mark.slow
@pytest.mark.hf
def test_demo_answers_a_factual_question(capsys):
    from launch import demo

    assert demo.main(["--prompt=What is the capital of France?", "--max_new_tokens=12"]) == 0
    out = capsys.readouterr().out
    assert "assistant: The capital of France is Paris." in out
    assert "tokens/s" in out
