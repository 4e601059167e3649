"""Scenario 7: the local model's throughput on real text, float32 vs faster offline set-ups.

The reference is sentence-transformers in float32 (kb's default before the bfloat16 path); every
other set-up's vectors are compared with its vectors, chunk by chunk.
"""

from __future__ import annotations

import os
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


def _torch_bf16(*, autocast: bool) -> Embed:
    """sentence-transformers with the whole model cast to bfloat16, or under CPU autocast."""
    import torch
    from sentence_transformers import SentenceTransformer

    from kb.embedders.local import resolve_model

    _, path = resolve_model("all-MiniLM-L6-v2")
    st = SentenceTransformer(path, device="cpu")
    if not autocast:
        st.to(torch.bfloat16)

    def embed(texts: Sequence[str]) -> np.ndarray:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            v = st.encode(
                list(texts), batch_size=64, convert_to_tensor=True, show_progress_bar=False
            )
        # Normalised in float32, as kb's bf16 path does, so only the forward pass differs.
        v = torch.nn.functional.normalize(v.float(), dim=1)
        return np.asarray(v.numpy(), dtype=np.float32)

    return embed


REFERENCE = "sentence-transformers fp32 (reference)"
PROPOSED = "torch bf16, fused oneDNN kernels (kb local precision auto)"
NO_BF16 = (
    "not on this CPU: it has no bfloat16 instructions (AVX512-BF16 or AMX), so bfloat16 would "
    "run emulated, slower than float32, and kb's precision auto runs float32 here"
)


def configurations() -> tuple[dict[str, Callable[[], Embed]], dict[str, str]]:
    """Return the set-ups to try (built lazily) and why any is left out."""
    from kb.embedders.local import LocalEmbedder, native_bf16

    # The name is the one the report reads; it is the float32 path, kb's default before bf16.
    def reference() -> Embed:
        return LocalEmbedder(precision="fp32").embed

    def proposed() -> Embed:
        return LocalEmbedder(precision="bf16").embed

    configs: dict[str, Callable[[], Embed]] = {
        REFERENCE: reference,
        PROPOSED: proposed,
        "torch bf16 (whole model cast)": lambda: _torch_bf16(autocast=False),
        "torch bf16 autocast": lambda: _torch_bf16(autocast=True),
        "torch int8 dynamic quantization": _torch_int8,
    }
    missing: dict[str, str] = {}
    if not native_bf16():
        # kb's `auto` runs float32 on such a CPU. Emulated, bfloat16 is many times slower
        # than float32 (one M-tier run spent over 15 minutes on these set-ups alone).
        for name in (PROPOSED, "torch bf16 (whole model cast)", "torch bf16 autocast"):
            del configs[name]
            missing[name] = NO_BF16
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

        def fused_fp32() -> Embed:
            return onnx_embedder.OnnxEmbedder(onnx_embedder.export_fused()).embed

        def fused_int8() -> Embed:
            path = onnx_embedder.quantize(onnx_embedder.export_fused())
            return onnx_embedder.OnnxEmbedder(path).embed

        def fused_int8_mixed() -> Embed:
            path = onnx_embedder.quantize(onnx_embedder.export_fused(), keep_ffn_output=True)
            return onnx_embedder.OnnxEmbedder(path).embed

        configs["onnxruntime fp32, length-sorted batches of 32"] = onnx_fp32
        configs["onnxruntime int8 (dynamic, per channel)"] = onnx_int8
        configs["onnxruntime int8, FFN output layers fp32"] = onnx_int8_mixed
        configs["onnxruntime fused BERT ops fp32"] = fused_fp32
        configs["onnxruntime fused BERT ops int8 (VNNI, per channel)"] = fused_int8
        configs["onnxruntime fused BERT ops int8, FFN output layers fp32"] = fused_int8_mixed
    else:
        missing["onnxruntime"] = "onnxruntime and onnx are not installed (the bench extra has them)"
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
        keep = (REFERENCE, PROPOSED)
        configs = {name: make for name, make in configs.items() if name in keep}
    out: dict[str, Any] = {
        "chunks": len(texts),
        "tokens": tokens,
        "reference": REFERENCE,
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "configs": {},
    }
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
    # Process CPU time as well: on a shared machine it moves less with others' load than the
    # wall clock does (it still counts the threads' spin-waits).
    seconds: dict[str, list[float]] = {name: [] for name in embedders}
    cpu: dict[str, list[float]] = {name: [] for name in embedders}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(max(2, t.repeats)):
        for name, embed in embedders.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            vectors[name] = embed(texts)
            seconds[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    reference = vectors.get(REFERENCE, next(iter(vectors.values()), None))
    for name in embedders:
        s = statistics.median(seconds[name])
        cos = np.sum(vectors[name] * reference, axis=1)
        out["configs"][name] = {
            "setup_s": round(setups[name], 2),
            "seconds": [round(x, 3) for x in seconds[name]],
            "cpu_seconds": [round(x, 3) for x in cpu[name]],
            "chunks_per_s": round(len(texts) / s, 2),
            "chunks_per_s_best": round(len(texts) / min(seconds[name]), 2),
            "tokens_per_s": round(tokens / s, 1),
            "cosine_to_default_min": round(float(cos.min()), 5),
            "cosine_to_default_mean": round(float(cos.mean()), 5),
        }
        ctx.log(f"embedding {name}: {len(texts) / s:.1f} chunks/s, cos min {cos.min():.4f}")
    for name, why in missing.items():
        out["configs"][name] = {"unavailable": why}
    return out
