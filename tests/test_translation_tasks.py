"""Translation-task prompts ("Translate ... into French"): detection in every language of the table, the id list,
and the reference implementation's rule (their pair in L takes the English answer, untranslated, as chosen)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from polyrise.config import RunConfig, load_config
from polyrise.errors import PolyriseError
from polyrise.methods.language_imbalance import (
    TRANSLATION_REQUESTS,
    FilterSettings,
    LanguageImbalance,
    build_pairs,
    is_translation_task,
    read_translation_task_ids,
)
from polyrise.records import Response, Translation
from polyrise.settings import PromptSource
from polyrise.sources import load_prompts

EN_PROMPT = 'Translate the following sentence into French: "I think of you every day and I miss you very much."'
ES_PROMPT = 'Traduce la siguiente frase al francés: "Pienso en ti todos los días y te extraño mucho."'
Y_EN = "Je pense à toi tous les jours et tu me manques beaucoup."  # the French the task asks for
Y_ES = "Pienso en ti todos los días y te echo mucho de menos."  # the native answer did not translate
TO_ES = "Pienso en ti todos los días y te extraño muchísimo."  # T_es(y_en): the French answer "translated" away
TO_EN = "I think of you every day and I miss you a lot."


def _build(en_prompt=EN_PROMPT, to_es=TO_ES, filters=None, ids=()):
    prompts = {("1", "en"): en_prompt, ("1", "es"): ES_PROMPT}
    responses = [
        Response(id="1", lang="en", prompt=en_prompt, output=Y_EN),
        Response(id="1", lang="es", prompt=ES_PROMPT, output=Y_ES),
    ]
    translations = [
        Translation(id="1", kind="response", src_lang=src, lang=tgt, source=text, output=out, raw=out or "")
        for src, tgt, text, out in [("en", "es", Y_EN, to_es), ("es", "en", Y_ES, TO_EN)]
    ]
    return build_pairs(prompts, responses, translations, "en", ["es"], filters or FilterSettings(), None, ids)


def test_translation_task_pair_takes_the_english_answer():
    pairs, stats, _ = _build()
    by_lang = {p.lang: p for p in pairs}
    assert (by_lang["es"].prompt, by_lang["es"].chosen, by_lang["es"].rejected) == (ES_PROMPT, Y_EN, Y_ES)
    # the English pair is built as for any prompt; its chosen French answer is not language-checked
    assert (by_lang["en"].chosen, by_lang["en"].rejected) == (Y_EN, TO_EN)
    for direction in ("target", "english"):
        assert stats["es"][direction]["translation_tasks"] == stats["es"][direction]["kept"] == 1


def test_without_the_rule_the_translated_answer_is_chosen_and_the_language_filter_misfires():
    pairs, stats, _ = _build(filters=FilterSettings(detect_translation_tasks=False))
    assert [(p.lang, p.chosen) for p in pairs] == [("es", TO_ES)]
    assert stats["es"]["english"]["dropped"]["wrong_language"] == 1
    assert stats["es"]["target"]["translation_tasks"] == 0


def test_a_translation_task_needs_no_translation_of_the_english_answer():
    pairs, stats, _ = _build(to_es=None)
    assert [p.lang for p in pairs] == ["es", "en"]
    assert stats["es"]["target"]["dropped"]["translation_failure"] == 0


def test_id_list_adds_prompts_the_patterns_miss():
    typo = "Stranslate the sentence to French\nI think of you every day."  # alpagasus-7884, in the reference's list
    assert not is_translation_task(typo, "en")
    _, stats, _ = _build(en_prompt=typo)
    assert stats["es"]["target"]["translation_tasks"] == 0
    pairs, stats, _ = _build(en_prompt=typo, filters=FilterSettings(detect_translation_tasks=False), ids={"1"})
    assert stats["es"]["target"]["translation_tasks"] == 1
    assert {p.lang: p.chosen for p in pairs}["es"] == Y_EN


POSITIVE = [
    ("ar", "ترجم الجملة التالية إلى الإنجليزية: صباح الخير"),
    ("bn", "নিচের বাক্যটি ইংরেজিতে অনুবাদ করুন: আমি ভাত খাই।"),
    ("ca", "Tradueix aquesta frase a l'anglès: Bon dia."),
    ("cs", "Přeložte následující větu do angličtiny: Dobré ráno."),
    ("da", "Oversæt følgende sætning til engelsk: God morgen."),
    ("de", "Übersetze den folgenden Satz ins Englische: Guten Morgen."),
    ("de", "Bitte den folgenden Satz ins Englische übersetzen: Guten Morgen."),
    ("el", "Μετάφρασε την παρακάτω πρόταση στα αγγλικά: Καλημέρα."),
    ("en", 'Translate the following sentence into French: "The sky is blue today."'),
    ("en", "You are given the following sentence. Translate it into Spanish.\nI would like a cup of coffee."),
    ("en", 'Provide a translation from English to German for the phrase "May I have a glass of water?"'),
    ("en", "Can you translate this into Swahili?\nHello"),
    ("es", "Traduce al inglés la siguiente frase: Buenos días."),
    ("et", "Tõlgi järgmine lause inglise keelde: Tere hommikust."),
    ("fa", "جمله زیر را به انگلیسی ترجمه کنید: صبح بخیر"),
    ("fi", "Käännä seuraava lause englanniksi: Hyvää huomenta."),
    ("fr", "Traduisez la phrase suivante en anglais : Bonjour."),
    ("he", "תרגם את המשפט הבא לאנגלית: בוקר טוב"),
    ("hi", "निम्नलिखित वाक्य का अंग्रेज़ी में अनुवाद करें: सुप्रभात"),
    ("hu", "Fordítsd le angolra a következő mondatot: Jó reggelt."),
    ("id", "Terjemahkan kalimat berikut ke dalam bahasa Inggris: Selamat pagi."),
    ("it", "Traduci in inglese la seguente frase: Buongiorno."),
    ("ja", "次の文を英語に翻訳してください：おはようございます。"),  # noqa: RUF001
    ("ko", "다음 문장을 영어로 번역하세요: 좋은 아침입니다."),
    ("mr", "खालील वाक्याचे इंग्रजीत भाषांतर करा: सुप्रभात"),
    ("ne", "तलको वाक्यलाई अंग्रेजीमा अनुवाद गर्नुहोस्: शुभ प्रभात"),
    ("nl", "Vertaal de volgende zin naar het Engels: Goedemorgen."),
    ("no", "Oversett følgende setning til engelsk: God morgen."),
    ("pl", "Przetłumacz następujące zdanie na angielski: Dzień dobry."),
    ("pt", "Traduza a seguinte frase para o inglês: Bom dia."),
    ("ro", "Traduceți următoarea propoziție în engleză: Bună dimineața."),
    ("ru", "Переведите следующее предложение на английский язык: Доброе утро."),
    ("sv", "Översätt följande mening till engelska: God morgon."),
    ("sw", "Tafsiri sentensi ifuatayo kwa Kiingereza: Habari za asubuhi."),
    ("ta", "பின்வரும் வாக்கியத்தை ஆங்கிலத்தில் மொழிபெயர்க்கவும்: காலை வணக்கம்."),
    ("te", "కింది వాక్యాన్ని ఆంగ్లంలోకి అనువదించండి: శుభోదయం."),
    ("th", "แปลประโยคต่อไปนี้เป็นภาษาอังกฤษ: สวัสดีตอนเช้า"),
    ("tr", "Aşağıdaki cümleyi İngilizceye çevirin: Günaydın."),  # noqa: RUF001
    ("uk", "Перекладіть наступне речення англійською: Доброго ранку."),
    ("ur", "درج ذیل جملے کا انگریزی میں ترجمہ کریں: صبح بخیر"),
    ("vi", "Dịch câu sau sang tiếng Anh: Chào buổi sáng."),
    ("zh", "翻译成英文：早上好。"),  # noqa: RUF001
    ("zh", "请把下面的句子翻译一下：早上好。"),  # noqa: RUF001
]

NEGATIVE = [
    ("en", "What does 'translate' mean in biology?"),
    ("en", "Explain how mRNA is translated into protein."),
    ("en", "Given a sentence, translate it into a mathematical equation.\nThe sum of two numbers is five."),
    ("en", "Explain why machine translation from English to Chinese is hard."),
    ("en", "What is the best way to learn a new language?"),
    ("en", "Translate this legal jargon into plain English."),
    ("en", 'Translate the sentence: "Je suis très content."'),  # no target: the answer follows the prompt's language
    ("es", "Mi hermana traduce libros del alemán. ¿Qué opinas?"),
    ("es", "¿Qué significa la palabra traducción?"),
    ("de", "Erkläre, warum maschinelle Übersetzung schwierig ist."),
    ("fr", "Qui a traduit ce livre en français ?"),
    ("ru", "Переведите 100 градусов Фаренгейта в градусы Цельсия."),  # a unit conversion
    ("zh", "机器翻译的历史是什么？"),  # noqa: RUF001
    ("ja", "機械翻訳について説明してください。"),
    ("ko", "주어진 문장을 수학 방정식으로 번역하세요."),
    ("th", "แปลกมากที่ฝนตกวันนี้"),  # "strange", not "translate"
    ("sw", "Tafsiri ya ndoto hii ni nini?"),  # "the interpretation of this dream"
    ("bn", "অনুবাদ কী?"),
    ("te", "అనువాదం అంటే ఏమిటి?"),
    ("vi", "Dịch vụ khách hàng của bạn thế nào?"),  # "service"
    ("ar", "ما هي الترجمة الآلية؟"),
    ("qaa", "Translate the following sentence into French: hello."),  # no patterns: the id list only
]


@pytest.mark.parametrize(("lang", "text"), POSITIVE)
def test_detects_translation_requests(lang, text):
    assert is_translation_task(text, lang)


@pytest.mark.parametrize(("lang", "text"), NEGATIVE)
def test_leaves_other_prompts_alone(lang, text):
    assert not is_translation_task(text, lang)


def test_every_language_of_the_table_has_a_positive_example():
    assert set(TRANSLATION_REQUESTS) == {lang for lang, _ in POSITIVE}


def test_no_builtin_prompt_is_a_translation_task():
    for name, langs in [("quickstart", ["en"]), ("heldout", ["en", "es", "de", "fr"])]:
        prompts = load_prompts(PromptSource(source=f"builtin:{name}"), langs)
        assert [p.id for p in prompts if is_translation_task(p.instruction, p.lang)] == []


def test_reads_the_reference_id_file(tmp_path):
    path = tmp_path / "instruction_about_translate.jsonl"
    rows = [
        {"prompt": "Translate the following phrase into French.\nI miss you", "reponse": "Je t'aime", "id": "a-19"},
        {"id": 42},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    assert read_translation_task_ids(path) == {"a-19", "42"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"id": "a"}\n{"id": "b"\n', r"ids\.jsonl:2: invalid JSON"),
        ('{"id": "a"}\n{"name": "b"}\n', r"ids\.jsonl:2: id"),
    ],
)
def test_bad_id_file_is_one_error_naming_file_and_line(tmp_path, text, message):
    path = tmp_path / "ids.jsonl"
    path.write_text(text)
    with pytest.raises(PolyriseError, match=message):
        read_translation_task_ids(path)


def test_a_run_with_a_bad_id_file_stops_before_it_starts(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"filters:\n  translation_task_ids: {tmp_path / 'missing.jsonl'}\n")
    cfg = load_config(config)
    with pytest.raises(PolyriseError, match=r"missing\.jsonl: no such file"):
        LanguageImbalance(SimpleNamespace(config=cfg)).prepare()
    ids = tmp_path / "ids.jsonl"
    ids.write_text('{"id": "qs-3"}\n')
    method = LanguageImbalance(SimpleNamespace(config=RunConfig(filters={"translation_task_ids": ids})))
    method.prepare()
    assert method.translation_task_ids == {"qs-3"}
