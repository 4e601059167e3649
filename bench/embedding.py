"""Scenario 7: the local model's throughput on real text, default vs faster offline set-ups."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from bench import corpus, engines
from bench.context import Context

Embed = Callable[[Sequence[str]], np.ndarray]


def _tokens(texts: Sequence[str]) -> int:
    from bench.onnx_embedder import _st_model

    st = _st_model()
    enc = st.tokenizer(list(texts), truncation=True, max_length=int(st.max_seq_length))
    return sum(len(ids) for ids in enc["input_ids"])


def _torch_int8() -> Embed:
    """sentence-transformers with its Linear layers dynamically quantized to int8 (torch)."""
    import torch
    from sentence_transformers import SentenceTransformer

    from kb.embedders.local import resolve_model

    _, path = resolve_model("all-MiniLM-L6-v2")
    st = SentenceTransformer(path, device="cpu")
    module = st[0]
    quantized = torch.ao.quantization.quantize_dynamic(
        module.auto_model, {torch.nn.Linear}, dtype=torch.qint8
    )
    for attr in ("auto_model", "model"):
        if hasattr(module, attr):
            setattr(module, attr, quantized)

    def embed(texts: Sequence[str]) -> np.ndarray:
        return np.asarray(
            st.encode(
                list(texts), batch_size=64, normalize_embeddings=True, show_progress_bar=False
            ),
            dtype=np.float32,
        )

    return embed


def configurations() -> tuple[dict[str, Callable[[], Embed]], dict[str, str]]:
    """Return the set-ups to try (built lazily) and why any is left out."""
    from kb.embedders import make_embedder

    def default() -> Embed:
        return make_embedder("local").embed

    configs: dict[str, Callable[[], Embed]] = {
        "sentence-transformers (kb default)": default,
        "torch int8 dynamic quantization": _torch_int8,
    }
    missing: dict[str, str] = {}
    if engines.available("onnxruntime") and engines.available("onnx"):
        from bench import onnx_embedder

        def onnx_fp32() -> Embed:
            return onnx_embedder.OnnxEmbedder(onnx_embedder.export()).embed

        def onnx_int8() -> Embed:
            return onnx_embedder.OnnxEmbedder(onnx_embedder.quantize(onnx_embedder.export())).embed

        def onnx_int8_mixed() -> Embed:
            return onnx_embedder.OnnxEmbedder(
                onnx_embedder.quantize(onnx_embedder.export(), keep_ffn_output=True)
            ).embed

        configs["onnxruntime fp32, length-sorted batches of 32"] = onnx_fp32
        configs["onnxruntime int8 (dynamic, per channel)"] = onnx_int8
        configs["onnxruntime int8, FFN output layers fp32"] = onnx_int8_mixed
    else:
        missing["onnxruntime"] = "onnxruntime and onnx not installed (the bench extra has them)"
    return configs, missing


def run(ctx: Context) -> dict[str, Any]:
    """Measure chunks/s and tokens/s per set-up, and cosine similarity to the default's vectors."""
    t = ctx.tier
    c = corpus.load(t.corpus_chunks, t.corpus_queries)
    texts = c.texts[: t.embed_chunks]
    tokens = _tokens(texts)
    configs, missing = configurations()
    if not t.embed_all:
        # The smoke tier keeps the default and the set-up proposed to replace it.
        keep = ("sentence-transformers (kb default)", "onnxruntime int8, FFN output layers fp32")
        configs = {name: make for name, make in configs.items() if name in keep}
    out: dict[str, Any] = {"chunks": len(texts), "tokens": tokens, "configs": {}}
    embedders: dict[str, Embed] = {}
    setups: dict[str, float] = {}
    for name, make in configs.items():
        start = time.perf_counter()
        try:
            embed = make()
            embed(texts[:8])  # warm-up: lazy loads, first-call allocations
        except Exception as exc:  # one set-up failing is a finding, not a crash
            out["configs"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        embedders[name] = embed
        setups[name] = time.perf_counter() - start
    # Passes interleaved across set-ups, so load from elsewhere on the machine hits all alike.
    seconds: dict[str, list[float]] = {name: [] for name in embedders}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(max(2, t.repeats)):
        for name, embed in embedders.items():
            start = time.perf_counter()
            vectors[name] = embed(texts)
            seconds[name].append(time.perf_counter() - start)
    reference = next(iter(vectors.values()), None)
    for name in embedders:
        s = statistics.median(seconds[name])
        cos = np.sum(vectors[name] * reference, axis=1)
        out["configs"][name] = {
            "setup_s": round(setups[name], 2),
            "seconds": [round(x, 3) for x in seconds[name]],
            "chunks_per_s": round(len(texts) / s, 2),
            "tokens_per_s": round(tokens / s, 1),
            "cosine_to_default_min": round(float(cos.min()), 5),
            "cosine_to_default_mean": round(float(cos.mean()), 5),
        }
        ctx.log(f"embedding {name}: {len(texts) / s:.1f} chunks/s, cos min {cos.min():.4f}")
    for name, why in missing.items():
        out["configs"][name] = {"error": why}
    return out
