"""What an explanation job will cost before it starts: requests, tokens, time and money (rough, stated as such)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from saecore.features import Context
from saecore.text import plural

CHARS_PER_TOKEN = 4.0  # typical for English text with BPE tokenizers
DECODE_TOKENS_PER_S = 100.0  # measured: SmolLM2-135M on 2 cores via llama.cpp
PROMPT_TOKENS_PER_S = 1000.0


@dataclass(frozen=True)
class ExplainPlan:
    """Estimated size of a job; `already` features have a stored explanation by the same explainer."""

    features: int
    without_contexts: int
    already: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    cost: float

    def summary(self) -> str:
        duration = f"{self.seconds:.0f} s" if self.seconds < 120 else f"{self.seconds / 60:.1f} min"
        return (f"{plural(self.features, 'feature')} ({self.already:,} already explained by this model, "
                f"{self.without_contexts:,} without contexts): ≈{self.prompt_tokens:,} prompt + "
                f"≤{self.completion_tokens:,} completion tokens, ≈{duration}, ≈${self.cost:.4f}")


def estimate(contexts: Mapping[int, Sequence[Context]], features: Sequence[int], max_tokens: int, concurrency: int = 1,
             already: Sequence[int] = (), price_in_per_m: float = 0.0, price_out_per_m: float = 0.0,
             n_top: int = 10, n_quantile: int = 3, decode_tps: float = DECODE_TOKENS_PER_S,
             prompt_tps: float = PROMPT_TOKENS_PER_S) -> ExplainPlan:
    """Tokens from the real prompts (characters / 4), time from decode and prompt speeds, cost from $ per 1M tokens."""
    from saecore.prompts import explain_messages

    done = set(int(f) for f in already)
    wanted = [int(f) for f in dict.fromkeys(features)]
    todo = [f for f in wanted if f not in done]
    prompt_chars, n_requests, missing = 0, 0, 0
    for f in todo:
        ctx = [c for c in contexts.get(f, []) if any(a > 0 for a in c.activations)]
        if not ctx:
            missing += 1
            continue
        n_requests += 1
        prompt_chars += sum(len(m["content"]) for m in explain_messages(ctx, n_top, n_quantile))
    prompt_tokens = int(round(prompt_chars / CHARS_PER_TOKEN))
    completion_tokens = n_requests * int(max_tokens)
    seconds = (prompt_tokens / prompt_tps + completion_tokens / decode_tps) / max(1, int(concurrency))
    cost = (prompt_tokens * price_in_per_m + completion_tokens * price_out_per_m) / 1e6
    return ExplainPlan(len(wanted), missing, len(wanted) - len(todo), prompt_tokens, completion_tokens, seconds, cost)


def parse_indices(text: str, d_sae: int) -> list[int]:
    """Feature indices typed by a user ('3, 17 42'), checked against the run's d_sae; order kept, repeats dropped."""
    out = []
    for part in text.replace(",", " ").split():
        if not part.isdigit():
            raise ValueError(f"{part!r} is not a feature index")
        i = int(part)
        if i >= d_sae:
            raise ValueError(f"feature {i} is out of range (the run has {plural(d_sae, 'feature')})")
        out.append(i)
    return list(dict.fromkeys(out))
