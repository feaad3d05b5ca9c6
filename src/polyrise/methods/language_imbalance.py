"""Language Imbalance Driven Rewarding (Yang et al., arXiv 2410.08964): preference pairs from the model's answers
and their self-translations, trained with DPO + NLL against the previous iterate.

For prompt id and target language L, with y_en the English answer, y_L the native answer:
  language L: prompt_L,  chosen = T_L(y_en), rejected = y_L
  English:    prompt_en, chosen = y_en,      rejected = T_en(y_L)
A prompt that is itself a translation task ("Translate ... into French") keeps its answer's language in every
prompt language, so its pair in L takes y_en untranslated as chosen, as the reference implementation does.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator
from rich.table import Table

from polyrise.context import RunContext, RunSettings, Stage
from polyrise.errors import PolyriseError
from polyrise.evaluation.judge import JudgeItem, Judgement, judge, win_rates
from polyrise.evaluation.reward import pair_row
from polyrise.generation import Generator, answer_prompts, open_engine
from polyrise.io import iter_jsonl, read_jsonl, refuse_duplicate_ids, write_json, write_jsonl
from polyrise.langid import LangIdSettings, matches_language
from polyrise.languages import LANGUAGES
from polyrise.methods import MethodViews
from polyrise.methods._dpo_loop import (
    PROMPTS_CAPTION,
    SHOWN,
    SelfTranslatedPrompts,
    add_prompt_stats,
    pair_files,
    prompt_cells,
    reward_labels,
    train_dpo_nll,
    trained_reward,
)
from polyrise.records import DroppedPair, PreferencePair, Prompt, Response, Translation
from polyrise.self_translation import cross_translate
from polyrise.settings import MAX_COUNT, JudgeSettings, SamplingSettings, Section
from polyrise.training.settings import DPOSettings, TrainingSettings

if TYPE_CHECKING:  # torch
    pass


DROP_REASONS = (
    "translation_failure",
    "empty",
    "identical",
    "degenerate_repetition",
    "wrong_language",
    "length_ratio",
)
"""Filters in the order they are applied; a pair is counted under the first that drops it."""


_STOPS = ".!?;:\n。！？：؟।"  # noqa: RUF001
_OPENERS = r"[\"'“”‘’«»„¿¡(\[*•-]*"  # noqa: RUF001


def _first(verbs: str, polite: str = "", stops: str = _STOPS) -> str:
    """`verbs` opening a sentence (after `stops`, an opening quote or bullet, and an optional request phrase)."""
    return rf"(?:^|(?<=[{stops}]))\s*{_OPENERS}\s*(?:{polite})?(?:{verbs})"


_EN_NAMES = "|".join(sorted({lang.name for lang in LANGUAGES.values()}))
_EN_TARGET = (
    r"(?<!plain )(?<!simple )(?<!everyday )(?<!programming )(?<!computer )(?<!machine )(?<!body )\b(?:"
    + _EN_NAMES
    + r"|Latin|Mandarin|Cantonese|Tagalog|Filipino|Malay|Punjabi|Gujarati|Kannada|Malayalam|Irish|Welsh|Icelandic"
    r"|Serbian|Croatian|Bulgarian|Slovak|Slovenian|Lithuanian|Latvian|Esperanto|Sanskrit|Yoruba|Zulu|Hausa|Amharic"
    r"|Burmese|Khmer|Mongolian|Albanian|Armenian|Georgian|Basque|Galician|Maori|Hawaiian|languages?)\b"
)
_RU_TARGET = (
    r"\b(?:на|с|со)\s+(?:английск|французск|немецк|испанск|итальянск|португальск|русск|украинск|китайск|японск"  # noqa: RUF001
    r"|корейск|арабск|турецк|польск|чешск|греческ|шведск|финск|датск|норвежск|нидерландск|голландск|тайск"
    r"|вьетнамск|индонезийск|бенгальск|латинск|латын|хинди|иврит|суахили)|язык"
)

TRANSLATION_REQUESTS: dict[str, tuple[str, str | None]] = {
    "ar": (
        _first(r"ترجم(?:ي|وا|ة|ها|ه|هم)?\b", r"(?:(?:يرجى|الرجاء|رجاء|من\s+فضلك|قم|قومي|قوموا)\s+(?:ب)?)?"),  # noqa: RUF001
        r"(?:إلى|الى|ب|من)\s*(?:اللغة\s+)?ال\S+ية\b|لغة",
    ),
    "bn": (r"(?:অনুবাদ|ভাষান্তর)\s*(?:করুন|করো|করে\s*(?:দিন|দাও))", None),
    "ca": (_first(r"tradu(?:eix|ïu|ïm|ir|cció)\w*", r"si\s+us\s+plau,?\s+|(?:pots|podeu)\s+"), None),
    "cs": (_first(r"přelož\w*|překlad(?!atel)\w*", r"prosím,?\s+|(?:můžeš|můžete)\s+"), None),
    "da": (_first(r"oversæt(?!ter)\w*", r"venligst\s+|(?:kan|vil)\s+du\s+"), None),
    "de": (
        _first(r"übersetz(?!er)\w*", r"bitte\s+|(?:kannst|könntest)\s+du\s+|(?:können|könnten)\s+sie\s+")
        + r"|(?:\b(?:ins|auf)\s+\w+(?:e|isch)|sprache)\s+(?:zu\s+)?übersetz(?!er)\w*",
        None,
    ),
    "el": (_first(r"μετ[άα]φρ[άα](?:σε|στε|ση|σεις|ζε|ζετε)\b", r"παρακαλώ,?\s+"), None),
    "en": (
        _first(
            r"translat(?:e|es|ion|ions)\b",
            r"please\s+|kindly\s+|now\s+|then\s+|also\s+|(?:can|could|would|will)\s+you\s+(?:please\s+)?"
            r"|i\s+(?:need|want|would\s+like)\s+(?:you\s+)?to\s+|help\s+me\s+"
            r"|(?:provide|give|write|generate|produce|create|output|return|show)\s+(?:me\s+)?(?:an?|the)\s+(?:\w+\s+)?",
            _STOPS + ",",
        ),
        _EN_TARGET,
    ),
    "es": (
        _first(r"tradu[cz](?!tor)\w*|tradúce\w*|tradúzca\w*", r"por\s+favor,?\s+|(?:puedes|podrías|puede|podría)\s+"),
        None,
    ),
    "et": (_first(r"tõlgi\w*|tõlki(?:ge|da)\b|tõlge\b", r"palun\s+"), None),
    "fa": (r"ترجمه\s*(?:کنید|کن|نمایید)(?=\s|$|[.!؟?،:])", None),
    "fi": (_first(r"käännä\w*|kääntäkää\w*|käännös\w*", r"voisitko\s+|voitko\s+"), None),
    "fr": (
        _first(
            r"tradu(?:is\w*|ire|it|ction\w*)\b",
            r"veuillez\s+|merci\s+de\s+|(?:pouvez-vous|peux-tu|pourriez-vous|pourrais-tu)\s+"
            r"|s'il\s+(?:te|vous)\s+pla[iî]t,?\s+",
        ),
        None,
    ),
    "he": (_first(r"(?:ל)?(?:תרגם|תרגמו|תרגמי|תרגום)\b", r"(?:נא|אנא)\s+"), r"\bל\S+ית\b|שפה|בשפת"),
    "hi": (r"(?:अनुवाद|भाषांतर|ट्रांसलेट)\s*(?:करें|करो|कीजिए|कीजिये|कर\s*(?:दें|दो|दीजिए))", None),
    "hu": (_first(r"(?:le)?fordíts\w*|fordítás\w*", r"kérlek,?\s+|kérem,?\s+"), None),
    "id": (_first(r"terjemahkan\w*|terjemahan\w*", r"tolong\s+|silakan\s+|harap\s+|mohon\s+"), None),
    "it": (
        _first(r"tradu(?:c\w*|r\w*|zion\w*)", r"per\s+favore,?\s+|(?:puoi|potresti|può|potrebbe)\s+"),
        None,
    ),
    "ja": (r"(?:語|文)(?:に|へ)(?:翻訳|訳)|翻訳(?:して|しなさい|せよ)|(?<!言い)訳して", None),
    "ko": (
        r"(?:어|말)로\s*번역|번역(?:하세요|하십시오|하시오|하라|해라|해\s*(?:주세요|주십시오|보세요|줘|봐))",
        r"어로|어에서|언어",
    ),
    "mr": (r"(?:भाषांतर|अनुवाद)\s*करा(?=\s|$|[।.!?,:])", None),
    "ne": (r"अनुवाद\s*(?:गर्नुहोस्|गरिदिनुहोस्)", None),
    "nl": (
        _first(r"vertaal\w*|vertalen\b|vertaling\w*", r"graag\s+|(?:kun|kan)\s+je\s+|kunt\s+u\s+")
        + r"|\bnaar\s+het\s+\w+\s+(?:te\s+)?vertal(?!er)\w*",
        None,
    ),
    "no": (_first(r"oversett(?!er)\w*", r"vennligst\s+|(?:kan|vil)\s+du\s+"), None),
    "pl": (_first(r"przetłumacz\w*", r"proszę,?\s+|(?:czy\s+)?(?:możesz|może\s+pan|może\s+pani)\s+"), None),
    "pt": (
        _first(r"tradu[zç]\w*", r"por\s+favor,?\s+|(?:pode|podes|poderia|você\s+pode)\s+"),
        None,
    ),
    "ro": (_first(r"tradu(?:ce\w*|\b)", r"(?:vă\s+rog(?:ăm)?|te\s+rog)\s+(?:să\s+)?"), None),
    "ru": (
        _first(r"перев(?:ед|ест|од(?!чи))\w*", r"пожалуйста,?\s+|(?:можешь|можете|не\s+могли\s+бы\s+вы)\s+"),
        _RU_TARGET,
    ),
    "sv": (_first(r"översätt(?!are)\w*", r"vänligen\s+|(?:kan|skulle)\s+du\s+"), None),
    "sw": (
        _first(r"(?:ku)?tafsiri\b", r"tafadhali,?\s+|(?:unaweza|je,?\s+unaweza)\s+"),
        r"\b(?:ki(?:ingereza|swahili|faransa|hispania|spania|jerumani|reno|italia|rusi|arabu|china|japani|korea"
        r"|hindi|thai|bengali|telugu)|lugha)\b",
    ),
    "ta": (r"மொழிபெயர்க்கவும்|மொழிபெயர்த்துத்?\s*(?:தரவும்|தாருங்கள்|கொடுங்கள்)", None),
    "te": (r"అనువదించ(?:ండి|ు|గలరా|గలరు)|అనువాదం\s*చేయండి", None),
    "th": (_first(r"แปล(?!ก|ง|ว่า|ความ)", r"(?:กรุณา|โปรด|ช่วย)\s*", _STOPS + " "), None),
    "tr": (r"\w+[cç][ea]'?y[ea]\s+(?:çevir\w*|tercüme\s+ed\w*|tercüme\s+et\w*)", None),
    "uk": (_first(r"перекла(?:д(?!ач)|с)\w*", r"будь\s+ласка,?\s+|(?:можеш|можете)\s+"), None),  # noqa: RUF001
    "ur": (r"ترجمہ\s*(?:کریں|کرو|کیجیے|کیجئے|کر\s*دیں)", None),
    "vi": (
        _first(r"dịch\b(?!\s+(?:vụ|bệnh|giả|chuyển|tễ))", r"(?:hãy|vui\s+lòng|xin|bạn\s+hãy)\s+"),
        r"\b(?:sang|ra|thành)\s+tiếng\b",
    ),
    "zh": (
        r"(?:翻译|翻譯|译|譯)(?:成|为|為|到)\s*[^，,。！？\n]{0,10}?(?:语|語|文)|(?:翻译|翻譯)过来"  # noqa: RUF001
        r"|用\s*[^，,。！？\n]{1,10}?(?:语|語|文)\s*(?:翻译|翻譯)|(?:请|請)\s*(?:将|將|把)?[^。！？\n]{0,60}?(?:翻译|翻譯)"  # noqa: RUF001
        + "|"
        + _first(r"(?:翻译|翻譯)\s*(?:以下|下面|下列|这|這|该|該|此|[：:“\"「])"),  # noqa: RUF001
        None,
    ),
}
"""Per language: (a request to translate, a target language the prompt must also name, or None). The request is the
translate verb opening a sentence (after an optional "please"/"can you"), or where the language puts it (a verb-final
imperative: ja, ko, hi, bn, te, tr, ...). A target is required where the verb has other common senses: English
("translate it into an equation"), Russian (unit conversion), Swahili, Arabic, Hebrew, Vietnamese, Korean.
Matched on the source-language prompt only; languages without an entry (the sandbox clones) need the id list."""

_RULES = {
    lang: (re.compile(request, re.IGNORECASE), re.compile(target, re.IGNORECASE) if target else None)
    for lang, (request, target) in TRANSLATION_REQUESTS.items()
}


def is_translation_task(instruction: str, lang: str) -> bool:
    """Whether `instruction`, written in `lang`, asks for a translation (`TRANSLATION_REQUESTS`)."""
    rule = _RULES.get(lang)
    if rule is None:
        return False
    request, target = rule
    return request.search(instruction) is not None and (target is None or target.search(instruction) is not None)


class FilterSettings(Section):
    """The pair filters of `methods/language_imbalance.py` and its translation-task rule."""

    min_length_ratio: float = Field(default=0.3, gt=0.0, le=1000.0)
    """len(chosen) / len(rejected), in characters, must lie in [min, max]."""
    max_length_ratio: float = Field(default=3.0, gt=0.0, le=1000.0)
    repeated_line_limit: int = Field(default=5, ge=2, le=MAX_COUNT)
    """A text where one non-empty line occurs this many times is degenerate."""
    detect_translation_tasks: bool = True
    """A source prompt that asks for a translation ("Translate ... into French", `TRANSLATION_REQUESTS` of its
    language) is a translation task: its pair in L takes the English answer, untranslated, as chosen."""
    translation_task_ids: Path | None = None
    """A JSONL file of rows with an `id` (other fields ignored; the reference's `instruction_about_translate.jsonl`
    as is): these prompts are translation tasks too. A relative path is taken from the working directory."""

    @model_validator(mode="after")
    def _ordered(self) -> FilterSettings:
        if self.min_length_ratio > self.max_length_ratio:
            raise ValueError("min_length_ratio must not exceed max_length_ratio")
        return self


class RewardJudgeSettings(Section):
    """A judge of the reward itself: a sample of each iteration's kept pairs, judged in both orders."""

    judge: JudgeSettings
    sample: int = Field(default=64, ge=1, le=MAX_COUNT)
    """Pairs judged per iteration (a seeded sample of the kept pairs)."""


