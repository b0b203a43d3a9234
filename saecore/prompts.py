"""Versioned prompt templates for explaining features and judging explanation similarity, and answer parsing."""

from __future__ import annotations

import re
from collections.abc import Sequence

from saecore.features import Context

# Bump whenever a template or the context formatting changes: cached answers are keyed by it.
PROMPT_VERSION = "explain-v1"
JUDGE_VERSION = "judge-v1"
MARK_OPEN, MARK_CLOSE = "<<", ">>"

EXPLAIN_SYSTEM = ("Each line is a text excerpt. The important word is marked <<like this>>. Say in a few words "
                  "what the marked words have in common.")
# Short few-shot examples: small models copy the answer format from them. Listing the marked words first helps
# a small model look at them instead of continuing the excerpts.
EXPLAIN_EXAMPLES = (
    ("Marked words: cat | kitten | cats\nExcerpts:\nThe <<cat>> sat.\nMy <<kitten>> sleeps.\nTwo <<cats>> play.",
     "cats"),
    ("Marked words: 1856 | 1999 | 1812\nExcerpts:\nBorn in <<1856>>, he\nIn <<1999>> we\nthe war of <<1812>>",
     "years"),
)
JUDGE_SYSTEM = ("You compare two short descriptions of language model features. Reply with a single number "
                "from 1 (unrelated) to 10 (the same meaning).")
JUDGE_EXAMPLES = (
    ("A: cats and kittens\nB: pet animals such as cats", "8"),
    ("A: years written as numbers\nB: the word 'and'", "1"),
)
_PREFIX = re.compile(r"^\s*(?:the\s+)?(?:explanation|label|answer|feature|description)\s*[:\-]\s*", re.I)


def _clean_token(token: str) -> str:
    """Plain text of a stored token: stored contexts show spaces as '·', newlines as '⏎' and tabs as '→'
    (saecore.activations.display_token); an excerpt stays on one line, so a newline is written as \\n."""
    return (token.replace("·", " ").replace("→", " ").replace("⏎", "\\n").replace("\n", "\\n")
            .replace("\r", ""))


def mark_tokens(tokens: Sequence[str], activations: Sequence[float], threshold: float = 0.0,
                relative: float = 0.0) -> str:
    """Join tokens into text, wrapping each run of consecutive active tokens in << >>.

    A token is active when its activation is > max(threshold, 0) and >= relative × the excerpt's largest
    activation (relative 0.5 marks only the peaks of a feature that fires on many tokens of the window).
    """
    cut = relative * max(activations, default=0.0)
    parts: list[str] = []
    span: list[str] = []

    def close() -> None:
        if span:
            text = "".join(span)
            lead = text[: len(text) - len(text.lstrip())]  # keep a token's leading space outside the marks
            parts.append(f"{lead}{MARK_OPEN}{text.strip()}{MARK_CLOSE}" if text.strip() else text)
            span.clear()

    for tok, act in zip(tokens, activations):
        tok = _clean_token(tok)
        if act > max(threshold, 0.0) and act >= cut:
            span.append(tok)
        else:
            close()
            parts.append(tok)
    close()
    return "".join(parts).strip()


def select_contexts(contexts: Sequence[Context], n_top: int = 10, n_quantile: int = 3) -> list[Context]:
    """The strongest `n_top` examples followed by `n_quantile` lower-activation samples spread over their list."""
    top = [c for c in contexts if c.kind == "top"][:n_top]
    rest = [c for c in contexts if c.kind != "top"]
    if n_quantile <= 0 or not rest:
        return top
    step = max(len(rest) / n_quantile, 1.0)
    picks = sorted({int(i * step) for i in range(n_quantile) if int(i * step) < len(rest)})
    return top + [rest[i] for i in picks]


# Only a context's strongest tokens are marked: at least this fraction of its peak activation.
MARK_RELATIVE = 0.5
MAX_LISTED_WORDS = 12


def explain_prompt(contexts: Sequence[Context]) -> str:
    """The user turn for one feature: its marked words (distinct, strongest contexts first), then its excerpts."""
    lines = [mark_tokens(c.tokens, c.activations, relative=MARK_RELATIVE) for c in contexts]
    words = list(dict.fromkeys(w.strip() for line in lines for w in re.findall(r"<<(.+?)>>", line)))
    return f"Marked words: {' | '.join(words[:MAX_LISTED_WORDS])}\nExcerpts:\n" + "\n".join(lines)


def explain_messages(contexts: Sequence[Context], n_top: int = 10, n_quantile: int = 3) -> list[dict]:
    """Chat messages asking for a one-line explanation of the feature behind `contexts`."""
    messages = [{"role": "system", "content": EXPLAIN_SYSTEM}]
    for question, answer in EXPLAIN_EXAMPLES:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    messages.append({"role": "user", "content": explain_prompt(select_contexts(contexts, n_top, n_quantile))})
    return messages


def judge_messages(a: str, b: str) -> list[dict]:
    """Chat messages asking for a 1-10 similarity score of two explanations."""
    messages = [{"role": "system", "content": JUDGE_SYSTEM}]
    for question, answer in JUDGE_EXAMPLES:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    messages.append({"role": "user", "content": f"A: {a.strip()}\nB: {b.strip()}"})
    return messages


# Answers that only name the task's own vocabulary say nothing about the feature.
GENERIC_ANSWERS = frozenset({"excerpt", "excerpts", "sentence", "sentences", "text", "word", "words", "marked words",
                             "marked word", "the marked words", "tokens", "token"})


