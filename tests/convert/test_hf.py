"""Logit parity with transformers Phi3/Llama on random weights, round trips, and clear errors."""

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

import phi4_jax  # noqa: E402
from phi4_jax.convert.hf_config import to_hf_config  # noqa: E402
from phi4_jax.model import preset  # noqa: E402

pytestmark = pytest.mark.hf

# GQA group sizes 1, 2 and 5.
CONFIGS = {
    "group1": preset("tiny", vocab_size=97, embed_dim=64, num_heads=4, num_kv_heads=4,
                     head_dim=16, mlp_dim=96, dtype="float32", rope_theta=10_000.0),
    "group2": preset("tiny", vocab_size=97, embed_dim=64, num_heads=4, num_kv_heads=2,
                     head_dim=16, mlp_dim=96, dtype="float32", rope_theta=250_000.0),
    "group5": preset("tiny", vocab_size=97, embed_dim=80, num_heads=10, num_kv_heads=2,
                     head_dim=8, mlp_dim=64, num_layers=3, dtype="float32"),
}


def hf_model(config, architecture="Phi3ForCausalLM", seed=0):
    torch.manual_seed(seed)
    cls = getattr(transformers, architecture)
    hf_cfg = cls.config_class(**to_hf_config(config, architecture))
    model = cls(hf_cfg).to(torch.float32).eval()
    with torch.no_grad():  # non-trivial norm scales so a swapped norm is caught
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(0.1 * torch.randn_like(p))
    model.config._attn_implementation = "eager"
    return model


def hf_logits(model, tokens):
    with torch.no_grad():
        return model(torch.tensor(np.asarray(tokens))).logits.numpy()


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def pair(request, tmp_path_factory):
    config = CONFIGS[request.param]
    hf = hf_model(config)
    path = str(tmp_path_factory.mktemp(request.param))
    hf.save_pretrained(path)
    ours = phi4_jax.load_hf(path)  # a float32 checkpoint computes in float32 by default
    return config, hf, ours, path


def test_logits_match_transformers(pair):
    config, hf, ours, _ = pair
    assert ours.config.dtype == "float32"
    tokens = np.random.default_rng(0).integers(0, config.vocab_size, (2, 11))
    ref = hf_logits(hf, tokens)
    got = np.asarray(ours(jnp.asarray(tokens)))
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


def test_packed_documents_equal_separate_runs(pair):
    config, hf, ours, _ = pair
    rng = np.random.default_rng(1)
    doc_a, doc_b = rng.integers(0, config.vocab_size, 7), rng.integers(0, config.vocab_size, 5)
    tokens = np.concatenate([doc_a, doc_b])[None]
    segments = np.array([[1] * 7 + [2] * 5])
    positions = np.array([list(range(7)) + list(range(5))])
    packed = np.asarray(ours(jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(segments)))
    np.testing.assert_allclose(packed[0, :7], hf_logits(hf, doc_a[None])[0], atol=1e-4, rtol=0)
    np.testing.assert_allclose(packed[0, 7:], hf_logits(hf, doc_b[None])[0], atol=1e-4, rtol=0)
    # Positions default to restarting at each segment boundary.
    implicit = np.asarray(ours(jnp.asarray(tokens), segment_ids=jnp.asarray(segments)))
    np.testing.assert_array_equal(implicit, packed)


def test_export_is_loadable_by_transformers_and_round_trips_bitwise(pair, tmp_path):
    config, hf, ours, _ = pair
    out = str(tmp_path / "export")
    # Small shards exercise model.safetensors.index.json.
    phi4_jax.save_hf(ours, out, max_shard_bytes=64 * 1024)
    assert os.path.exists(os.path.join(out, "model.safetensors.index.json"))
    again = phi4_jax.load_hf(out, dtype="float32")
    a, b = nnx.state(ours, nnx.Param), nnx.state(again, nnx.Param)
    for (path, x), (_, y) in zip(nnx.to_flat_state(a), nnx.to_flat_state(b)):
        np.testing.assert_array_equal(np.asarray(x.get_value()), np.asarray(y.get_value()),
                                      err_msg=str(path))
    reloaded = transformers.Phi3ForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tokens = np.random.default_rng(2).integers(0, config.vocab_size, (1, 6))
    np.testing.assert_allclose(hf_logits(reloaded, tokens), hf_logits(hf, tokens), atol=1e-6)