class _IdRow(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)
    id: str


def read_translation_task_ids(path: Path) -> frozenset[str]:
    """The `id` of every row of a JSONL file (the reference's `instruction_about_translate.jsonl` serves as is);
    a bad row is one error naming `file:line`."""
    return frozenset(row.id for row in read_jsonl(path, _IdRow))


def is_degenerate(text: str, limit: int) -> bool:
    """True when one non-empty line occurs at least `limit` times."""
    lines = Counter(line.strip() for line in text.splitlines() if line.strip())
    return bool(lines) and lines.most_common(1)[0][1] >= limit


def drop_reason(
    pair: PreferencePair,
    filters: FilterSettings,
    langid: LangIdSettings | None = None,
    others: Sequence[str] = (),
    translation_task: bool = False,
) -> str | None:
    """The first filter that rejects a complete pair, or None to keep it.

    Only the chosen side is checked for repetition and language: a degenerate or off-target
    rejected answer is exactly what DPO should push down. A translation task's chosen answer is in the language
    the task asks for, not the pair's, so it is not language-checked.
    """
    chosen, rejected = pair.chosen.strip(), pair.rejected.strip()
    if not chosen or not rejected:
        return "empty"
    if chosen == rejected:
        return "identical"
    if is_degenerate(chosen, filters.repeated_line_limit):
        return "degenerate_repetition"
    if not translation_task and matches_language(chosen, pair.lang, langid or LangIdSettings(), others) is False:
        return "wrong_language"
    ratio = len(chosen) / len(rejected)
    return None if filters.min_length_ratio <= ratio <= filters.max_length_ratio else "length_ratio"