def parse_explanation(text: str | None, max_chars: int = 200) -> str | None:
    """The explanation in a model's answer (first non-empty line, prefixes, quotes and << >> marks removed), or None
    when there is none or it only names the task's own vocabulary ('excerpt', 'words')."""
    if text is None:
        return None
    for line in str(text).replace(MARK_OPEN, "").replace(MARK_CLOSE, "").splitlines():
        line = _PREFIX.sub("", line.strip())
        for _ in range(2):  # quotes and a final period, in either order
            line = line.strip(" \"'`*").rstrip(" .")
        if line:
            return None if line.lower().rstrip(":") in GENERIC_ANSWERS else line[:max_chars]
    return None


def parse_judge_score(text: str | None) -> int | None:
    """The first integer 1-10 in a judge's answer, or None."""
    m = re.search(r"\b(10|[1-9])\b", text or "")
    return int(m.group(1)) if m else None


# --------------------------------------------------------------------------- scoring explanations

# Bump whenever a scoring template or the excerpt formatting changes: cached judge answers are keyed by it.
SCORE_VERSION = "score-v2"
DETECTION_SYSTEM = ("A feature of a language model fires on some text excerpts and not on others. Given a short "
                    "explanation of the feature, decide for each numbered excerpt whether the feature fires on it: "
                    "1 if it does, 0 if it does not. Reply only with the list of 1s and 0s.")
FUZZING_SYSTEM = ("A feature of a language model fires on certain words. In each numbered excerpt some words are "
                  "marked <<like this>>: in some excerpts they are the words the feature fires on, in others the "
                  "marks were put on random words. Given a short explanation of the feature, decide for each excerpt "
                  "whether its marks are correct: 1 if they are, 0 if they are not. Reply only with the list of 1s "
                  "and 0s.")
# The worked example shown before each question: (excerpt, fuzzing version, fires). It is cut to as many
# excerpts as the question has, since small judges copy the example's answer length.
SHOT_EXPLANATION = "names of fruits"
SHOT_EXCERPTS = (
    ("I ate an apple today", "I ate an <<apple>> today", 1),
    ("The train left at noon", "The <<train>> left at noon", 0),
    ("She sells ripe bananas", "She sells ripe <<bananas>>", 1),
    ("He paid the bill by card", "He paid the <<bill>> by card", 0),
    ("A bowl of cherries and plums", "A bowl of <<cherries>> and <<plums>>", 1),
    ("The meeting ran late again", "The meeting <<ran>> late again", 0),
    ("Lemons are sour", "<<Lemons>> are sour", 1),
    ("Close the window, please", "Close the <<window>>, please", 0),
    ("Grapes grow on vines", "<<Grapes>> grow on vines", 1),
    ("The printer is out of paper", "The <<printer>> is out of paper", 0),
)
_BINARY_WORDS = {"1": 1, "0": 0, "true": 1, "false": 0, "yes": 1, "no": 0}


def plain_text(tokens: Sequence[str]) -> str:
    """Stored tokens joined into one line of plain text (no marks)."""
    return "".join(_clean_token(t) for t in tokens).strip()


def scoring_prompt(explanation: str, excerpts: Sequence[str]) -> str:
    """The user turn of a scoring question: the explanation, numbered excerpts and the expected answer length."""
    lines = "\n".join(f"{i}. {text}" for i, text in enumerate(excerpts, 1))
    return (f"Explanation: {explanation.strip()}\nExcerpts:\n{lines}\n"
            f"Reply with a list of {len(excerpts)} values, each 1 or 0.")


def _scoring_messages(system: str, marked: bool, explanation: str, excerpts: Sequence[str]) -> list[dict]:
    """System turn, one worked example with as many excerpts as the question, then the question."""
    shot = [SHOT_EXCERPTS[i % len(SHOT_EXCERPTS)] for i in range(len(excerpts))]
    answer = "[" + ", ".join(str(fires) for _, _, fires in shot) + "]"
    return [{"role": "system", "content": system},
            {"role": "user", "content": scoring_prompt(SHOT_EXPLANATION, [m if marked else t for t, m, _ in shot])},
            {"role": "assistant", "content": answer},
            {"role": "user", "content": scoring_prompt(explanation, excerpts)}]


def detection_messages(explanation: str, excerpts: Sequence[str]) -> list[dict]:
    """Chat messages asking which plain-text excerpts the explained feature fires on."""
    return _scoring_messages(DETECTION_SYSTEM, False, explanation, excerpts)


def fuzzing_messages(explanation: str, excerpts: Sequence[str]) -> list[dict]:
    """Chat messages asking which excerpts have their << >> marks on the words the explained feature fires on."""
    return _scoring_messages(FUZZING_SYSTEM, True, explanation, excerpts)


def parse_binary_list(text: str | None, n: int) -> tuple[int, ...] | None:
    """Exactly n 0/1 answers from a judge's reply ('[1, 0, 1]', '1 0 1', or 'Excerpt 1: yes' lines), else None."""
    if not text:
        return None
    body = str(text).strip()
    bracket = re.search(r"\[([^\[\]]*)\]", body)
    if bracket is not None:
        items = [w.strip(" '\"").lower() for w in re.split(r"[,;\s]+", bracket.group(1)) if w.strip(" '\"")]
        if len(items) == n and all(w in _BINARY_WORDS for w in items):
            return tuple(_BINARY_WORDS[w] for w in items)
        return None
    if re.fullmatch(r"[01](?:[\s,;]+[01])*", body):
        values = tuple(int(v) for v in re.findall(r"[01]", body))
        return values if len(values) == n else None
    numbered = re.findall(r"(?im)^\W*(?:excerpt|example)?\s*(\d+)\s*[:.)\-]\s*(1|0|yes|no|true|false)\b", body)
    answers = {int(i): _BINARY_WORDS[v.lower()] for i, v in numbered}
    if sorted(answers) == list(range(1, n + 1)):
        return tuple(answers[i] for i in range(1, n + 1))
    return None
