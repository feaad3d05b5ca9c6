"""Bad input gets one clear error naming the file, line or key; writes are atomic."""

from __future__ import annotations

import os

import pytest

from polyrise.config import load_config
from polyrise.errors import PolyriseError
from polyrise.io import read_jsonl, write_jsonl
from polyrise.languages import get_language
from polyrise.plugins import TASKS
from polyrise.records import Prompt
from polyrise.settings import PromptSource
from polyrise.sources import load_prompts


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_quickstart_and_paper_configs_load():
    from pathlib import Path

    root = Path(__file__).parent.parent / "examples"
    assert load_config(root / "quickstart.yaml").languages == ["es", "de", "fr"]
    paper = load_config(root / "paper-llama3-8b.yaml")
    assert (paper.iterations, paper.languages, paper.training.lr) == (2, ["es", "ru", "de", "fr"], 5e-7)


def test_unknown_config_key_names_file_and_key(tmp_path):
    cfg = _write(tmp_path / "c.yaml", "name: x\ntraining:\n  betta: 0.2\n")
    with pytest.raises(PolyriseError, match=r"c\.yaml: training\.betta: Extra inputs are not permitted"):
        load_config(cfg)


def test_unknown_language_lists_known_codes(tmp_path):
    cfg = _write(tmp_path / "c.yaml", "languages: [es, xx]\n")
    with pytest.raises(PolyriseError, match=r"languages: unknown language code 'xx'; known codes: ar, bn"):
        load_config(cfg)
    with pytest.raises(PolyriseError, match="known codes"):
        get_language("klingon")


def test_bad_values_and_yaml(tmp_path):
    with pytest.raises(PolyriseError, match=r"training\.beta: Input should be greater than 0"):
        load_config(_write(tmp_path / "a.yaml", "training: {beta: -1}\n"))
    with pytest.raises(PolyriseError, match="invalid YAML"):
        load_config(_write(tmp_path / "b.yaml", "name: [unclosed\n"))
    with pytest.raises(PolyriseError, match="also listed"):
        load_config(_write(tmp_path / "d.yaml", "languages: [en, es]\n"))
    with pytest.raises(PolyriseError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "text",
    [
        "password: hunter2\nuser: sesame\n",  # a YAML file that is no run config
        'token: "hunter2\nother: [sesame\n',  # invalid YAML (PyYAML's message quotes the lines around the mistake)
        "- hunter2\n- sesame\n",
        "model: {spec: x}\n" + "".join(f"key{i}: hunter2\n" for i in range(40)),  # a config of 40 unknown keys
    ],
)
def test_a_file_that_is_no_config_gives_one_short_error_quoting_none_of_its_lines(tmp_path, text):
    link = tmp_path / "run.yaml"
    link.symlink_to(_write(tmp_path / "secrets.yaml", text))
    with pytest.raises(PolyriseError) as err:
        load_config(link)
    lines = str(err.value).splitlines()
    assert all(line.startswith(f"{link}") for line in lines) and len(lines) <= 11
    said = "".join(line.removeprefix(f"{link}") for line in lines)
    assert "hunter2" not in said and "sesame" not in said
    if text.startswith("token"):
        assert lines == [f"{link}:3:1: invalid YAML: found unexpected end of stream"]


def test_malformed_jsonl_names_file_and_line(tmp_path):
    bad = _write(tmp_path / "p.jsonl", '{"id": "1", "lang": "en", "instruction": "a"}\n\n{"id": "2", "lang": \n')
    with pytest.raises(PolyriseError, match=r"p\.jsonl:3: invalid JSON"):
        read_jsonl(bad, Prompt)
    missing = _write(tmp_path / "q.jsonl", '{"id": "1", "lang": "en"}\n')
    with pytest.raises(PolyriseError, match=r"q\.jsonl:1: instruction: Field required"):
        read_jsonl(missing, Prompt)


def test_empty_prompt_set_is_an_error(tmp_path):
    empty = _write(tmp_path / "e.jsonl", "\n")
    with pytest.raises(PolyriseError, match="has no prompts"):
        load_prompts(PromptSource(source=str(empty)), ["en"])
    with pytest.raises(PolyriseError, match="unknown built-in prompt set 'nope'; known: heldout, quickstart"):
        load_prompts(PromptSource(source="builtin:nope"), ["en"])


