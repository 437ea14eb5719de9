"""Main moving objects of a clip from its caption: an instruction-tuned language model (transformers
AutoModelForCausalLM + AutoTokenizer with a chat template) answers with JSON, which is parsed and
validated; a malformed answer is asked again (sampling), and after `retries` more tries the clip fails
with the reason. Or the objects come from the input list (`--objects-from given`)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from ...errors import ModelError
from ...perception.grounding import normalise_name

DEFAULT_LLM = "Qwen/Qwen2.5-0.5B-Instruct"

SYSTEM_PROMPT = (
    "You read a video caption and list the main objects that move in the video. "
    'Answer with JSON only, exactly in this form: {"objects": ["<object>", ...]}. '
    "Each object is a short noun phrase taken from the caption (one to four words, like "
    '"brown dog" or "red car"), most important first, at most {max_objects}. '
    "Leave out the background, the scenery, the weather and the camera."
)

# One worked example shown to the model before the caption (small models follow it closely).
EXAMPLE = ("A man in a blue shirt walks his dog along a beach while waves roll in.",
           '{"objects": ["man", "dog"]}')

MAX_WORDS = 6
MAX_CHARS = 60


class ObjectsAnswerError(ValueError):
    """A language-model answer that is not a valid list of objects; the message says why."""


def validate_objects(items, max_objects: int = 5) -> list[str]:
    """A list of names -> normalised, de-duplicated names (at most max_objects, in order).
    ObjectsAnswerError when it is not a list of short names or it is empty."""
    if not isinstance(items, list):
        raise ObjectsAnswerError(f"'objects' must be a JSON list, got {type(items).__name__}")
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ObjectsAnswerError(f"object {item!r} is not a string")
        name = normalise_name(item)
        if not name:
            continue
        if len(name) > MAX_CHARS or len(name.split()) > MAX_WORDS or "\n" in name:
            raise ObjectsAnswerError(f"object {item[:80]!r} is not a short noun phrase")
        if name not in out:
            out.append(name)
    if not out:
        raise ObjectsAnswerError("no objects in the answer")
    return out[:max_objects]


def parse_objects(answer: str, max_objects: int = 5) -> list[str]:
    """Parse a model answer: a JSON object {"objects": [...]} or a bare JSON list, possibly inside a
    ```json fence or after some words. Returns validated names; raises ObjectsAnswerError."""
    if not isinstance(answer, str) or not answer.strip():
        raise ObjectsAnswerError("empty answer")
    text = answer.strip()
    fence = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    if fence:
        text = fence.group(1).strip()
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        raise ObjectsAnswerError("no JSON in the answer")
    try:
        value, _ = json.JSONDecoder().raw_decode(text[min(starts):])
    except json.JSONDecodeError as e:
        raise ObjectsAnswerError(f"malformed JSON ({e.msg})") from None
    if isinstance(value, dict):
        if "objects" not in value:
            raise ObjectsAnswerError(f"JSON object without 'objects' (keys: {sorted(value)[:5]})")
        value = value["objects"]
    return validate_objects(value, max_objects)


@dataclass
class ObjectsResult:
    """The objects of one caption, or the reason there are none; `answers` are the model's raw
    answers, one per try."""

    objects: list[str] | None = None
    error: str | None = None
    answers: list[str] = field(default_factory=list)


def _short(text: str, n: int = 120) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n] + "..."


class LanguageModelObjects:
    """Ask a chat language model for the moving objects of captions (batched).

    model: a causal LM; tokenizer: its tokenizer with a chat template; retries: extra tries after a
    malformed answer (tries after the first sample with `temperature`)."""

    def __init__(self, model, tokenizer, max_objects: int = 5, retries: int = 2,
                 max_new_tokens: int = 64, temperature: float = 0.7, seed: int = 0):
        if getattr(tokenizer, "chat_template", None) is None:
            raise ModelError("the language model's tokenizer has no chat template "
                             "(use an instruction-tuned model)")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"  # decoder-only batched generation
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.max_objects = int(max_objects)
        self.retries = int(retries)
        self.max_new_tokens = int(max_new_tokens)
        self.temperature = float(temperature)
        self.seed = int(seed)

    @classmethod
    def from_pretrained(cls, name: str = DEFAULT_LLM, device: str = "cpu", dtype=None, **kwargs):
        """Load any local folder or hub id (downloads happen only at the user's site)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ...hub import check_transformers_folder, resolve_pretrained

        if dtype is None:
            dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
        where = str(resolve_pretrained(name, "language model"))
        check_transformers_folder(where, "language model")  # no code from the folder (auto_map)
        try:
            tokenizer = AutoTokenizer.from_pretrained(where)
            model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype)
        except (OSError, ValueError) as e:
            raise ModelError(f"{name}: cannot load the language model ({e})") from None
        return cls(model.to(device), tokenizer, **kwargs)

    def messages(self, caption: str) -> list[dict]:
        system = SYSTEM_PROMPT.replace("{max_objects}", str(self.max_objects))
        return [{"role": "system", "content": system},
                {"role": "user", "content": f"Caption: {EXAMPLE[0]}"},
                {"role": "assistant", "content": EXAMPLE[1]},
                {"role": "user", "content": f"Caption: {caption}"}]

    def generate(self, captions: list[str], attempt: int = 0) -> list[str]:
        """One answer per caption, in one batch; greedy on the first try, sampled on retries."""
        import torch

        texts = [self.tokenizer.apply_chat_template(self.messages(c), tokenize=False,
                                                    add_generation_prompt=True) for c in captions]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(self.model.device) for k, v in enc.items()}
        kwargs = dict(max_new_tokens=self.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id)
        if attempt == 0:
            kwargs.update(do_sample=False)
        else:
            torch.manual_seed(self.seed + attempt)
            kwargs.update(do_sample=True, temperature=self.temperature, top_p=0.95)
        with torch.no_grad():
            out = self.model.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1]:]
        return self.tokenizer.batch_decode(new, skip_special_tokens=True)

    def __call__(self, captions: list[str]) -> list[ObjectsResult]:
        """Objects for each caption: tries again (only the captions still without a valid answer)
        up to `retries` times, then gives the reason."""
        results = [ObjectsResult() for _ in captions]
        todo = []
        for i, c in enumerate(captions):
            if c and c.strip():
                todo.append(i)
            else:
                results[i].error = "no caption to find objects in"
        last_error: dict[int, str] = {}
        for attempt in range(self.retries + 1):
            if not todo:
                break
            answers = self.generate([captions[i] for i in todo], attempt)
            still = []
            for i, answer in zip(todo, answers):
                results[i].answers.append(answer)
                try:
                    results[i].objects = parse_objects(answer, self.max_objects)
                except ObjectsAnswerError as e:
                    last_error[i] = str(e)
                    still.append(i)
            todo = still
        for i in todo:
            tries = len(results[i].answers)
            results[i].error = (f"language model answer not valid after {tries} tries: "
                                f"{last_error[i]}; last answer: {_short(results[i].answers[-1])!r}")
        return results


class GivenObjects:
    """Objects given with each source (`--objects-from given`), validated like a model's answer."""

    def __init__(self, max_objects: int = 5):
        self.max_objects = int(max_objects)

    def __call__(self, given: list[list[str] | None]) -> list[ObjectsResult]:
        out = []
        for names in given:
            if not names:
                out.append(ObjectsResult(error="no objects given for this video (the input's "
                                               "'objects' column is empty)"))
                continue
            try:
                out.append(ObjectsResult(objects=validate_objects(list(names), self.max_objects)))
            except ObjectsAnswerError as e:
                out.append(ObjectsResult(error=f"given objects: {e}"))
        return out
