"""Multi-process training through `accelerate launch`: the launch command, its failures, the example accelerate
configs, and a real 2-process (gloo, CPU) DPO + NLL run through `polyrise train --num-processes 2`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from polyrise.config import DPOSettings
from polyrise.errors import PolyriseError
from polyrise.models import ResolvedModel, load_model, resolve_model
from polyrise.records import PreferencePair
from polyrise.training.dpo import train_dpo
from polyrise.training.launch import _failure_lines, launch_command, run_launched, should_launch
from polyrise.training.runs import TRAINING_LOG, checkpoints_dir, run_key

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "accelerate"
CPU = torch.device("cpu")


def _parse(argv: list[str]):
    """What `accelerate launch` makes of an argv from `launch_command` (its own argument parser)."""
    from accelerate.commands.launch import launch_command_parser

    assert argv[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    return launch_command_parser().parse_args(argv[3:])


def test_launch_command_prefixes_any_module_and_its_args():
    args = _parse([*launch_command(2), "polyrise.cli", "stage", "runs/x", "--flag", "v"])
    assert args.module and args.multi_gpu and args.num_processes == 2
    assert args.training_script == "polyrise.cli"
    assert args.training_script_args == ["stage", "runs/x", "--flag", "v"]
    assert args.main_process_port == 0  # a free port: two launches on one machine do not collide
    single = _parse([*launch_command(1), "m"])
    assert single.num_processes == 1 and not single.multi_gpu  # accelerate refuses --multi_gpu with 1 process
    assert should_launch(2, None) and should_launch(1, EXAMPLES / "ddp.yaml") and not should_launch(1, None)
    with pytest.raises(PolyriseError, match="at least 1"):
        launch_command(0)


def test_launch_command_with_a_config_file(tmp_path, monkeypatch):
    monkeypatch.chdir(EXAMPLES.parent.parent)
    args = _parse([*launch_command(1, Path("examples/accelerate/fsdp.yaml")), "m"])
    assert args.config_file == str(EXAMPLES / "fsdp.yaml")  # absolute: the workers may run elsewhere
    assert args.num_processes is None  # the file's 8
    assert not args.multi_gpu and args.main_process_port is None  # the file decides backend and port
    assert _parse([*launch_command(4, EXAMPLES / "ddp.yaml"), "m"]).num_processes == 4
    with pytest.raises(PolyriseError, match="no such accelerate config file"):
        launch_command(2, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("distributed_type: MULTI_GPU\nnum_procs: 8\n")
    with pytest.raises(PolyriseError, match=r"bad\.yaml: not a valid accelerate config.*num_procs"):
        launch_command(2, bad)


@pytest.mark.parametrize(("name", "kind"), [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("deepspeed-zero3", "DEEPSPEED")])
def test_example_accelerate_configs_are_what_accelerate_expects(name, kind):
    """Each file goes through accelerate's own config loader and launch-argument validation, and its
    backend plugin is built from the environment the launcher would give the workers (no GPU needed)."""
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.commands.launch import _validate_launch_command
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin, patch_environment
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    path = EXAMPLES / f"{name}.yaml"
    header = path.read_text().splitlines()[:4]
    assert all(line.startswith("# ") for line in header)
    cfg = load_config_from_file(str(path))
    assert isinstance(cfg, ClusterConfig)
    assert (cfg.distributed_type.value, cfg.num_processes, cfg.mixed_precision) == (kind, 8, "bf16")

    args, defaults, _ = _validate_launch_command(_parse([*launch_command(1, path), "polyrise.cli", "train", "p"]))
    backends = {"MULTI_GPU": args.multi_gpu, "FSDP": args.use_fsdp, "DEEPSPEED": args.use_deepspeed}
    assert [b for b, on in backends.items() if on] == [kind]
    if kind == "DEEPSPEED":
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)  # as `accelerate launch`
        _, env = prepare_deepspeed_cmd_env(args)
        with patch_environment(**env):
            plugin = DeepSpeedPlugin()
        zero = plugin.deepspeed_config["zero_optimization"]
        assert zero["stage"] == 3 and zero["stage3_gather_16bit_weights_on_model_save"] is True
        assert plugin.deepspeed_config["gradient_accumulation_steps"] == "auto"  # from polyrise's settings
    elif kind == "FSDP":
        with patch_environment(**prepare_multi_gpu_env(args)):
            plugin = FullyShardedDataParallelPlugin()
        assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
        assert plugin.transformer_cls_names_to_wrap == ["LlamaDecoderLayer"]
        assert plugin.cpu_ram_efficient_loading is False


def test_run_key_ignores_how_the_run_is_launched_but_not_the_world_size(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    base = ResolvedModel("org/model", "org/model")
    rows = _pairs(2)
    key = run_key(base, rows, DPOSettings(), 0, "auto")
    assert run_key(base, rows, DPOSettings(num_processes=8, accelerate_config=Path("a.yaml")), 0, "auto") == key
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert run_key(base, rows, DPOSettings(num_processes=2), 0, "auto") != key


def test_run_launched_streams_output_and_quotes_a_failing_child(capfd):
    child = (
        "import sys\n"
        "print('progress on stdout', flush=True)\n"
        "for i in range(3): sys.stderr.write(f'\\r {i * 50}%|#####| {i}/2 [00:01<00:00]'); sys.stderr.flush()\n"
        "sys.stderr.write('\\nerror: rank 1 could not read pairs.jsonl\\n')\n"
        "sys.exit(3)\n"
    )
    with pytest.raises(PolyriseError) as info:
        run_launched([sys.executable, "-c", child])
    message = str(info.value)
    assert "exit code 3" in message and "error: rank 1 could not read pairs.jsonl" in message
    assert "%|" not in message.split("last lines of its stderr:")[1]  # progress bars are shown live, not quoted
    out, err = capfd.readouterr()
    assert "progress on stdout" in out and "100%|#####| 2/2" in err and "rank 1 could not" in err
    run_launched([sys.executable, "-c", "print('fine')"])  # exit 0: no error
    assert capfd.readouterr().out == "fine\n"


def test_failure_lines_drop_the_launchers_own_traceback():
    stderr = "\n".join(
        [
            "Traceback (most recent call last):",
            '  File "/src/polyrise/training/dpo.py", line 60, in train_dpo',
            "ValueError: the worker's real problem",
            "E1123 02:08:10 api.py:1002] failed (exitcode: 1) local_rank: 1 (pid: 3742) of binary: python",
            "Traceback (most recent call last):",
            '  File "<frozen runpy>", line 198, in _run_module_as_main',
            '  File "/venv/site-packages/accelerate/commands/launch.py", line 1423, in <module>',
            "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:",
            "rank      : 1 (local_rank: 1)",
        ]
    )
    lines = _failure_lines(stderr)
    assert lines[-2:] == [
        "ValueError: the worker's real problem",
        "E1123 02:08:10 api.py:1002] failed (exitcode: 1) local_rank: 1 (pid: 3742) of binary: python",
    ]


# ---- real 2-process training on the CPU (gloo) ----


def _pairs(n: int) -> list[PreferencePair]:
    """Chosen answers of 1-3 sentences: the local batches hold different numbers of chosen tokens."""
    return [
        PreferencePair(
            id=f"p{i}",
            lang="de",
            via="de",
            prompt=f"Write one sentence about topic {i}.",
            chosen=f"Hier ist ein kurzer Satz über das Thema {i}." + " Noch ein Satz." * (i % 3),
            rejected=f"Here is a short sentence about topic {i}.",
        )
        for i in range(n)
    ]


def _polyrise(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "polyrise.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def _write_inputs(tmp_path: Path, pairs: list[PreferencePair], batch_size: int) -> Path:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "pairs.jsonl").write_text("".join(p.model_dump_json() + "\n" for p in pairs))
    (inputs / "run.yaml").write_text(
        f"training:\n  batch_size: {batch_size}\n  max_length: 64\n  learning_rate: 0.001\n  save: merged\n"
    )
    return inputs


def _step_losses(model_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (model_dir / TRAINING_LOG).read_text().splitlines()]
    return {row["step"]: row["loss"] for row in rows if "loss" in row}


@pytest.mark.slow
@pytest.mark.skipif(
    torch.cuda.is_available(), reason="compares two CPU runs; with CUDA the reference would train on the GPU"
)
def test_two_processes_train_like_one_with_the_same_global_batch(tiny_model_dir, tmp_path):
    """16 pairs, 4 optimizer steps: 2 CPU processes x batch 2 vs 1 process x batch 4, same seed and order."""
    pairs = _pairs(16)
    settings = DPOSettings(batch_size=4, max_length=64, learning_rate=1e-3, save="merged")
    single = tmp_path / "single" / "model"
    train_dpo(resolve_model(str(tiny_model_dir)), pairs, single, settings)

    inputs = _write_inputs(tmp_path, pairs, batch_size=2)
    work = tmp_path / "two"
    work.mkdir()
    result = _polyrise(
        "train",
        str(inputs / "pairs.jsonl"),
        "--model",
        str(tiny_model_dir),
        "--config",
        str(inputs / "run.yaml"),
        "--out",
        "model",
        "--num-processes",
        "2",
        cwd=work,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("saved model to model") == 1  # printed by the main process only
    assert [p.name for p in work.iterdir()] == ["model"]  # no checkpoints, no temp dir, one model
    two = work / "model"
    trained = load_model(resolve_model(str(two)), device=CPU).state_dict()
    before = load_model(resolve_model(str(tiny_model_dir)), device=CPU).state_dict()
    assert any(not torch.equal(trained[k], before[k]) for k in before if "q_proj" in k)
    assert not checkpoints_dir(two).exists()

    losses_1, losses_2 = _step_losses(single), _step_losses(two)
    assert list(losses_1) == list(losses_2) == [1, 2, 3, 4]
    assert losses_2[4] < losses_2[1]  # it trains
    # Measured on this CPU box (deterministic over reruns): |loss_2 - loss_1| = 2.6e-4, 4.2e-4, 5.4e-4, 5.5e-4 at
    # steps 1-4 (losses ~11.4). The DPO sigmoid term is a per-pair mean, the same either way; the NLL term is
    # TRL's mean over the chosen tokens of the *local* batch, so 2 processes average two local means where one
    # process averages all 4 pairs' tokens, and these chosen answers differ in length. With chosen answers of
    # equal token length the two curves agree to 2e-6 (float rounding). Tolerance: ~4x the measured maximum.
    for step, loss in losses_1.items():
        assert losses_2[step] == pytest.approx(loss, abs=2e-3), (step, losses_1, losses_2)


@pytest.mark.slow
def test_failing_workers_under_accelerate_are_one_clear_error(tmp_path):
    """Both torchrun workers fail (a missing pairs file): one PolyriseError quoting what they wrote, not the
    launcher's traceback."""
    worker = ["polyrise.cli", "train", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "m"), "--launched"]
    with pytest.raises(PolyriseError) as info:
        run_launched(launch_command(2) + worker)
    quoted = str(info.value).split("last lines of its stderr:")[1]
    assert "missing.jsonl" in quoted and "exit code 1" in str(info.value)
    assert "failed (exitcode: 1)" in quoted  # torchrun's line naming the failing rank
    assert "ChildFailedError" not in quoted
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_run_trains_its_iterate_on_two_processes(tiny_model_dir, tmp_path):
    """`polyrise run --num-processes 2`: the training stage is launched through accelerate as a stage process,
    rank 0 reports its counts to the orchestrating run, one model is saved."""
    import yaml

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "instruction": f"Say {i}."}) + "\n" for i in range(4)))
    config = tmp_path / "run.yaml"
    sampled = {"max_new_tokens": 10, "temperature": 1.0}  # greedy decoding of a random model is blank
    keep_all = {"min_length_ratio": 0.001, "max_length_ratio": 1000}
    settings = {
        "name": "ddp",
        "output_dir": str(tmp_path / "runs"),
        "model": {"spec": str(tiny_model_dir)},
        "languages": ["es"],
        "prompts": {"source": str(prompts)},
        "generation": {"policy": {"batch_size": 8}, "answer": sampled, "translate": sampled},
        "filters": {**keep_all, "repeated_line_limit": 1000},
        "langid": {"min_words": 10**5},  # random-model text is no language
        "training": {"batch_size": 2, "max_length": 64, "learning_rate": 1e-3},
        "heldout": None,
        "stage_processes": False,  # only the training stage runs apart, launched by accelerate
    }
    config.write_text(yaml.safe_dump(settings))
    result = _polyrise("run", str(config), "--num-processes", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "ddp"
    model = run_dir / "iter_0" / "model"
    counts = json.loads((run_dir / "manifest.json").read_text())["stages"]["iter_0/train"]["counts"]
    pairs = sum(1 for _ in (run_dir / "iter_0" / "pairs.jsonl").open())
    assert counts["examples"] == pairs > 0 and "train_loss" in counts
    assert (model / TRAINING_LOG).is_file() and load_model(resolve_model(str(model))) is not None
    assert not checkpoints_dir(model).exists() and not list(run_dir.rglob("*.tmp"))
    assert not (run_dir / ".stage-result.json").exists()