def _empty_counts() -> dict[str, Any]:
    return {"candidates": 0, "kept": 0, "translation_tasks": 0, "dropped": dict.fromkeys(DROP_REASONS, 0)}


def build_pairs(
    prompts: dict[tuple[str, str], str],
    responses: Iterable[Response],
    translations: Iterable[Translation],
    source_lang: str,
    languages: list[str],
    filters: FilterSettings,
    langid: LangIdSettings | None = None,
    translation_task_ids: Collection[str] = (),
) -> tuple[list[PreferencePair], dict[str, dict[str, Any]], list[DroppedPair]]:
    """Pairs in both directions for every prompt id and target language, per-language stats, and the candidates
    the filters dropped, each with its reason (what the report shows per sample).

    `prompts` maps (id, lang) → instruction. Stats: {L: {"target": counts, "english": counts}} where
    "target" counts pairs in L and "english" counts English pairs built from L's answers; `translation_tasks`
    counts the candidates whose prompt is a translation task (in `translation_task_ids`, or its source prompt
    detected when `filters.detect_translation_tasks`): their pair in L has chosen = y_en.
    """
    answers = {(r.id, r.lang): r.output for r in responses}
    translated = {(t.id, t.src_lang, t.lang): t.output for t in translations if t.kind == "response"}
    stats = {lang: {"target": _empty_counts(), "english": _empty_counts()} for lang in languages}
    pairs: list[PreferencePair] = []
    dropped: list[DroppedPair] = []
    ids = sorted({pid for pid, lang in answers if lang == source_lang})
    tasks = {
        pid
        for pid in ids
        if pid in translation_task_ids
        or (filters.detect_translation_tasks and is_translation_task(prompts.get((pid, source_lang), ""), source_lang))
    }
    for lang in languages:
        for pid in ids:
            if (pid, lang) not in answers:
                continue  # the prompt's translation into `lang` failed: counted in the prompt stage
            y_en, y_l = answers[(pid, source_lang)], answers[(pid, lang)]
            task = pid in tasks
            candidates = [
                ("target", lang, y_en if task else translated.get((pid, source_lang, lang)), y_l),
                ("english", source_lang, y_en, translated.get((pid, lang, source_lang))),
            ]
            for direction, pair_lang, chosen, rejected in candidates:
                counts = stats[lang][direction]
                counts["candidates"] += 1
                counts["translation_tasks"] += task
                reason: str | None = "translation_failure"
                if chosen is not None and rejected is not None:
                    pair = PreferencePair(
                        id=pid,
                        lang=pair_lang,
                        via=lang,
                        prompt=prompts[(pid, pair_lang)],
                        chosen=chosen,
                        rejected=rejected,
                    )
                    reason = drop_reason(pair, filters, langid, [source_lang, *languages], task)
                if reason:
                    counts["dropped"][reason] += 1
                    prompt = prompts.get((pid, pair_lang), "")
                    dropped.append(
                        DroppedPair(
                            id=pid,
                            lang=pair_lang,
                            via=lang,
                            prompt=prompt,
                            chosen=chosen,
                            rejected=rejected,
                            reason=reason,
                        )
                    )
                else:
                    counts["kept"] += 1
                    pairs.append(pair)
    return pairs, stats, dropped


