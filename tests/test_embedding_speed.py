"""The local model's bfloat16 path: float32's vectors (cosine >= 0.99) and a working switch."""

from __future__ import annotations

import numpy as np
import pytest

import kb
from kb.config import get_settings
from kb.embedders import EmbedderError, embed_texts, make_embedder
from kb.embedders.local import LocalEmbedder, native_bf16

# Prose, code, a table row, a long repetitive text past the 256-token cut, punctuation, one word,
# and an empty string: what ingest feeds the model.
TEXTS = [
    "How do I reset my password?",
    "I forgot my login credentials and need a new password.",
    "def read(path):\n    with open(path, encoding='utf-8') as f:\n        return f.read()",
    "| id | name | price |\n| 1 | kettle | 24.90 |\n| 2 | toaster | 31.00 |",
    "The quick brown fox jumps over the lazy dog. " * 60,
    "!!! ??? ... --- ***",
    "pgvector",
    "",
    "Die Katze sitzt auf der Matte und schaut aus dem Fenster.",
]


def _bf16_or_skip() -> None:
    from kb.embedders.local import _bf16_kernels

    if not _bf16_kernels():
        pytest.skip("torch has no oneDNN bfloat16 kernels on this CPU")


@pytest.fixture(scope="module")
def fp32() -> LocalEmbedder:
    return LocalEmbedder(precision="fp32")


@pytest.fixture(scope="module")
def bf16() -> LocalEmbedder:
    _bf16_or_skip()
    return LocalEmbedder(precision="bf16")


@pytest.mark.model
def test_bf16_vectors_match_fp32_ones(fp32: LocalEmbedder, bf16: LocalEmbedder) -> None:
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    exact = embed_texts(fp32, TEXTS)
    fast = embed_texts(bf16, TEXTS)
    assert fast.shape == exact.shape == (len(TEXTS), 384) and fast.dtype == np.float32
    assert np.allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
    cosine = np.sum(fast * exact, axis=1)
    assert cosine.min() >= 0.99, cosine
    # Not merely close: it is a different computation (bf16 rounding), not the fp32 path again.
    assert not np.array_equal(fast, exact)
    # Rankings by meaning survive: both put the password texts together, away from the code.
    assert fast[1] @ fast[0] > fast[2] @ fast[0] + 0.2


@pytest.mark.model
def test_bf16_query_finds_fp32_documents_and_the_reverse(
    fp32: LocalEmbedder, bf16: LocalEmbedder
) -> None:
    # Collections embedded by older versions (fp32) are searched with bf16 queries, and back.
    docs = TEXTS[:7]
    query = ["I cannot log in, how do I change my password"]
    for docs_by, query_by in ((fp32, bf16), (bf16, fp32)):
        scores = embed_texts(docs_by, docs) @ embed_texts(query_by, query)[0]
        assert int(np.argmax(scores)) in (0, 1), scores


@pytest.mark.model
def test_bf16_batch_order_and_length_sorting_keep_rows_in_place(bf16: LocalEmbedder) -> None:
    forward = embed_texts(bf16, TEXTS)
    backward = embed_texts(bf16, TEXTS[::-1])[::-1]
    assert np.sum(forward * backward, axis=1).min() >= 0.999
    small = LocalEmbedder(precision="bf16", batch_size=2)
    assert np.sum(embed_texts(small, TEXTS) * forward, axis=1).min() >= 0.999


@pytest.mark.model
def test_auto_uses_bf16_only_where_the_cpu_has_it(fp32: LocalEmbedder) -> None:
    auto = LocalEmbedder(precision="auto")
    assert auto.precision == ("bf16" if native_bf16() else "fp32")
    cosine = np.sum(embed_texts(auto, TEXTS) * embed_texts(fp32, TEXTS), axis=1)
    assert cosine.min() >= 0.99


@pytest.mark.model
def test_bf16_asked_for_on_a_cpu_without_it_is_a_clear_error() -> None:
    from kb.embedders.local import _bf16_kernels

    asked = LocalEmbedder(precision="bf16")
    if _bf16_kernels():
        assert asked.precision == "bf16"
    else:
        with pytest.raises(EmbedderError, match="needs torch with oneDNN bfloat16 kernels"):
            embed_texts(asked, TEXTS[:2])


def test_the_setting_reaches_the_embedder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KB_LOCAL_PRECISION", "fp32")
    assert get_settings().local_precision == "fp32"
    embedder = make_embedder("local")
    # fp32 is settled without loading the model.
    assert isinstance(embedder, LocalEmbedder) and embedder.precision == "fp32"
    monkeypatch.setenv("KB_LOCAL_PRECISION", " FP32 ")
    embedder = make_embedder("local")
    assert isinstance(embedder, LocalEmbedder) and embedder.requested_precision == "fp32"
    monkeypatch.delenv("KB_LOCAL_PRECISION")
    embedder = make_embedder("local")
    assert isinstance(embedder, LocalEmbedder) and embedder.requested_precision == "auto"


def test_bad_precision_values_are_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(EmbedderError, match=r"'fp16'; choose one of auto, bf16, fp32"):
        LocalEmbedder(precision="fp16")
    monkeypatch.setenv("KB_LOCAL_PRECISION", "half")
    with pytest.raises(EmbedderError, match=r"'half'; choose one of auto, bf16, fp32"):
        make_embedder("local")
    assert issubclass(EmbedderError, kb.KBError)


def test_only_mean_pooled_bert_encoders_qualify_for_bf16() -> None:
    from kb.embedders.local import _FusedBert, _mean_pooled

    class Module:
        def __init__(self, **config: object) -> None:
            self.config = config

        def get_config_dict(self) -> dict[str, object]:
            return self.config

    class Transformer(Module):
        pass

    class Pooling(Module):
        pass

    assert _mean_pooled([Transformer(), Pooling(pooling_mode="mean")])
    assert _mean_pooled([Transformer(), Pooling(pooling_mode_mean_tokens=True)])
    assert not _mean_pooled([Transformer(), Pooling(pooling_mode="cls")])
    assert not _mean_pooled(
        [Transformer(), Pooling(pooling_mode_mean_tokens=True, pooling_mode_max_tokens=True)]
    )
    assert not _mean_pooled([Transformer()])

    class Config:
        model_type = "bert"
        hidden_act = "gelu_new"
        is_decoder = False

    class BertModel:
        config = Config()

    transformer = Transformer()
    transformer.auto_model = BertModel()  # type: ignore[attr-defined]
    assert not _FusedBert.supports([transformer, Pooling(pooling_mode="mean")])
    Config.hidden_act = "gelu"
    assert _FusedBert.supports([transformer, Pooling(pooling_mode="mean")])