def test_prompt_sources(tmp_path):
    for lang, text in [("en", "Hello"), ("es", "Hola")]:
        _write(
            tmp_path / f"{lang}.jsonl",
            f'{{"id": 1, "instruction": "{text}"}}\n{{"id": 2, "instruction": "x"}}\n',
        )
    prompts = load_prompts(PromptSource(source=str(tmp_path / "{lang}.jsonl"), limit=1), ["en", "es"])
    assert [(p.id, p.lang, p.instruction) for p in prompts] == [("1", "en", "Hello"), ("1", "es", "Hola")]
    assert len(load_prompts(PromptSource(source="builtin:heldout"), ["en", "de"])) == 16


def test_hf_dataset_source_from_a_local_dataset_dir(tmp_path):
    data = tmp_path / "ds"
    data.mkdir()
    (data / "train.jsonl").write_text('{"q": "What is 2+2?", "key": "a"}\n{"q": "Name a fruit.", "key": "b"}\n')
    prompts = load_prompts(PromptSource(source=f"hf:{data}", column="q", id_column="key"), ["en"])
    assert [(p.id, p.instruction) for p in prompts] == [("a", "What is 2+2?"), ("b", "Name a fruit.")]
    with pytest.raises(PolyriseError, match="has no column 'instruction'"):
        load_prompts(PromptSource(source=f"hf:{data}"), ["en"])


def test_write_is_atomic(tmp_path):
    target = tmp_path / "out.jsonl"
    write_jsonl(target, [{"a": 1}])

    def rows():
        yield {"a": 2}
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_jsonl(target, rows())
    assert target.read_text() == '{"a": 1}\n'
    assert os.listdir(tmp_path) == ["out.jsonl"]  # no temp file left behind


def test_unwritable_output_dir(tmp_path):
    blocker = _write(tmp_path / "file", "x")  # a file where a directory is needed
    with pytest.raises(PolyriseError, match="cannot write here"):
        write_jsonl(blocker / "sub" / "out.jsonl", [{"a": 1}])


@pytest.mark.parametrize(
    ("generation", "message"),
    [
        ("policy: {engine: openai, openai: {base_url: 'http://h/v1', model: m}}", "cannot serve the iterates"),
        ("policy: {model: other}", r"generation: policy\.model: the policy is `model\.spec`"),
        ("translator: {engine: hf}", r"translator\.model: a translator on hf/vllm needs a model spec"),
        ("translator: {engine: openai}", r"generation\.translator: .*engine 'openai' needs an `openai` section"),
        (
            "policy: {engine: vllm, openai: {base_url: 'http://h/v1', model: m}}",
            "only used by engine 'openai', not 'vllm'",
        ),
        ("policy: {engine: tgi}", r"generation\.policy\.engine: unknown engine 'tgi'; known: hf, vllm, openai"),
    ],
)
def test_engine_roles_are_checked(tmp_path, generation, message):
    with pytest.raises(PolyriseError, match=message):
        load_config(_write(tmp_path / "c.yaml", f"generation:\n  {generation}\n"))


def test_engine_roles_load(tmp_path):
    text = """
generation:
  policy: {engine: vllm, batch_size: 64, vllm: {tensor_parallel_size: 2}}
  translator: {engine: openai, openai: {base_url: "http://localhost:8001/v1", model: mt, api_key_env: null}}
evaluation:
  - task: judge
    source: "x/{lang}.json"
    judge: {engine: openai, openai: {base_url: "https://api.example/v1", model: gpt, max_concurrency: 4}}
"""
    cfg = load_config(_write(tmp_path / "c.yaml", text))
    assert cfg.generation.policy.vllm.tensor_parallel_size == 2 and cfg.generation.translator.openai.model == "mt"
    assert cfg.evaluation[0].judge.openai.api_key_env == "OPENAI_API_KEY"  # the variable's name, never the key
    with pytest.raises(PolyriseError, match=r"evaluation\.0\.judge: .*needs judge\.model"):
        load_config(_write(tmp_path / "d.yaml", "evaluation: [{task: judge, source: s, judge: {engine: vllm}}]\n"))


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ("{task: mgsm, labels: [a, b]}", r"c\.yaml: evaluation\.0\.labels: Extra inputs are not permitted"),
        ("{task: choice, source: xnli, max_new_tokens: 8}", r"evaluation\.0\.max_new_tokens: Extra inputs"),
        ("{task: reflik, source: r, limit: 0}", r"evaluation\.0\.limit: Input should be greater than or equal to 1"),
        ("{task: classify}", r"evaluation\.0\.source: Field required"),
        ("{task: mgsm, langs: [xx]}", r"evaluation\.0\.langs: unknown language code 'xx'"),
        ("{task: bleu, source: s}", r"evaluation\.0: unknown task 'bleu'; known: mgsm, judge"),
    ],
)
def test_each_task_takes_only_its_own_settings(tmp_path, task, message):
    with pytest.raises(PolyriseError, match=message):
        load_config(_write(tmp_path / "c.yaml", f"evaluation: [{task}]\n"))


