"""MiniLM on onnxruntime: the same weights exported from the bundled model, no hub, no optimum.

Mean pooling over the attention mask and L2 normalisation, as the sentence-transformers model
does; texts are batched by length so little padding is computed.
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
            exclude = [
                node.name
                for node in onnx.load(str(source)).graph.node
                if node.op_type == "MatMul"
                and "/output/dense/" in node.name
                and "/attention/" not in node.name
            ]
        tmp = target.with_suffix(".tmp.onnx")
        quantize_dynamic(
            str(source),
            str(tmp),
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=exclude,
        )
        tmp.replace(target)
    return target


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