def write_pairs(
    config: RunSettings,
    filters: FilterSettings,
    translation_task_ids: Collection[str],
    *,
    inputs: tuple[Path, Path, Path, Path | None],
    outputs: tuple[Path, Path, Path, Path],
) -> dict[str, int]:
    """The pairs stage: `inputs` = prompts, responses, translations and (when there is one) the prompts stage's
    counts (`prompts_stats.json`); `outputs` = pairs, dropped pairs, stats and reward labels. `polyrise pairs` runs
    it too."""
    prompts_file, responses_file, translations, prompt_counts = inputs
    pairs_file, dropped_file, stats_file, reward_file = outputs
    rows = read_jsonl(prompts_file, Prompt)
    responses = read_jsonl(responses_file, Response)
    translated = read_jsonl(translations, Translation)
    refuse_duplicate_ids(prompts_file, rows, "lang")
    refuse_duplicate_ids(responses_file, responses, "lang")
    refuse_duplicate_ids(translations, translated, "kind", "src_lang", "lang")
    asked = {(p.id, p.lang) for p in rows}
    if unasked := next((r for r in responses if (r.id, r.lang) not in asked), None):
        raise PolyriseError(
            f"{responses_file}: response {unasked.id!r} in {unasked.lang!r} has no prompt in {prompts_file}"
        )
    pairs, stats, dropped = build_pairs(
        {(p.id, p.lang): p.instruction for p in rows},
        responses,
        translated,
        config.source_lang,
        config.languages,
        filters,
        config.langid,
        translation_task_ids,
    )
    add_prompt_stats(stats, prompt_counts)
    labels, reward = reward_labels(rows, pairs, config.source_lang, config.seed, responses)
    for lang in config.languages:  # the reward's accuracy, where the prompts carry gold answers
        target, english = reward.get(lang), reward.get(f"{config.source_lang}/{lang}")
        if target or english:
            stats[lang]["reward"] = {"target": target, "english": english}
    write_jsonl(reward_file, labels)
    write_json(stats_file, stats)
    write_jsonl(dropped_file, dropped)
    write_jsonl(pairs_file, pairs)
    return {"pairs": len(pairs), "dropped": len(dropped), "reward_labels": len(labels)}


