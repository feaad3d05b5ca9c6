"""Self-translation: tag extraction (incl. malformed outputs) and failure accounting through an Engine."""

from __future__ import annotations

import pytest
from engines import ScriptedEngine

from polyrise.generation import ChatRequest, Generator
from polyrise.generation.cache import GenerationCache
from polyrise.records import Prompt, Response
from polyrise.self_translation import cross_translate, extract_translation, translate_prompts
from polyrise.settings import SamplingSettings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<translated>\nHola mundo</translated>", "Hola mundo"),
        ("<translated>\n  Hola mundo  \n</translated>\nThis means hello world.", "Hola mundo"),
        ("<translated>\nHola mundo", "Hola mundo"),  # closing tag missing at the end of output
        ("<translated>Línea uno\nLínea dos</translated>", "Línea uno\nLínea dos"),
        ("<translated>\nHola\n<sentence>Hello</sentence>", "Hola"),  # went on to echo the source
        ("<translated><sentence>Hola</sentence></translated>", "Hola"),  # wrapped in the wrong tag too
        ("Sure! <translated>Bonjour</translated>", "Bonjour"),
        ("<translated>\n   </translated>", None),
        ("<translated></translated>", None),
        ("<TRANSLATED>Hola</Translated> more", "Hola"),  # tags in another case are still tags
        ("<translated>\n<Spanish>\n<Translated></Translated>", None),  # only markup inside
        ("<translated>12 + 7 = 19</translated>", "12 + 7 = 19"),
        ("Hola mundo", None),  # no tags at all
        ("", None),
    ],
)
def test_extract_translation(text, expected):
    assert extract_translation(text) == expected


def test_translate_prompts_drops_failures_and_keeps_attempts(tmp_path):
    engine = ScriptedEngine({"into Spanish": "Hola</translated>", "into German": "I cannot translate this."})
    gen = Generator(engine, GenerationCache(tmp_path / "c.sqlite"))
    source = [Prompt(id="1", lang="en", instruction="Hello")]
    prompts, attempts, _ = translate_prompts(gen, source, ["es", "de"], SamplingSettings())
    # The extraction sees the primed "<translated>\n" prefix, so the German reply is taken as text;
    # only an empty body counts as failure.
    assert {(p.lang, p.instruction) for p in prompts} == {
        ("en", "Hello"),
        ("es", "Hola"),
        ("de", "I cannot translate this."),
    }
    assert [a.lang for a in attempts] == ["es", "de"]
    assert "</translated>" in engine.calls[0].stop


def test_translation_failure_is_none_not_kept(tmp_path):
    engine = ScriptedEngine({"into Spanish": "   </translated>"})
    gen = Generator(engine, GenerationCache(tmp_path / "c.sqlite"))
    prompts, attempts, _ = translate_prompts(
        gen, [Prompt(id="1", lang="en", instruction="Hi")], ["es"], SamplingSettings()
    )
    assert [p.lang for p in prompts] == ["en"]
    assert attempts[0].output is None and attempts[0].raw == "   </translated>"


def test_cross_translate_builds_both_directions(tmp_path):
    engine = ScriptedEngine({"into Spanish": "Respuesta", "into English": "Answer"})
    gen = Generator(engine, GenerationCache(tmp_path / "c.sqlite"))
    responses = [
        Response(id="1", lang="en", prompt="Q", output="An answer"),
        Response(id="1", lang="es", prompt="P", output="Una respuesta"),
        Response(id="2", lang="es", prompt="P", output="Sin inglés"),  # no English answer: nothing to pair
    ]
    out = cross_translate(gen, responses, "en", ["es"], SamplingSettings())
    assert {(t.id, t.src_lang, t.lang, t.source, t.output) for t in out} == {
        ("1", "en", "es", "An answer", "Respuesta"),
        ("1", "es", "en", "Una respuesta", "Answer"),
    }


def test_lidr_reference_template_is_the_released_wording():
    """`lidr-reference`: TRANS_INSTRUCTION of ZNLP/Language-Imbalance-Driven-Rewarding (utils/trans_prompts.py:1-5,
    commit bd9764e) with LANGUAGES["fr"] = "French", as utils/translate.py:88 fills it."""
    from polyrise.templates import translation_prompt

    assert translation_prompt("Hello, world.", "en", "fr", "lidr-reference") == (
        "Please translate the following sentences into French. The input sentences are wrapped by <sentence> and "
        "</sentence>:\n\n<sentence>\nHello, world.\n</sentence>\n\n"
        "The translated result should be wrapped by <translated> and </translated>.\n"
    )
    assert translation_prompt("Hello, world.", "en", "fr") != translation_prompt(
        "Hello, world.", "en", "fr", "lidr-reference"
    )


def test_system_prompt_and_template_reach_the_rendered_prompt(tmp_path):
    """The generator's system prompt opens every chat it answers, translates and scores (so the cache key changes
    with it); the translation template is the user turn."""
    engine = ScriptedEngine({"translate": "<translated>\nBonjour</translated>"})
    cache = GenerationCache(tmp_path / "c.sqlite")
    system = "You are a helpful assistant."
    generator = Generator(engine, cache, system_prompt=system)
    out = translate_prompts(
        generator,
        [Prompt(id="1", lang="en", instruction="Hello")],
        ["fr"],
        SamplingSettings(),
        template="lidr-reference",
    )
    assert [p.instruction for p in out[0]] == ["Hello", "Bonjour"]
    (request,) = engine.seen
    assert request.messages[0] == {"role": "system", "content": system}
    assert request.messages[1]["content"].startswith("Please translate the following sentences into French.")
    assert generator.render(ChatRequest.user("Hi")).startswith(f"<system>{system}\n<user>Hi")
    plain = Generator(engine, cache)  # the same cache: without the system prompt it is another prompt
    translate_prompts(
        plain, [Prompt(id="1", lang="en", instruction="Hello")], ["fr"], SamplingSettings(), template="lidr-reference"
    )
    assert len(engine.seen) == 2 and engine.seen[1].messages[0]["role"] == "user"
