"""The LLM labeler: Bills et al. (2023)'s explain–simulate–score loop against any
OpenAI-compatible chat endpoint (``LFP_MECH_LLM_BASE_URL``, ``LFP_MECH_LLM_MODEL`` and
optionally ``LFP_MECH_LLM_API_KEY``).

Activations are discretized to 0–10 per token (relative to the feature's top activation); the
model writes a one-sentence explanation from half of the top contexts, then simulates the
activations of the other half from the explanation alone; the score is the Pearson correlation
of simulated and true activations. A third prompt asks whether the explanation is related to the
fine-tuning task. The client is stdlib ``urllib`` (no extra dependency).
"""

import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lfp_mech.errors import ConfigError, LfpMechError
from lfp_mech.validate.autointerp.scan import ActivatingExample
from lfp_mech.validate.config import DEFAULT_TASK

logger = logging.getLogger(__name__)

__all__ = [
    "ENV_API_KEY",
    "ENV_BASE_URL",
    "ENV_MODEL",
    "LLMClient",
    "LLMDescription",
    "describe_with_llm",
    "discretize",
]

ENV_BASE_URL = "LFP_MECH_LLM_BASE_URL"
ENV_MODEL = "LFP_MECH_LLM_MODEL"
ENV_API_KEY = "LFP_MECH_LLM_API_KEY"