class LanguageImbalance:
    """Per iteration: self-translated prompts → answers in every language → cross-translated answers → pairs →
    DPO + NLL from M(t) (its own reference) to M(t+1)."""

    name: ClassVar[str] = "language-imbalance"
    training: ClassVar[type[TrainingSettings]] = DPOSettings
    sections: ClassVar[dict[str, Any]] = {"filters": FilterSettings, "reward_judge": RewardJudgeSettings | None}
    record: ClassVar[type[BaseModel]] = PreferencePair
    data_file: ClassVar[str] = "pairs.jsonl"
    shown: ClassVar[tuple[str, ...]] = SHOWN
    train = staticmethod(train_dpo_nll)

    def __init__(self, run: RunContext) -> None:
        self.run = run
        self.prompts = SelfTranslatedPrompts(run)
        self.filters = run.config.section("filters", FilterSettings)
        self.reward_judge: RewardJudgeSettings | None = getattr(run.config, "reward_judge", None)

    @classmethod
    def check(cls, config: RunSettings) -> None:
        """Its sections validate themselves."""

    def prepare(self) -> None:
        self.prompts.source  # noqa: B018
        self.translation_task_ids  # noqa: B018

    @cached_property
    def translation_task_ids(self) -> frozenset[str]:
        path = self.filters.translation_task_ids
        return read_translation_task_ids(path) if path else frozenset()

    def files(self, t: int) -> dict[str, Path]:
        root = self.run.layout.iter_dir(t)
        names = (
            "responses",
            "translations",
            "pairs",
            "pairs_dropped",
            "reward",
            "reward_judge",
        )
        own = {name: root / f"{name}.jsonl" for name in names} | {"pairs_stats": root / "pairs_stats.json"}
        return self.prompts.files(t) | own

    def stages(self, t: int) -> list[Stage]:
        run = self.run
        cfg, gen, f = run.config, run.config.generation, self.files(t)
        return [
            self.prompts.stage(t),
            Stage(
                f"iter_{t}/generate",
                lambda: self._generate(t),
                outputs=[f["responses"]],
                inputs=[f["prompts"]],
                models=[run.model_spec(t)],
                settings=[cfg.model.model_dump(), gen.answer.model_dump(), *gen.prompting()],
            ),
            Stage(
                f"iter_{t}/translate",
                lambda: self._translate(t),
                outputs=[f["translations"]],
                inputs=[f["responses"]],
                models=run.translator_models(t),
                settings=[run.translator_settings(), gen.translate.model_dump(), *gen.prompting()],
            ),
            Stage(
                f"iter_{t}/pairs",
                lambda: self._pairs(t),
                outputs=[f["pairs"], f["pairs_dropped"], f["pairs_stats"], f["reward"]],
                inputs=[
                    f["prompts"],
                    f["prompts_stats"],
                    f["responses"],
                    f["translations"],
                    *filter(None, [self.filters.translation_task_ids]),
                ],
                settings=[cfg.source_lang, cfg.languages, self.filters.model_dump(), cfg.langid.model_dump(), cfg.seed],
                loads_model=False,
            ),
            *([self._reward_judge_stage(t)] if self.reward_judge else []),
            run.train_stage(t),
        ]

    def estimate(self) -> dict[str, int]:
        cfg = self.run.config
        n, langs = len(self.prompts.prompts(0)), len(cfg.languages)
        work = {
            "source prompts": n,
            "prompt translations": n * langs,
            "answers": n * (langs + 1),
            "answer translations": 2 * n * langs,
            "pairs": 2 * n * langs,  # both directions per prompt and language, before the filters
        }
        if self.reward_judge:
            work["judgements"] = 2 * min(self.reward_judge.sample, work["pairs"])  # both orders
        return work

    def _reward_judge_stage(self, t: int) -> Stage:
        f, reward_judge = self.files(t), self.reward_judge
        assert reward_judge is not None
        return Stage(
            f"iter_{t}/reward_judge",
            lambda: self._judge_pairs(t),
            outputs=[f["reward_judge"]],
            inputs=[f["pairs"]],
            models=[reward_judge.judge.model] if reward_judge.judge.model else [],
            settings=[reward_judge.model_dump(), self.run.config.seed],
        )

    def _judge_pairs(self, t: int) -> dict[str, Any]:
        """A seeded sample of the kept pairs, judged in both orders (chosen as the judged `output`)."""
        cfg, f, reward_judge = self.run.config, self.files(t), self.reward_judge
        assert reward_judge is not None
        pairs = read_jsonl(f["pairs"], PreferencePair)
        sample = random.Random(cfg.seed).sample(pairs, min(reward_judge.sample, len(pairs)))
        items = [JudgeItem(p.id, p.lang, p.prompt, p.chosen, p.rejected) for p in sample]
        settings = reward_judge.judge
        generator = Generator(open_engine(settings), self.run.cache)
        judgements = judge(generator, items, SamplingSettings(max_new_tokens=settings.max_new_tokens))
        rows = [asdict(replace(j, lang=pair_row(p.lang, p.via))) for j, p in zip(judgements, sample, strict=True)]
        write_jsonl(f["reward_judge"], rows)  # keyed by the pair's row (`L`, `en/L`), as the reward's accuracy
        return {"judged": len(judgements), "invalid": sum(j.invalid for j in judgements)}

    def _generate(self, t: int) -> dict[str, Any]:
        f = self.files(t)
        prompts = read_jsonl(f["prompts"], Prompt)
        generator = self.run.generator(self.run.model_spec(t))
        cached = generator.stats["cached"]
        n = write_jsonl(f["responses"], answer_prompts(generator, prompts, self.run.config.generation.answer))
        return {"responses": n, "from_cache": generator.stats["cached"] - cached}

    def _translate(self, t: int) -> dict[str, Any]:
        cfg, f = self.run.config, self.files(t)
        responses = read_jsonl(f["responses"], Response)
        translator = self.run.translator(self.run.model_spec(t))
        gen = cfg.generation
        translations = cross_translate(
            translator, responses, cfg.source_lang, cfg.languages, gen.translate, gen.translation_template
        )
        write_jsonl(f["translations"], translations)
        return {"translations": len(translations), "failures": sum(x.output is None for x in translations)}

    def _pairs(self, t: int) -> dict[str, Any]:
        f = self.files(t)
        return write_pairs(
            self.run.config,
            self.filters,
            self.translation_task_ids,
            inputs=(f["prompts"], f["responses"], f["translations"], f["prompts_stats"]),
            outputs=(f["pairs"], f["pairs_dropped"], f["pairs_stats"], f["reward"]),
        )

    def stats(self, t: int) -> dict[str, Any]:
        return json.loads(self.files(t)["pairs_stats"].read_text())

    def scores(self, t: int) -> dict[str, Any]:
        """The accuracy of the reward iteration `t` trains on (M(t)'s pairs, swapped when `swap_preferences` is:
        the control), when its prompts carry gold answers (`pairs_stats.json` has it for the pairs as built); with
        `reward_judge`, the judge's agreement with it (the win rate of what training prefers)."""
        cfg, f = self.run.config, self.files(t)
        scores = trained_reward(f["reward"], t, cfg.training, cfg.seed)
        if self.reward_judge:
            judged = [Judgement(**row) for _, row in iter_jsonl(f["reward_judge"])]
            if isinstance(cfg.training, DPOSettings) and cfg.training.swap_preferences:
                judged = [replace(j, score=None if j.score is None else 1 - j.score) for j in judged]
            scores["reward_judge"] = {f"M{t}": win_rates(judged, cfg.seed)}
        return scores

    def summary_table(self, summary: dict[str, Any]) -> Table:
        return summary_table(summary, [self.run.config.source_lang, *self.run.config.languages])

    @classmethod
    def report_views(cls, config: RunSettings) -> MethodViews:
        """Every iteration's pairs, kept and dropped, the kept ones labelled right or wrong where it could."""
        return MethodViews(pairs=pair_files(dropped="pairs_dropped.jsonl"))


