"""OpenAI-compatible embeddings over HTTP (`POST {base_url}/embeddings`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from kb.config import redact_url
from kb.embedders import EmbedderError

KNOWN_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAIEmbedder:
    """Batched calls with retries and backoff on 429/5xx; clear errors on 401 or a bad model."""

    kind = "openai"
    metric = "cosine"

    def __init__(
        self,
        *,
        model: str = "text-embedding-3-small",
        base_url: str = "https://api.openai.com/v1",
        api_key: str | None = None,
        dimension: int | None = None,
        batch_size: int = 256,
        max_retries: int = 5,
        backoff: float = 0.5,
        timeout: float = 60.0,
    ) -> None:
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.backoff = backoff
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)
        self._dimension = dimension or KNOWN_DIMENSIONS.get(model)

    @property
    def dimension(self) -> int:
        """Return the vector length (asks the API once for a model it does not know)."""
        if self._dimension is None:
            self._dimension = int(self._request(["dimension probe"]).shape[1])
        return self._dimension

    def _post(self, texts: list[str]) -> httpx.Response:
        where = redact_url(self.base_url) if "@" in self.base_url else self.base_url
        for attempt in range(self.max_retries + 1):
            try:
                response = self._client.post(
                    "/embeddings", json={"model": self.model, "input": texts}
                )
            except httpx.TransportError as exc:
                if attempt == self.max_retries:
                    raise EmbedderError(
                        f"Cannot reach the embeddings API at {where}: {exc}"
                    ) from exc
            else:
                if response.status_code not in RETRY_STATUS or attempt == self.max_retries:
                    return response
                wait = _retry_after(response)
                if wait is not None:
                    time.sleep(min(wait, 60.0))
                    continue
            time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _request(self, texts: list[str]) -> np.ndarray:
        response = self._post(texts)
        if response.status_code == 401:
            raise EmbedderError(
                f"The embeddings API at {self.base_url} refused the API key (401); "
                "check KB_OPENAI_API_KEY."
            )
        if response.status_code in (400, 404) and "model" in response.text.lower():
            raise EmbedderError(
                f"The embeddings API at {self.base_url} does not know the model "
                f"{self.model!r} ({response.status_code}): {_message(response)}"
            )
        if response.status_code != 200:
            raise EmbedderError(
                f"The embeddings API at {self.base_url} answered {response.status_code}: "
                f"{_message(response)}"
            )
        try:
            data = sorted(response.json()["data"], key=lambda item: item["index"])
            vectors = np.asarray([item["embedding"] for item in data], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbedderError(f"The embeddings API returned an unexpected body: {exc}") from exc
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise EmbedderError(
                f"The embeddings API returned {len(vectors)} vectors for {len(texts)} texts"
            )
        return vectors

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return one vector per text, in order, batching the requests."""
        parts = [
            self._request(list(texts[i : i + self.batch_size]))
            for i in range(0, len(texts), self.batch_size)
        ]
        out = np.concatenate(parts) if parts else np.zeros((0, self.dimension), np.float32)
        if self._dimension is None and len(out):
            self._dimension = int(out.shape[1])
        return out

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _message(response: httpx.Response) -> str:
    try:
        body: Any = response.json()
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            return str(body["error"].get("message", body["error"]))
    except ValueError:
        pass
    return response.text[:300]
