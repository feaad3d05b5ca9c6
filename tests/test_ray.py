"""A run on a Ray cluster (`cluster:`), on a two-node cluster on loopback (`ray.cluster_utils.Cluster`, one CPU
per node, started once for the module): the same JSONL outputs, byte for byte, and the same training losses as the
run on this machine alone; a node lost mid-stage, and every replica lost, then a rerun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from polyrise import api
from polyrise.errors import PolyriseError
from polyrise.generation import ChatRequest, Generator, open_engine
from polyrise.generation.cache import GenerationCache
from polyrise.settings import ClusterSettings, EngineSettings, ModelSettings, SamplingSettings
from polyrise.training.launch import Machines, launch_command

ray = pytest.importorskip("ray")

SAMPLED = SamplingSettings(max_new_tokens=10, temperature=1.0)  # greedy decoding of a random model is blank
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_the_cluster_section_and_its_override(tmp_path):
    """No `cluster`: none. `ray_address` adds one (or replaces its address only); a bad key is one error naming it;
    a multi-machine accelerate config is refused without a cluster and taken with one."""
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"cluster": {"backend": "ray", "replicas": 3}}))
    assert api.load_run_config(config).cluster == ClusterSettings(replicas=3)
    cfg = api.load_run_config(config, ray_address="10.0.0.1:6379")
    assert cfg.cluster == ClusterSettings(address="10.0.0.1:6379", replicas=3)
    plain = tmp_path / "plain.yaml"
    plain.write_text("name: x\n")
    assert api.load_run_config(plain).cluster is None
    assert api.load_run_config(plain, ray_address="auto").cluster == ClusterSettings()
    config.write_text(yaml.safe_dump({"cluster": {"backend": "ray", "adress": "auto"}}))
    with pytest.raises(PolyriseError, match=r"cluster\.adress"):
        api.load_run_config(config)
    multi = EXAMPLES / "accelerate" / "multi-node.yaml"
    with pytest.raises(PolyriseError, match="a run without a `cluster` trains on this one only"):
        api.load_run_config(plain, accelerate_config=multi)
    assert api.load_run_config(plain, accelerate_config=multi, ray_address="auto").cluster is not None


def test_each_node_is_launched_with_its_rank_and_rank_0s_address():
    """What `accelerate launch` makes of a cluster node's argv: without a file, DDP over the machines; with a
    multi-machine file, the cluster's count, rank and address replace the file's."""
    from accelerate.commands.launch import launch_command_parser

    machines = Machines(count=2, rank=1, main_ip="10.0.0.5", main_port=29500)
    for config in (None, EXAMPLES / "accelerate" / "multi-node.yaml"):
        argv = [*launch_command(4, config, machines=machines), "polyrise.cli", "stage"]
        args = launch_command_parser().parse_args(argv[3:])
        assert (args.num_machines, args.machine_rank, args.num_processes) == (2, 1, 4)
        assert (args.main_process_ip, args.main_process_port) == ("10.0.0.5", 29500)
        assert args.multi_gpu == (config is None) and args.training_script == "polyrise.cli"


@pytest.fixture(scope="module")
def cluster():
    """A head node and one worker node, each with 1 CPU; the node health checks fast, so a lost node is noticed
    within about a second. This process is the driver."""
    from ray.cluster_utils import Cluster

    checks = {"health_check_period_ms": 300, "health_check_failure_threshold": 2}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "_system_config": checks})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def _config(tmp_path: Path, model_dir: Path) -> Path:
    """One iteration of language imbalance on the random tiny model: 6 prompts, English and Spanish, sampled
    answers and translations (the filters and the language check let them through), DPO on 2 processes."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "instruction": f"Say {i}."}) + "\n" for i in range(6)))
    sampled = SAMPLED.model_dump()
    settings = {
        "output_dir": str(tmp_path / "runs"),
        "model": {"spec": str(model_dir)},
        "languages": ["es"],
        "prompts": {"source": str(prompts), "checks": {"enabled": False}},
        "generation": {"policy": {"batch_size": 2}, "answer": sampled, "translate": sampled},
        "filters": {"min_length_ratio": 0.001, "max_length_ratio": 1000, "repeated_line_limit": 1000},
        "langid": {"min_words": 10**5},
        "training": {"batch_size": 2, "max_length": 64, "learning_rate": 1e-3, "num_processes": 2},
        "heldout": None,
        "stage_processes": False,
    }
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(settings))
    return config


def _losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "iter_0" / "model" / "training_log.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if "loss" in row]


