"""Typed records that move between stages as JSONL rows; every record carries `id` and `lang`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("an instruction must not be blank")
    return text


Instruction = Annotated[str, AfterValidator(_not_blank)]
"""An instruction a model is asked or trained on: an empty or whitespace-only one is refused where it is read (the
reader names its `file:line`), never answered or trained on."""


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Prompt(Record):
    """One instruction in one language; rows of different languages join on `id`."""

    id: str
    lang: str
    instruction: str
    answer: str | None = None
    """The gold answer, when the prompt has one (GSM-style problems): what measures the reward's accuracy."""


class Response(Record):
    """A model's answer to a prompt in the prompt's language."""

    id: str
    lang: str
    prompt: str
    output: str


class TextToTranslate(BaseModel):
    """A row `polyrise translate` reads: a prompt (`instruction`) or a response (`output`); other fields are
    ignored."""

    model_config = ConfigDict(extra="ignore")
    id: str
    lang: str
    instruction: str | None = None
    output: str | None = None


class Translation(Record):
    """A self-translation; `output` is None when no translation could be extracted (a counted failure)."""

    id: str
    kind: Literal["prompt", "response"]
    src_lang: str
    lang: str
    source: str
    output: str | None
    raw: str


class PreferencePair(Record):
    """A DPO pair in TRL's preference format plus `id`, `lang`, and `via`: the target language whose
    answers built it (equal to `lang` for target-language pairs; the target for English pairs)."""

    id: str
    lang: str
    via: str
    prompt: Instruction
    chosen: str
    rejected: str

    def trl_example(self, swap: bool = False) -> dict[str, list[dict[str, str]]]:
        """TRL's conversational preference row (`DPOTrainer` applies the chat template); `swap` exchanges chosen
        and rejected (the ablation control)."""
        chosen, rejected = (self.rejected, self.chosen) if swap else (self.chosen, self.rejected)
        return {
            "prompt": [{"role": "user", "content": self.prompt}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
        }


class DroppedPrompt(Record):
    """A self-translated prompt a check dropped (`prompts_dropped.jsonl`) before anything was generated for it:
    the source prompt, its translation (None where extraction failed) and `reason`
    (`self_translation.PROMPT_DROP_REASONS`)."""

    id: str
    lang: str
    source: str
    translation: str | None
    reason: str


class DroppedPair(Record):
    """A candidate pair a filter dropped (`pairs_dropped.jsonl`): the pair as far as it was built (`chosen` or
    `rejected` None where its translation failed) and `reason`, the first filter that dropped it
    (`methods.language_imbalance.DROP_REASONS`)."""

    id: str
    lang: str
    via: str
    prompt: str
    chosen: str | None
    rejected: str | None
    reason: str


class Samples(Record):
    """k sampled answers of one prompt in one language (Implicit Cross-Lingual Rewarding), in sample order."""

    id: str
    lang: str
    prompt: str
    outputs: list[str]


class SampleScores(Record):
    """The summed log-probs of each of a prompt's samples after `context` (the rendered scoring instruction), under
    the policy and under its reference, in sample order."""

    id: str
    lang: str
    context: str
    policy: list[float]
    reference: list[float]


class QuestionPair(Record):
    """A question-alignment SFT example: the question in `lang` (the prompt) → the same question in `target`
    (the completion, the only tokens trained on)."""

    id: str
    lang: str
    target: str
    prompt: Instruction
    completion: str

    def trl_example(self) -> dict[str, list[dict[str, str]]]:
        """TRL's conversational prompt-completion row (`SFTTrainer` applies the chat template)."""
        return {
            "prompt": [{"role": "user", "content": self.prompt}],
            "completion": [{"role": "assistant", "content": self.completion}],
        }
