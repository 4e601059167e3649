"""MiniLM on onnxruntime: the same weights exported from the bundled model, no hub, no optimum.

Mean pooling over the attention mask and L2 normalisation, as the sentence-transformers model
does; texts are batched by length so little padding is computed. `export_fused` writes the
encoder in the classic BERT form that onnxruntime's transformer optimizer turns into its fused
Attention, SkipLayerNormalization, BiasGelu and EmbedLayerNormalization kernels.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.corpus import CACHE

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _st_model() -> Any:
    from kb.embedders.local import LocalEmbedder

    return LocalEmbedder()._st()


def export(path: Path | None = None) -> Path:
    """Export the bundled MiniLM transformer to ONNX (cached); return the file."""
    import torch

    path = path or CACHE / f"minilm-torch{torch.__version__.split('+')[0]}.onnx"
    if path.exists():
        return path
    st = _st_model()
    transformer = st[0].auto_model.eval()

    class Hidden(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    enc = st.tokenizer(["an example", "another example text"], padding=True, return_tensors="pt")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    axes = {name: {0: "batch", 1: "tokens"} for name in (*INPUTS, "hidden")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Hidden(transformer),
            tuple(enc[name] for name in INPUTS),
            str(tmp),
            input_names=list(INPUTS),
            output_names=["hidden"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    tmp.replace(path)
    return path


def _classic_bert(bert: Any) -> Any:
    """Wrap a transformers BertModel in the pre-SDPA attention form the optimizer recognises."""
    import math

    import torch

    class Classic(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert
            self.heads = int(bert.config.num_attention_heads)
            self.size = int(bert.config.hidden_size) // self.heads

        def split(self, t: Any, *, keys: bool = False) -> Any:
            t = t.view(t.shape[0], t.shape[1], self.heads, self.size)
            return t.permute(0, 2, 3, 1) if keys else t.permute(0, 2, 1, 3)

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            e = self.bert.embeddings
            positions = torch.arange(input_ids.shape[1]).unsqueeze(0)
            x = e.word_embeddings(input_ids) + e.position_embeddings(positions)
            x = e.LayerNorm(x + e.token_type_embeddings(token_type_ids))
            bias = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * -10000.0
            for layer in self.bert.encoder.layer:
                a = layer.attention
                q, k = self.split(a.self.query(x)), self.split(a.self.key(x), keys=True)
                v = self.split(a.self.value(x))
                p = torch.softmax(torch.matmul(q, k) / math.sqrt(self.size) + bias, dim=-1)
                ctx = torch.matmul(p, v).permute(0, 2, 1, 3).contiguous()
                ctx = ctx.view(ctx.shape[0], ctx.shape[1], self.heads * self.size)
                x = a.output.LayerNorm(a.output.dense(ctx) + x)
                h = torch.nn.functional.gelu(layer.intermediate.dense(x))
                x = layer.output.LayerNorm(layer.output.dense(h) + x)
            return x

    return Classic().eval()


def export_fused(path: Path | None = None) -> Path:
    """Export MiniLM with onnxruntime's fused BERT operators (cached); return the file."""
    import torch
    from onnxruntime.transformers.optimizer import optimize_model

    path = path or CACHE / f"minilm-torch{torch.__version__.split('+')[0]}.fused.onnx"
    if path.exists():
        return path
    st = _st_model()
    bert = st[0].auto_model.eval()
    enc = st.tokenizer(["an example", "another example text"], padding=True, return_tensors="pt")
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = path.with_suffix(".raw.onnx")
    axes = {name: {0: "batch", 1: "tokens"} for name in (*INPUTS, "hidden")}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _classic_bert(bert),
            tuple(enc[name] for name in INPUTS),
            str(raw),
            input_names=list(INPUTS),
            output_names=["hidden"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    config = bert.config
    fused = optimize_model(
        str(raw),
        model_type="bert",
        num_heads=int(config.num_attention_heads),
        hidden_size=int(config.hidden_size),
        opt_level=0,
    )
    counts = fused.get_fused_operator_statistics()
    if counts.get("Attention", 0) != config.num_hidden_layers:
        raise RuntimeError(f"onnxruntime fused {counts.get('Attention', 0)} attention blocks")
    tmp = path.with_suffix(".tmp.onnx")
    fused.save_model_to_file(str(tmp))
    raw.unlink(missing_ok=True)
    tmp.replace(path)
    return path


def quantize(source: Path, *, keep_ffn_output: bool = False) -> Path:
    """Return a dynamically int8-quantized copy of an ONNX model (cached).

    With keep_ffn_output the feed-forward output projection of each layer stays float32: it is
    the layer whose int8 error moves the pooled vector most (measured: cosine to the float
    model 0.994 instead of 0.985 at most of the speed).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    suffix = ".int8-ffnout-fp32.onnx" if keep_ffn_output else ".int8.onnx"
    target = source.with_name(source.stem + suffix)
    if not target.exists():
        exclude: list[str] = []
        if keep_ffn_output:
            exclude = _ffn_outputs(onnx.load(str(source)))
        tmp = target.with_suffix(".tmp.onnx")
        quantize_dynamic(
            str(source),
            str(tmp),
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=exclude,
            # The fused graph's contrib operators hide some tensor types from shape inference.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        tmp.replace(target)
    return target


def _ffn_outputs(model: Any) -> list[str]:
    """Name the feed-forward output projections (1536 -> 384) of a plain or fused export."""
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul"
        and len(shapes.get(node.input[1], ())) == 2
        and shapes[node.input[1]][0] > shapes[node.input[1]][1]
    ]


class OnnxEmbedder:
    """Embed texts with an exported MiniLM on onnxruntime's CPU provider."""

    def __init__(self, model: Path, *, batch_size: int = 32, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.tokenizer = _st_model().tokenizer
        self.max_length = int(_st_model().max_seq_length)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self.batch_size = batch_size

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return one unit vector per text."""
        out = np.zeros((len(texts), 384), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), self.batch_size):
            idx = order[start : start + self.batch_size]
            enc = self.tokenizer(
                [texts[int(i)] for i in idx],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="np",
            )
            feeds = {name: enc[name].astype(np.int64) for name in INPUTS}
            hidden = self.session.run(None, feeds)[0]
            mask = enc["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
            out[idx] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        return out