def test_evaluation_entries_become_their_tasks_settings(tmp_path):
    from polyrise.evaluation import task_class, task_module
    from polyrise.evaluation.choice import ChoiceTask
    from polyrise.evaluation.math import MathTask

    text = "evaluation: [{task: mgsm, few_shot: 2}, {task: choice, source: xnli}, {task: choice, source: d/x.jsonl}]\n"
    mgsm, xnli, local = load_config(_write(tmp_path / "c.yaml", text)).evaluation
    assert isinstance(mgsm, MathTask) and (mgsm.source, mgsm.few_shot, mgsm.key) == ("gsm-symbolic", 2, "mgsm")
    assert isinstance(xnli, ChoiceTask) and (xnli.key, local.key) == ("xnli", "choice")
    for name in TASKS:  # each task's settings, run and metrics live in the module its map line names
        cls, module = task_class(name), task_module(name)
        assert cls.model_fields["task"].default == name and cls.__module__ == module.__name__
        assert callable(module.run) and module.METRICS


def test_config_import_loads_no_torch():
    import subprocess
    import sys

    code = "import sys, polyrise.config; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


def test_lang_template_loader(tmp_path):
    from pydantic import BaseModel

    from polyrise.io import first_per_lang, load_rows

    class Row(BaseModel):
        id: str
        lang: str
        text: str

    _write(tmp_path / "en.jsonl", '{"text": "a"}\n\n{"id": 7, "text": "b"}\n')
    _write(tmp_path / "de.json", '[{"text": "c", "lang": "de"}, {"id": "x", "text": "d"}]')
    _write(tmp_path / "de.jsonl", '{"text": "e"}\n')
    en = load_rows(tmp_path / "{lang}.jsonl", ["en", "de"], Row)
    assert [(r.id, r.lang, r.text) for r in en] == [("1", "en", "a"), ("7", "en", "b"), ("1", "de", "e")]
    assert [(r.id, r.lang) for r in load_rows(tmp_path / "{lang}.json", ["de"], Row)] == [("1", "de"), ("x", "de")]
    assert [r.text for r in first_per_lang(en, 1)] == ["a", "e"]
    plain = _write(tmp_path / "all.jsonl", '{"id": "1", "text": "a"}\n{"id": "1", "lang": "fr", "text": "b"}\n')
    assert [(r.lang, r.text) for r in load_rows(plain, ["fr"], Row)] == [("fr", "a"), ("fr", "b")]
    with pytest.raises(PolyriseError, match=r"all\.jsonl:2: duplicate id '1'"):
        load_rows(plain, ["fr"], Row, unique_ids=True)
    with pytest.raises(PolyriseError, match=r"all\.jsonl:1: lang: Field required"):
        load_rows(plain, ["fr", "de"], Row)
    with pytest.raises(PolyriseError, match=r"all\.jsonl:2: no b"):
        load_rows(plain, ["fr"], Row, lambda r: f"no {r.text}" if r.text == "b" else None)
    _write(tmp_path / "en.jsonl", '{"text": "a", "lang": "de"}\n')
    with pytest.raises(PolyriseError, match=r"en\.jsonl:1: lang 'de' in the file of language 'en'"):
        load_rows(tmp_path / "{lang}.jsonl", ["en"], Row)
    with pytest.raises(PolyriseError, match=r"\{lang\} path template needs the list of languages"):
        load_rows(tmp_path / "{lang}.jsonl", None, Row)
    with pytest.raises(PolyriseError, match=r"fr\.jsonl: no such file"):
        load_rows(tmp_path / "{lang}.jsonl", ["fr"], Row)


def test_tracking_section_is_checked(tmp_path):
    from importlib.util import find_spec

    from polyrise.settings import TrackingSettings
    from polyrise.tracking import check

    assert load_config(_write(tmp_path / "a.yaml", "name: x\n")).tracking.backend == "none"
    with pytest.raises(PolyriseError, match=r"tracking\.backend: Input should be 'none', 'tensorboard', 'trackio'"):
        load_config(_write(tmp_path / "b.yaml", "tracking: {backend: neptune}\n"))
    with pytest.raises(PolyriseError, match=r"tracking\.logdir: Extra inputs are not permitted"):
        load_config(_write(tmp_path / "c.yaml", "tracking: {backend: tensorboard, logdir: x}\n"))
    check(TrackingSettings(backend="tensorboard"))  # installed by the dev extra
    if find_spec("mlflow") is None:
        with pytest.raises(PolyriseError, match=r"^tracking\.backend: mlflow needs mlflow, .*'polyrise\[mlflow\]'$"):
            check(TrackingSettings(backend="mlflow"))


