"""Embedders: hashing, the local model, an OpenAI-compatible API on a real local HTTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

import kb
from kb.embedders import (
    EmbedderError,
    check_compatible,
    check_vectors,
    embed_texts,
    embedder_for,
    make_embedder,
)
from kb.embedders.hashing import HashingEmbedder
from kb.embedders.openai import OpenAIEmbedder
from kb.errors import EmbedderMismatch, InvalidInput

# --- hashing ------------------------------------------------------------------------------


def test_hashing_is_deterministic_unit_length_and_lexical() -> None:
    a, b = HashingEmbedder(256), HashingEmbedder(256)
    texts = ["PostgreSQL stores vectors", "postgresql STORES vectors!", "bananas are yellow", ""]
    va, vb = embed_texts(a, texts), embed_texts(b, texts)
    assert va.shape == (4, 256) and va.dtype == np.float32
    assert np.array_equal(va, vb)
    assert np.allclose(np.linalg.norm(va, axis=1), 1.0, atol=1e-6)
    assert va[0] @ va[1] == pytest.approx(1.0, abs=1e-6)  # case and punctuation do not count
    assert va[0] @ va[2] < 0.5
    assert a.model == "feature-hashing-256" and a.kind == "hashing"


def test_hashing_model_names_round_trip_and_bad_ones_are_refused() -> None:
    assert make_embedder("hashing", "feature-hashing-64").dimension == 64
    assert make_embedder("hashing", dimension=32).model == "feature-hashing-32"
    with pytest.raises(InvalidInput, match="not a hashing model"):
        make_embedder("hashing", "all-MiniLM-L6-v2")
    with pytest.raises(InvalidInput, match="Unknown embedder"):
        make_embedder("word2vec")


def test_vectors_are_checked_before_they_reach_the_database() -> None:
    good = np.ones((2, 3), np.float32)
    assert check_vectors(good, count=2, dimension=3, model="m").shape == (2, 3)
    with pytest.raises(EmbedderError, match="4-dimensional"):
        check_vectors(np.ones((2, 4)), count=2, dimension=3, model="m")
    with pytest.raises(EmbedderError, match="NaN"):
        check_vectors(np.array([[1, np.nan, 0], [1, 1, 1]]), count=2, dimension=3, model="m")
    with pytest.raises(EmbedderError, match="zero vector for text #1"):
        check_vectors(np.array([[1, 0, 0], [0, 0, 0]]), count=2, dimension=3, model="m")
    with pytest.raises(EmbedderError, match="for 3 texts"):
        check_vectors(good, count=3, dimension=3, model="m")
    with pytest.raises(InvalidInput, match="list of texts"):
        embed_texts(HashingEmbedder(8), "one string")  # type: ignore[arg-type]


@dataclass
class _Coll:
    name: str = "docs"
    embedder: str = "hashing"
    model: str = "feature-hashing-64"
    dimension: int = 64


def test_a_mismatched_model_or_dimension_is_refused_naming_both() -> None:
    assert embedder_for(_Coll()).dimension == 64
    with pytest.raises(EmbedderMismatch) as info:
        check_compatible(
            HashingEmbedder(128), name="docs", model="feature-hashing-64", dimension=64
        )
    message = str(info.value)
    assert "feature-hashing-64 (64 dims)" in message and "feature-hashing-128 (128 dims)" in message
    with pytest.raises(EmbedderMismatch, match="all-MiniLM-L6-v2 \\(384 dims\\)"):
        check_compatible(
            make_embedder("local"), name="docs", model="feature-hashing-64", dimension=64
        )


# --- the local model ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def local_model() -> kb.Embedder:
    """The default local model, loaded once for the whole test session (~10 s)."""
    embedder = make_embedder("local")
    embed_texts(embedder, ["warm up"])
    return embedder


@pytest.mark.model
def test_local_model_gives_384_dim_unit_vectors_that_rank_by_meaning(
    local_model: kb.Embedder,
) -> None:
    assert local_model.model == "sentence-transformers/all-MiniLM-L6-v2"
    assert local_model.dimension == 384 and local_model.metric == "cosine"
    texts = [
        "How do I reset my password?",
        "I forgot my login credentials and need a new password.",
        "The recipe needs two cups of flour and an egg.",
        "Steps to change the password of an account",
    ]
    v = embed_texts(local_model, texts)
    assert v.shape == (4, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    sims = v @ v[0]
    assert sims[1] > sims[2] + 0.3 and sims[3] > sims[2] + 0.3
    # Same input, same vectors.
    assert np.array_equal(embed_texts(local_model, texts), v)
    # Alone or in a batch (other padding, other matrix shapes) the vector may differ in the
    # last bits of bfloat16 arithmetic, never in meaning. (Re-ingest keys on content hashes.)
    alone = embed_texts(local_model, texts[:1])[0]
    assert float(alone @ v[0]) > 0.9999


# --- an OpenAI-compatible API on a real local server -----------------------------------------


@dataclass
class _API:
    """What the fake API answers, and what it was asked."""

    url: str = ""
    dimension: int = 8
    known_models: tuple[str, ...] = ("text-embedding-3-small", "small-8")
    api_key: str = "sk-test"
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)


def _vector(text: str, dim: int) -> list[float]:
    rng = np.random.default_rng(abs(hash(text)) % 2**32)
    return [float(x) for x in rng.standard_normal(dim)]


def _handler(api: _API) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            api.requests.append(
                {"path": self.path, "auth": self.headers.get("Authorization"), **body}
            )
            if self.path != "/v1/embeddings":
                self._send(404, {"error": {"message": "no such route"}}, {})
            elif api.script:
                status, headers = api.script.pop(0)
                self._send(status, {"error": {"message": f"scripted {status}"}}, headers)
            elif self.headers.get("Authorization") != f"Bearer {api.api_key}":
                self._send(401, {"error": {"message": "Incorrect API key provided"}}, {})
            elif body["model"] not in api.known_models:
                message = f"The model `{body['model']}` does not exist"
                self._send(404, {"error": {"message": message, "code": "model_not_found"}}, {})
            else:
                data = [
                    {"object": "embedding", "index": i, "embedding": _vector(t, api.dimension)}
                    for i, t in enumerate(body["input"])
                ]
                # Out of order on purpose: clients must sort by index.
                self._send(200, {"object": "list", "data": data[::-1], "model": body["model"]}, {})

    return Handler


@pytest.fixture
def api() -> Iterator[_API]:
    state = _API()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def _client(api: _API, **kw: Any) -> OpenAIEmbedder:
    options: dict[str, Any] = {
        "model": "small-8",
        "base_url": api.url,
        "api_key": api.api_key,
        "dimension": 8,
        "backoff": 0.01,
    }
    options.update(kw)
    return OpenAIEmbedder(**options)


def test_openai_batches_requests_and_keeps_order(api: _API) -> None:
    client = _client(api, batch_size=2)
    texts = ["one", "two", "three", "four", "five"]
    vectors = embed_texts(client, texts)
    assert vectors.shape == (5, 8)
    assert [len(r["input"]) for r in api.requests] == [2, 2, 1]
    assert all(r["auth"] == "Bearer sk-test" and r["model"] == "small-8" for r in api.requests)
    for text, row in zip(texts, vectors, strict=True):
        assert np.allclose(row, _vector(text, 8), atol=1e-6)


def test_openai_retries_429_honouring_retry_after_then_succeeds(api: _API) -> None:
    api.script = [(429, {"Retry-After": "0.2"}), (503, {})]
    client = _client(api)
    vectors = embed_texts(client, ["hello"])
    assert vectors.shape == (1, 8)
    assert len(api.requests) == 3


def test_openai_gives_up_after_its_retries_with_the_status(api: _API) -> None:
    api.script = [(500, {})] * 3
    with pytest.raises(EmbedderError, match="answered 500"):
        embed_texts(_client(api, max_retries=2), ["hello"])
    assert len(api.requests) == 3


def test_openai_401_is_a_clear_error(api: _API) -> None:
    with pytest.raises(EmbedderError, match=r"refused the API key \(401\).*KB_OPENAI_API_KEY"):
        embed_texts(_client(api, api_key="sk-wrong"), ["hello"])
    assert len(api.requests) == 1  # a 401 is not retried


def test_openai_unknown_model_is_a_clear_error(api: _API) -> None:
    with pytest.raises(EmbedderError, match="does not know the model 'no-such-model'"):
        embed_texts(_client(api, model="no-such-model"), ["hello"])


def test_openai_learns_an_unknown_dimension_and_checks_it(api: _API) -> None:
    client = _client(api, dimension=None)
    assert client.dimension == 8  # asked the API once
    api.dimension = 16  # the API changes its mind: the vectors are refused, not stored
    with pytest.raises(EmbedderError, match="16-dimensional vectors; expected 8"):
        embed_texts(client, ["x"])


def test_openai_settings_reach_the_provider(api: _API) -> None:
    settings = kb.Settings(  # type: ignore[call-arg]
        _env_file=None, openai_base_url=api.url, openai_api_key="sk-test", openai_model="small-8"
    )
    client = make_embedder("openai", settings=settings, dimension=8)
    assert embed_texts(client, ["a", "b"]).shape == (2, 8)
    assert client.kind == "openai" and client.model == "small-8"