def test_llama_naming_and_tied_embeddings(tmp_path):
    config = CONFIGS["group2"].replace(tie_embeddings=True)
    hf = hf_model(config, "LlamaForCausalLM", seed=3)
    hf.save_pretrained(str(tmp_path / "llama"))
    ours = phi4_jax.load_hf(str(tmp_path / "llama"), dtype="float32")
    assert ours.config.tie_embeddings and not hasattr(ours, "lm_head")
    tokens = np.random.default_rng(3).integers(0, config.vocab_size, (2, 9))
    np.testing.assert_allclose(np.asarray(ours(jnp.asarray(tokens))), hf_logits(hf, tokens),
                               atol=1e-4, rtol=0)
    phi4_jax.save_hf(ours, str(tmp_path / "llama_out"), architecture="LlamaForCausalLM")
    back = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path / "llama_out"),
                                                         dtype=torch.float32).eval()
    np.testing.assert_allclose(hf_logits(back, tokens), hf_logits(hf, tokens), atol=1e-6)


# -- compute dtype follows the checkpoint (transformers' dtype="auto") ------------------------
def test_bfloat16_checkpoint_computes_in_bfloat16(tmp_path):
    config = CONFIGS["group2"]
    hf = hf_model(config).to(torch.bfloat16)
    path = str(tmp_path / "bf16")
    hf.save_pretrained(path)
    with open(os.path.join(path, "config.json")) as f:
        declared = json.load(f)
    assert "bfloat16" in (declared.get("dtype"), declared.get("torch_dtype"))
    ours = phi4_jax.load_hf(path)
    assert ours.config.dtype == "bfloat16" and ours.config.param_dtype == "float32"
    tokens = np.random.default_rng(4).integers(0, config.vocab_size, (2, 9))
    assert ours.hidden(jnp.asarray(tokens)).dtype == jnp.bfloat16
    with torch.no_grad():
        ref = hf(torch.tensor(tokens)).logits.float().numpy()
    # Both sides compute in bfloat16 (rounding differently): agreement to bf16 precision.
    np.testing.assert_allclose(np.asarray(ours(jnp.asarray(tokens))), ref,
                               atol=0.05 * np.abs(ref).max(), rtol=0)
    assert phi4_jax.load_hf(path, dtype="float32").config.dtype == "float32"  # explicit wins


def test_without_a_declared_dtype_the_tensor_headers_decide(saved, tmp_path):
    from safetensors.numpy import load_file, save_file

    dst = tmp_path / "headers"
    dst.mkdir()
    tensors = load_file(os.path.join(saved, "model.safetensors"))
    save_file({k: v.astype(np.float16) for k, v in tensors.items()},
              str(dst / "model.safetensors"))
    with open(os.path.join(saved, "config.json")) as f:
        cfg = json.load(f)
    cfg.pop("dtype", None)
    cfg.pop("torch_dtype", None)
    (dst / "config.json").write_text(json.dumps(cfg))
    assert phi4_jax.load_hf(str(dst)).config.dtype == "float16"
    cfg["torch_dtype"] = "float64"
    (dst / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="float64.*pass dtype="):
        phi4_jax.load_hf(str(dst))


# -- errors name the tensor or field ----------------------------------------------------------
def _copy_with(tmp_path, src, edit_tensors=None, edit_config=None):
    from safetensors.numpy import load_file, save_file

    dst = tmp_path / "edited"
    dst.mkdir()
    tensors = load_file(os.path.join(src, "model.safetensors"))
    if edit_tensors:
        edit_tensors(tensors)
    save_file(tensors, str(dst / "model.safetensors"))
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    if edit_config:
        edit_config(cfg)
    (dst / "config.json").write_text(json.dumps(cfg))
    return str(dst)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("saved"))
    hf_model(CONFIGS["group2"]).save_pretrained(path)
    return path


@pytest.mark.parametrize("edit,message", [
    (lambda t: t.pop("model.layers.1.mlp.down_proj.weight"),
     "missing tensors: model.layers.1.mlp.down_proj.weight"),
    (lambda t: t.update({"model.layers.0.self_attn.q_norm.weight": np.ones(4, np.float32)}),
     "unexpected tensors: model.layers.0.self_attn.q_norm.weight"),
    (lambda t: t.update({"model.norm.weight": np.ones(65, np.float32)}),
     "tensor model.norm.weight has shape (65,), expected (64,)"),
])
def test_tensor_errors_name_the_tensor(saved, tmp_path, edit, message):
    path = _copy_with(tmp_path, saved, edit_tensors=edit)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        phi4_jax.load_hf(path)


@pytest.mark.parametrize("edit,message", [
    (lambda c: c.update(architectures=["GPT2LMHeadModel"]), "unsupported architecture"),
    (lambda c: c.update(num_key_value_heads=3), "num_heads=4 is not divisible by"),
    (lambda c: c.update(head_dim=32), "head_dim=32 does not match"),
    (lambda c: c.update(partial_rotary_factor=0.5), "partial_rotary_factor"),
])
def test_config_errors_name_the_field(saved, tmp_path, edit, message):
    path = _copy_with(tmp_path, saved, edit_config=edit)
    with pytest.raises(ValueError, match=message):
        phi4_jax.load_hf(path)