def _unreadable_lines():
    """(case, a JSONL line no reader may take, what the error says): nesting beyond Python's parser, and lone
    surrogate escapes (valid JSON, no text), in values, keys and nested lists."""
    for depth in (1_000, 100_000):
        yield f"[ x {depth}", "[" * depth + "]" * depth, "nested too deeply"
        yield f"{{ x {depth}", '{"a": ' * depth + "1" + "}" * depth, "nested too deeply"
    for escape in ("\\ud800", "\\udfff", "\\uDBFF"):
        yield f"value {escape}", f'{{"id": "1", "lang": "en", "instruction": "a{escape}b"}}', "lone surrogate"
        yield f"key {escape}", f'{{"id": "1", "lang": "en", "instruction": "x", "{escape}": 1}}', "lone surrogate"
        yield f"nested {escape}", f'{{"id": "1", "lang": "en", "instruction": "x", "m": [["{escape}"]]}}', "surrogate"


@pytest.mark.parametrize(("case", "line", "says"), list(_unreadable_lines()), ids=lambda v: str(v)[:20])
def test_a_line_no_reader_can_take_is_one_error_naming_file_and_line(tmp_path, case, line, says):
    from polyrise.io import read_json_array

    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": "0", "lang": "en", "instruction": "fine"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(PolyriseError, match=rf"^{path}:2: .*{says}"):
        read_jsonl(path, Prompt)
    array = tmp_path / "rows.json"
    array.write_text(f"[{line}]", encoding="utf-8")
    with pytest.raises(PolyriseError, match=rf"^{array}: .*{says}"):
        read_json_array(array)


def test_a_surrogate_pair_escape_is_text(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": "1", "lang": "en", "instruction": "smile \\ud83d\\ude00"}\n', encoding="utf-8")
    assert read_jsonl(path, Prompt)[0].instruction == "smile \U0001f600"


@pytest.mark.parametrize("blank", ["", " ", "\t\n ", "\u3000", "\r\n"])
def test_a_blank_instruction_is_refused_at_load_naming_file_and_line(tmp_path, blank):
    import json

    from polyrise.records import PreferencePair, QuestionPair

    prompts = tmp_path / "prompts.jsonl"
    rows = [{"id": "1", "instruction": "Say hi."}, {"id": "2", "instruction": blank}]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(PolyriseError, match=rf"^{prompts}:2: instruction: an instruction must not be blank"):
        load_prompts(PromptSource(source=str(prompts)), ["en"])
    pair = {"id": "1", "lang": "en", "via": "es", "prompt": blank, "chosen": "a", "rejected": "b"}
    question = {"id": "1", "lang": "es", "target": "en", "prompt": blank, "completion": "q"}
    for record, row in ((PreferencePair, pair), (QuestionPair, question)):  # what `train` reads
        data = tmp_path / "train.jsonl"
        data.write_text(json.dumps(row | {"prompt": "fine"}) + "\n" + json.dumps(row) + "\n")
        with pytest.raises(PolyriseError, match=rf"^{data}:2: prompt: an instruction must not be blank"):
            read_jsonl(data, record)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"mgsm": 3}', "[" * 100_000, '"text"'])
@pytest.mark.parametrize("command", ["score", "eval"])
def test_a_bad_existing_scores_file_is_one_error_before_any_work(tmp_path, content, command):
    import json

    from typer.testing import CliRunner

    from polyrise.cli import app

    out = tmp_path / "eval"
    out.mkdir()
    (out / "scores.json").write_text(content)
    outputs = tmp_path / "outputs.jsonl"
    outputs.write_text(json.dumps({"id": "1", "lang": "en", "output": "Hello there, how are you today?"}) + "\n")
    args = ["score", "langid", str(outputs), "--out", str(out)]
    if command == "eval":  # before a model loads: a spec that is none would fail later
        args = ["eval", "--task", "mgsm", "--model", str(tmp_path / "no-model"), "-o", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and isinstance(result.exception, PolyriseError), result.output
    assert str(result.exception).startswith(f"{out / 'scores.json'}: not a scores file")
    assert sorted(p.name for p in out.iterdir()) == ["scores.json"] and (out / "scores.json").read_text() == content
