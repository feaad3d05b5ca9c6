"""Multi-process training through `accelerate launch`: the launch command, its failures, the example accelerate
configs, and real 2-process (gloo, CPU) DPO + NLL runs: `polyrise train --num-processes 2`, and two `polyrise
train --machine-rank K` as the two machines of multi-node.yaml on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
import yaml

from polyrise.errors import PolyriseError
from polyrise.models import ResolvedModel, load_model, resolve_model
from polyrise.records import PreferencePair
from polyrise.training.dpo import train_dpo
from polyrise.training.launch import _failure_lines, launch_command, run_launched, should_launch
from polyrise.training.runs import TRAINING_LOG, checkpoints_dir, run_key
from polyrise.training.settings import DPOSettings

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


def test_each_machine_of_a_multi_node_config_is_launched_with_its_rank():
    multi = EXAMPLES / "multi-node.yaml"
    args = _parse([*launch_command(1, multi, machine_rank=1), "m"])
    assert args.machine_rank == 1 and args.num_processes is None  # the file's 16, over both machines
    with pytest.raises(PolyriseError, match=r"multi-node\.yaml trains on 2 machines.*0 to 1.*--machine-rank K"):
        launch_command(1, multi)  # every machine would claim the file's rank 0
    with pytest.raises(PolyriseError, match=r"machine rank 2: .*multi-node\.yaml trains on 2 machines"):
        launch_command(1, multi, machine_rank=2)
    for one_machine in (EXAMPLES / "ddp.yaml", None):
        with pytest.raises(PolyriseError, match="machine rank 0: only a training on several machines"):
            launch_command(2, one_machine, machine_rank=0)


def test_run_refuses_a_multi_node_config_before_any_stage(tiny_model_dir, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": {"spec": str(tiny_model_dir)}, "output_dir": str(tmp_path / "runs")}))
    result = _polyrise("run", str(config), "--accelerate-config", str(EXAMPLES / "multi-node.yaml"), cwd=tmp_path)
    assert result.returncode == 1 and "a run without a `cluster` trains on this one only" in result.stderr
    assert not list(tmp_path.glob("runs/*/manifest.json"))


@pytest.mark.parametrize(
    ("name", "kind"),
    [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("deepspeed-zero3", "DEEPSPEED"), ("multi-node", "MULTI_GPU")],
)
def test_example_accelerate_configs_are_what_accelerate_expects(name, kind):
    """Each file goes through accelerate's own config loader and launch-argument validation, and its
    backend plugin (or, on several machines, torchrun's node arguments) is built from what the launcher would
    give the workers (no GPU needed)."""
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.commands.launch import _validate_launch_command
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin, patch_environment
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    path = EXAMPLES / f"{name}.yaml"
    header = path.read_text().splitlines()[:4]
    assert all(line.startswith("# ") for line in header)
    cfg = load_config_from_file(str(path))
    assert isinstance(cfg, ClusterConfig)
    per_machine = cfg.num_processes // cfg.num_machines
    assert (cfg.distributed_type.value, per_machine, cfg.mixed_precision) == (kind, 8, "bf16")

    rank = 1 if cfg.num_machines > 1 else None  # a machine other than the main one: its rank overrides the file's
    argv = [*launch_command(1, path, rank), "polyrise.cli", "train", "p"]
    args, defaults, _ = _validate_launch_command(_parse(argv))
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
    elif rank is not None:  # the torchrun this machine's launch runs: node 1 of 2, 8 processes, machine 0's address
        import torch.distributed.run as torchrun
        from accelerate.utils.launch import _filter_args

        prepare_multi_gpu_env(args)
        script = ["--training_script", args.training_script, "--training_script_args", args.training_script_args]
        node = _filter_args(args, torchrun.get_args_parser(), script)  # as accelerate's `_run_torchrun`
        assert (node.nnodes, node.node_rank, node.nproc_per_node, node.rdzv_backend) == ("2", 1, "8", "static")
        assert torchrun.get_rdzv_endpoint(node) == f"{cfg.main_process_ip}:{cfg.main_process_port}"


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
    """`python -m polyrise.cli ARGS` in `cwd`, its output captured (see `_polyrise_together`)."""
    return _polyrise_together([args], cwd)[0]


def _polyrise_together(
    commands: Sequence[Sequence[str]], cwd: Path, timeout: float = 600
) -> list[subprocess.CompletedProcess]:
    """`python -m polyrise.cli ARGS` for each ARGS, all at once (e.g. the machines of one training), in `cwd`.

    Each runs in a process group of its own; once one fails or `timeout` seconds pass, the groups still running
    are stopped, so no launcher is left waiting for a machine that is gone."""
    deadline = time.monotonic() + timeout
    with contextlib.ExitStack() as files:
        outputs = [
            (files.enter_context(tempfile.TemporaryFile("w+")), files.enter_context(tempfile.TemporaryFile("w+")))
            for _ in commands
        ]
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "polyrise.cli", *args], cwd=cwd, stdout=out, stderr=err, start_new_session=True
            )
            for args, (out, err) in zip(commands, outputs, strict=True)
        ]
        try:
            while time.monotonic() < deadline:
                codes = [proc.poll() for proc in procs]
                if any(codes) or None not in codes:  # one failed, or all are done
                    break
                time.sleep(0.2)
        finally:
            for proc in procs:
                _stop_group(proc)
        results = []
        for proc, (out, err) in zip(procs, outputs, strict=True):
            out.seek(0)
            err.seek(0)
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read()))
    return results


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop a still running `proc` and its process group: SIGTERM (torchrun's agent then stops its workers, which
    run in sessions of their own), SIGKILL after 30 s."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _free_port() -> int:
    """A TCP port that nothing on 127.0.0.1 listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def one_process_training(tiny_model_dir, tmp_path_factory) -> Path:
    """The reference: `_pairs(16)` trained by 1 process with batch 4 (4 optimizer steps); its model dir."""
    out = tmp_path_factory.mktemp("one-process") / "model"
    settings = DPOSettings(batch_size=4, max_length=64, learning_rate=1e-3, save="merged")
    train_dpo(resolve_model(str(tiny_model_dir)), _pairs(16), out, settings)
    return out


def _train_on_two(tmp_path: Path, model_dir: Path) -> list[str]:
    """`polyrise train` args for the reference's pairs with batch 2 per process (on 2 processes the reference's
    global batch of 4, same seed and order), saving to `model` in the working dir."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "pairs.jsonl").write_text("".join(p.model_dump_json() + "\n" for p in _pairs(16)))
    training = {"batch_size": 2, "max_length": 64, "learning_rate": 1e-3, "save": "merged"}
    (inputs / "run.yaml").write_text(yaml.safe_dump({"training": training}))
    pairs, config = str(inputs / "pairs.jsonl"), str(inputs / "run.yaml")
    return ["train", pairs, "--model", str(model_dir), "--config", config, "--out", "model"]


def _step_losses(model_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (model_dir / TRAINING_LOG).read_text().splitlines()]
    return {row["step"]: row["loss"] for row in rows if "loss" in row}


def _check_trained_like_one(work: Path, reference: Path, base_dir: Path) -> None:
    """`work` holds one model and the reference log-prob cache beside it (no checkpoints, no temp dir), the model
    trained away from `base_dir` with the per-step losses of the one-process `reference`, within the tolerance
    explained below."""
    assert sorted(p.name for p in work.iterdir()) == ["generations.sqlite", "model"]
    two = work / "model"
    trained = load_model(resolve_model(str(two)), device=CPU).state_dict()
    before = load_model(resolve_model(str(base_dir)), device=CPU).state_dict()
    assert any(not torch.equal(trained[k], before[k]) for k in before if "q_proj" in k)
    assert not checkpoints_dir(two).exists()

    losses_1, losses_2 = _step_losses(reference), _step_losses(two)
    assert list(losses_1) == list(losses_2) == [1, 2, 3, 4]  # one global batch of 4 per step: the 2 trained as one
    assert losses_2[4] < losses_2[1]  # it trains
    # Measured on this CPU box (deterministic over reruns): |loss_2 - loss_1| = 2.6e-4, 4.2e-4, 5.4e-4, 5.5e-4 at
    # steps 1-4 (losses ~11.4). The DPO sigmoid term is a per-pair mean, the same either way; the NLL term is
    # TRL's mean over the chosen tokens of the *local* batch, so 2 processes average two local means where one
    # process averages all 4 pairs' tokens, and these chosen answers differ in length. With chosen answers of
    # equal token length the two curves agree to 2e-6 (float rounding). Tolerance: ~4x the measured maximum.
    for step, loss in losses_1.items():
        assert losses_2[step] == pytest.approx(loss, abs=2e-3), (step, losses_1, losses_2)


_CPU_REFERENCE = pytest.mark.skipif(
    torch.cuda.is_available(), reason="compares CPU runs; with CUDA the reference would train on the GPU"
)


@pytest.mark.slow
@_CPU_REFERENCE
def test_two_processes_train_like_one_with_the_same_global_batch(tiny_model_dir, tmp_path, one_process_training):
    """`polyrise train --num-processes 2`: 2 CPU processes x batch 2 vs the 1-process reference x batch 4."""
    work = tmp_path / "two"
    work.mkdir()
    result = _polyrise(*_train_on_two(tmp_path, tiny_model_dir), "--num-processes", "2", cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("saved model to model") == 1  # printed by the main process only
    _check_trained_like_one(work, one_process_training, tiny_model_dir)


@pytest.mark.slow
@_CPU_REFERENCE
def test_two_machines_on_loopback_train_like_one_process(tiny_model_dir, tmp_path, one_process_training):
    """multi-node.yaml with both machines on this one (127.0.0.1, a free port, 1 CPU process each, no mixed
    precision as in the reference): `polyrise train --machine-rank 0` and `--machine-rank 1` at once, sharing
    one working dir as nodes share a filesystem; only machine 0's main process writes the model."""
    config = yaml.safe_load((EXAMPLES / "multi-node.yaml").read_text())
    config |= {"num_processes": 2, "mixed_precision": "no", "main_process_ip": "127.0.0.1"}
    machines = tmp_path / "machines.yaml"
    machines.write_text(yaml.safe_dump({**config, "main_process_port": _free_port()}))
    train = [*_train_on_two(tmp_path, tiny_model_dir), "--accelerate-config", str(machines)]
    work = tmp_path / "two-machines"
    work.mkdir()
    results = _polyrise_together([[*train, "--machine-rank", str(rank)] for rank in (0, 1)], cwd=work)
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    assert [result.stdout.count("saved model to model") for result in results] == [1, 0]
    _check_trained_like_one(work, one_process_training, tiny_model_dir)


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
        "prompts": {"source": str(prompts), "checks": {"enabled": False}},  # random-model translations fail them
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