_SHORT_REASONS = {
    "translation_failure": "transl",
    "empty": "empty",
    "identical": "same",
    "degenerate_repetition": "repeat",
    "wrong_language": "lang",
    "length_ratio": "ratio",
}


def _dropped(counts: dict[str, Any]) -> str:
    return ", ".join(f"{_SHORT_REASONS[r]} {n}" for r, n in counts["dropped"].items() if n) or "-"


def summary_table(summary: dict[str, Any], langs: list[str]) -> Table:
    """Per language: prompts given, self-translated and dropped by reason, pairs kept/dropped by reason,
    translation failures, off-target rate before → after."""
    t = summary["iteration"]
    table = Table(
        title=f"iteration {t}: M{t} → M{t + 1}",
        caption="dropped: "
        + ", ".join(f"{short} = {reason}" for reason, short in _SHORT_REASONS.items())
        + f"; prompts given/self-translated; {PROMPTS_CAPTION}",
    )
    for col in (
        "lang",
        "prompts given/self",
        "prompts dropped",
        "kept L/en",
        "dropped (pair in L)",
        "dropped (pair in en)",
        "transl. fail",
        f"off-target M{t}→M{t + 1}",
    ):
        table.add_column(col)
    for lang in langs:
        s = summary["stats"].get(lang)
        cells = ["-"] * 6
        if s:
            failures = (
                s["prompt_translation_failures"]
                + s["target"]["dropped"]["translation_failure"]
                + s["english"]["dropped"]["translation_failure"]
            )
            cells = [
                *prompt_cells(s),
                f"{s['target']['kept']}/{s['english']['kept']}",
                _dropped(s["target"]),
                _dropped(s["english"]),
                str(failures),
            ]
        off = summary["off_target"]
        before, after = off.get(f"M{t}", {}).get(lang), off.get(f"M{t + 1}", {}).get(lang)
        rate = "-"
        if before and after and before["n"] and after["n"]:
            rate = f"{before['off_target']:.0%} → {after['off_target']:.0%} (n={after['n']})"
        table.add_row(lang, *cells, rate)
    return table