@pytest.mark.skipif(torch.cuda.is_available(), reason="compares CPU runs")
def test_a_run_on_two_nodes_writes_what_the_run_on_one_machine_writes(cluster, tiny_model_dir, tmp_path):
    """Generation spread over a replica per node, training on both nodes (1 process each, rank 0 the driver's):
    every JSONL file of the iteration byte-equal to the one-machine run's (whose training is 2 processes here),
    the same per-step losses, one model written, in the driver's run dir."""
    config = _config(tmp_path, tiny_model_dir)
    here = api.run(config, name="here")
    there = api.run(config, name="there", ray_address=cluster.address)
    assert yaml.safe_load((there / "config.yaml").read_text())["cluster"]["address"] == cluster.address
    files = sorted(p.name for p in (here / "iter_0").glob("*.jsonl"))
    assert {"prompts.jsonl", "responses.jsonl", "translations.jsonl", "pairs.jsonl"} <= set(files)
    assert sorted(p.name for p in (there / "iter_0").glob("*.jsonl")) == files
    for name in files:
        assert (there / "iter_0" / name).read_bytes() == (here / "iter_0" / name).read_bytes(), name
    pairs = sum(1 for _ in (here / "iter_0" / "pairs.jsonl").open())
    assert len(_losses(here)) == -(-pairs // 4) > 0  # steps of a global batch of 4 pairs
    assert _losses(there) == _losses(here)
    assert (there / "iter_0" / "model" / "model.safetensors").is_file()
    manifest = json.loads((there / "manifest.json").read_text())["stages"]
    assert manifest["iter_0/train"]["status"] == "done"


def _prompts(start: int, n: int) -> list[ChatRequest]:
    return [ChatRequest.user(f"Tell me about the number {i}.") for i in range(start, start + n)]


def test_lost_nodes_replicas_and_the_rerun(cluster, tiny_model_dir, tmp_path, monkeypatch):
    """A replica's error is one message. 2 replicas, batch 2: a piece is 8 requests, a generator chunk 16 (one piece
    per replica). The worker node
    is removed after the first chunk is stored: its piece of the second goes to the head's replica, and the outputs
    are the local engine's. Then the last replica dies mid-stage: one error naming both lost nodes; the rerun on the
    local engine (the same cache keys) asks only for the requests that were not stored."""
    settings = EngineSettings(batch_size=2)
    model = ModelSettings(spec=str(tiny_model_dir))
    local = Generator(open_engine(settings, model), GenerationCache(tmp_path / "local.sqlite"))
    expected = local.generate(_prompts(0, 64), SAMPLED)

    engine = open_engine(settings, model, ClusterSettings(address=cluster.address))
    assert len(engine.replicas) == 2 and len(set(engine.replicas.values())) == 2  # one per node
    assert engine.fingerprint == local.engine.fingerprint and engine.batch_size == 4
    with pytest.raises(PolyriseError) as info:  # a replica's own error: its message, no remote traceback
        engine.complete([ChatRequest.user("word " * 3000)], SAMPLED)
    assert "exceeds the context" in str(info.value) and "Traceback" not in str(info.value)
    cache = GenerationCache(tmp_path / "ray.sqlite")
    stored = cache.put_many
    kills = []

    def put_then_kill(new):
        stored(new)
        if kills:
            kills.pop(0)()

    monkeypatch.setattr(cache, "put_many", put_then_kill)
    worker = next(iter(cluster.worker_nodes))
    worker_name = next(name for name in engine.replicas.values() if worker.node_id[:8] in name)
    kills.append(lambda: cluster.remove_node(worker))
    assert Generator(engine, cache).generate(_prompts(0, 32), SAMPLED) == expected[:32]
    assert engine.lost == [worker_name] and len(engine.replicas) == 1

    [(head_actor, head_name)] = engine.replicas.items()
    kills.append(lambda: ray.kill(head_actor))
    with pytest.raises(PolyriseError) as info:
        Generator(engine, cache).generate(_prompts(32, 32), SAMPLED)
    assert f"every engine replica on the Ray cluster was lost (nodes {worker_name}, {head_name})" in str(info.value)
    rerun = Generator(local.engine, cache)
    assert rerun.generate(_prompts(0, 64), SAMPLED) == expected
    # the tokens of all 64 outputs, cached or not: what the local run counted for the same outputs
    assert rerun.stats == {"cached": 32 + 16, "generated": 16, "scored": 0, "tokens": local.stats["tokens"]}