class LLMClient:
    """A minimal client of an OpenAI-compatible ``/chat/completions`` endpoint (stdlib urllib).

    Example: ``LLMClient("http://localhost:8000/v1", "my-model").chat([{"role": "user",
    "content": "hi"}])``. Local hosts bypass any HTTP proxy of the environment. A rate limit,
    server error or lost connection is retried ``retries`` times, waiting ``retry_wait`` seconds
    and twice as long each time, so one hiccup does not end a stage that has scanned its corpus.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout: float | int = 60.0,
        retries: int = 3,
        retry_wait: float | int = 2.0,
    ) -> None:
        parsed = urllib.parse.urlparse(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(
                f"LLM base URL {base_url!r} is not an http(s) URL (e.g. http://127.0.0.1:8000/v1)"
            )
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.retries, self.retry_wait = retries, retry_wait
        local = parsed.hostname in ("127.0.0.1", "localhost", "::1")
        handlers = [urllib.request.ProxyHandler({})] if local else []
        self._opener = urllib.request.build_opener(*handlers)

    @classmethod
    def from_env(cls) -> "LLMClient | None":
        """A client from ``LFP_MECH_LLM_BASE_URL`` / ``_MODEL`` / ``_API_KEY``; None if unset."""
        base, model = os.environ.get(ENV_BASE_URL), os.environ.get(ENV_MODEL)
        if not base and not model:
            return None
        if not (base and model):
            raise ConfigError(f"set both {ENV_BASE_URL} and {ENV_MODEL} (or neither) to use an LLM")
        return cls(base, model, os.environ.get(ENV_API_KEY))

    def chat(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        temperature: float | int = 0.0,
        max_tokens: int = 512,
    ) -> str:
        """The assistant's reply text to ``messages``."""
        body = json.dumps(
            {
                "model": self.model,
                "messages": list(messages),
                "temperature": temperature,
                "max_tokens": max_tokens,
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        return self._content(self._post(request))

    def _post(self, request: urllib.request.Request) -> Any:
        for attempt in range(self.retries):
            try:
                return self._post_once(request)
            except LfpMechError as err:
                if not _transient(err.__cause__):
                    raise
                wait = self.retry_wait * 2**attempt
                logger.warning(
                    "%s; retrying in %.0f s (%d of %d)", err, wait, attempt + 1, self.retries
                )
                time.sleep(wait)
        return self._post_once(request)

    def _post_once(self, request: urllib.request.Request) -> Any:
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as err:
            detail = err.read().decode("utf-8", "replace")[:300]
            raise LfpMechError(
                f"LLM endpoint {self.url} answered HTTP {err.code}: {detail}. "
                f"Check {ENV_MODEL} and {ENV_API_KEY}."
            ) from err
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            raise LfpMechError(
                f"cannot reach the LLM endpoint {self.url} ({err}); check "
                f"{ENV_BASE_URL} or unset it to use the offline labeler"
            ) from err

    def _content(self, data: Any) -> str:
        try:
            return str(data["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError) as err:
            raise LfpMechError(
                f"LLM endpoint {self.url} returned no choices[0].message.content: {str(data)[:300]}"
            ) from err


def _transient(error: BaseException | None) -> bool:
    """Worth a retry: a rate limit, a server-side error, a timeout or a lost connection (not a
    bad request, a bad key or an unknown model)."""
    if isinstance(error, urllib.error.HTTPError):
        return error.code in (408, 429) or error.code >= 500
    return isinstance(error, (urllib.error.URLError, TimeoutError, ConnectionError))


@dataclass(frozen=True)
class LLMDescription:
    """Bills et al. (2023) style explanation of one feature."""

    explanation: str
    score: float
    """Pearson correlation of simulated and true activations on held-out contexts."""
    task_related: bool
    n_tokens_scored: int


_EXPLAIN_SYSTEM = (
    "We're studying neurons in a neural network. Each neuron looks for some particular thing in "
    "a short document. Look at the parts of the document the neuron activates for and summarize "
    "in a single sentence what the neuron is looking for. Don't list examples of words.\n\n"
    "The activation format is token<tab>activation. Activation values range from 0 to 10. A "
    "neuron finding what it's looking for is represented by a non-zero activation value. The "
    "higher the activation value, the stronger the match."
)
_SIMULATE_SYSTEM = (
    "We're studying neurons in a neural network. Each neuron looks for some particular thing in "
    "a short document. Look at an explanation of what the neuron does, and try to predict its "
    "activations on each token.\n\nThe activation format is token<tab>activation, activations go "
    'from 0 to 10, "unknown" indicates an unknown activation. Most activations will be 0.'
)
_LEAD = "the main thing this neuron does is find"


def discretize(acts: Sequence[float], max_activation: float | int) -> list[int]:
    """Activations as integers 0–10 relative to ``max_activation`` (Bills et al.'s format)."""
    if max_activation <= 0:
        return [0 for _ in acts]
    return [int(min(10, max(0, round(10 * a / max_activation)))) for a in acts]


def _escape(token: str) -> str:
    return token.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def _block(tokens: Sequence[str], values: Sequence[int | str]) -> str:
    lines = [f"{_escape(t)}\t{v}" for t, v in zip(tokens, values, strict=True)]
    return "<start>\n" + "\n".join(lines) + "\n<end>"


def _parse_simulation(reply: str, n: int) -> list[float]:
    values = []
    for line in reply.splitlines():
        if "\t" not in line:
            continue
        try:
            values.append(float(line.rsplit("\t", 1)[1].strip()))
        except ValueError:
            continue
    if len(values) != n:
        logger.warning(
            "LLM simulation returned %d values for %d tokens; padding/truncating", len(values), n
        )
    return (values + [0.0] * n)[:n]


def describe_with_llm(
    examples: Sequence[ActivatingExample],
    client: LLMClient,
    *,
    task_description: str = DEFAULT_TASK,
    label: str = "1",
) -> LLMDescription:
    """Explain a feature from half of its top contexts; simulate and score on the other half.

    Even-ranked examples go to the explanation prompt, odd-ranked ones are simulated (with a
    single example, it is used for both). The score is Pearson's r between the simulated 0–10
    values and the true activations over all simulated tokens (0 when either is constant).
    """
    if not examples:
        raise ConfigError("describe_with_llm: no activating examples given")
    max_act = max(max(e.context_acts, default=0.0) for e in examples)
    shown = list(examples[0::2])
    held = list(examples[1::2]) or shown
    blocks = "\n".join(_block(e.context, discretize(e.context_acts, max_act)) for e in shown)
    prompt = (
        f"Neuron {label}\nActivations:\n{blocks}\n\nExplanation of neuron {label} behavior: {_LEAD}"
    )
    explanation = (
        client.chat(
            [{"role": "system", "content": _EXPLAIN_SYSTEM}, {"role": "user", "content": prompt}]
        )
        .strip()
        .rstrip(".")
    )
    simulated, true = [], []
    for e in held:
        simulated += _simulate(client, e, explanation, label)
        true += list(e.context_acts)
    related = _is_task_related(client, explanation, task_description)
    return LLMDescription(explanation, _pearson(simulated, true), related, len(true))


def _simulate(
    client: LLMClient, example: ActivatingExample, explanation: str, label: str
) -> list[float]:
    """The LLM's 0–10 guess of the activation on each token of ``example``'s context."""
    unknown = _block(example.context, ["unknown"] * len(example.context))
    content = (
        f"Neuron {label}\nExplanation of neuron {label} behavior: {_LEAD} "
        f"{explanation}.\nActivations:\n{unknown}"
        '\n\nReply with the same lines, replacing each "unknown" with a number from '
        "0 to 10."
    )
    reply = client.chat(
        [{"role": "system", "content": _SIMULATE_SYSTEM}, {"role": "user", "content": content}]
    )
    return _parse_simulation(reply, len(example.context))


def _is_task_related(client: LLMClient, explanation: str, task_description: str) -> bool:
    content = (
        f"A language model was fine-tuned for this task: {task_description}.\n"
        f"One of its features is explained as: the main thing this feature does is find "
        f"{explanation}.\nIs this feature related to the fine-tuning task? Answer with one "
        "word: yes or no."
    )
    verdict = client.chat([{"role": "user", "content": content}], max_tokens=5)
    return verdict.strip().lower().startswith("yes")


def _pearson(a: Sequence[float], b: Sequence[float]) -> float:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])
