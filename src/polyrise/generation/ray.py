"""Engine replicas on a Ray cluster (`cluster:` of a run config; extra `ray`): `RayEngine` is an `Engine` whose
requests run on N actors, each holding the configured local engine (hf, vllm) built by its own `from_settings`.

The driver renders the requests and keys the cache with the model's own tokenizer and fingerprint, as the local
engine does, so a run's cache is the same with and without a cluster. A call is cut into pieces of one local
generator chunk (`CHUNK_BATCHES` batches, in the order given) and the pieces go to whichever replica is free: the
`Generator`, whose chunk is `CHUNK_BATCHES` x `batch_size` = one piece per replica, hands each replica exactly the
requests the local engine would get in one call, so greedy outputs are the local engine's byte for byte. A replica
whose actor or node dies has its piece redone by the others; with none left the call fails naming the lost nodes.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import ray
from ray.exceptions import ObjectLostError, RayActorError, RayTaskError

from polyrise.errors import PolyriseError
from polyrise.generation import CHUNK_BATCHES, open_engine
from polyrise.generation.base import ChatRequest, LogLikelihood, local_model, render_chat
from polyrise.models import load_tokenizer, resolve_model
from polyrise.settings import ClusterSettings, EngineSettings, ModelSettings, SamplingSettings

T = TypeVar("T")

START_TIMEOUT = 1800.0
"""Seconds the replicas may take to be placed and load their model before the stage gives up."""


def connect(cluster: ClusterSettings) -> None:
    """Join the Ray cluster at `cluster.address` as its driver (once per process); the workers' output stays in
    Ray's own logs, so the console shows polyrise's lines only."""
    if ray.is_initialized():
        return
    try:
        ray.init(address=cluster.address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise PolyriseError(f"cannot join the Ray cluster at {cluster.address!r}: {e}") from None


def alive_nodes() -> list[dict[str, Any]]:
    """The cluster's alive nodes as `ray.nodes()` describes them (`NodeID`, `NodeManagerAddress`, `Resources`)."""
    return [node for node in ray.nodes() if node["Alive"]]  # type: ignore[no-untyped-call]


def cluster_resources() -> dict[str, float]:
    """The cluster's total resources (`CPU`, `GPU`, ...)."""
    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    return resources


def node_name(node_id: str, ip: str) -> str:
    """A node as an error names it: its address and the start of its Ray id."""
    return f"{ip} (node {node_id[:8]})"


class EngineReplica:
    """One engine replica (a Ray actor): the local engine of `settings`, built on the node Ray placed it on."""

    def __init__(self, settings: EngineSettings, model: ModelSettings | None) -> None:
        self.engine = open_engine(settings, model)

    def node(self) -> str:
        ip: str = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        return node_name(ray.get_runtime_context().get_node_id(), ip)

    def complete(self, requests: Sequence[ChatRequest], params: SamplingSettings) -> list[str]:
        return self.engine.complete(requests, params)

    def loglikelihood(self, requests: Sequence[tuple[str, str]], max_tokens: int | None) -> list[LogLikelihood]:
        return self.engine.loglikelihood(requests, max_tokens)


_Replica: Any = ray.remote(max_restarts=0, max_task_retries=0)(EngineReplica)


def _placement(cluster: ClusterSettings, settings: EngineSettings) -> tuple[int, dict[str, Any]]:
    """How many replicas and the resources of each: one per GPU (per tensor-parallel group on vLLM) on a cluster
    with GPUs, else one per node with CPUs; `cluster.replicas` overrides the count."""
    gpus = int(cluster_resources().get("GPU", 0))
    if gpus:
        group = settings.vllm.tensor_parallel_size if settings.engine == "vllm" else 1
        return cluster.replicas or max(gpus // group, 1), {"num_gpus": group, "num_cpus": cluster.cpus_per_replica}
    nodes = sum(1 for node in alive_nodes() if node["Resources"].get("CPU", 0) >= cluster.cpus_per_replica)
    return cluster.replicas or max(nodes, 1), {"num_cpus": cluster.cpus_per_replica}


def _cause(error: RayTaskError) -> BaseException:
    """What a replica raised: a PolyriseError as itself (one message, no remote traceback), anything else as Ray's."""
    cause = error.cause
    return PolyriseError(str(cause)) if isinstance(cause, PolyriseError) else error


class RayEngine:
    """A local engine (`settings.engine`: hf or vllm) as `replicas` Ray actors placed by Ray (SPREAD)."""

    def __init__(self, cluster: ClusterSettings, settings: EngineSettings, model: ModelSettings | None = None) -> None:
        connect(cluster)
        model = local_model(settings, model)
        resolved = resolve_model(model.spec)
        self.fingerprint = resolved.fingerprint()
        self.tokenizer = load_tokenizer(resolved, model.chat_template, model.trust_remote_code)
        self.piece = CHUNK_BATCHES * settings.batch_size
        count, resources = _placement(cluster, settings)
        actors = [
            _Replica.options(scheduling_strategy="SPREAD", **resources).remote(settings, model) for _ in range(count)
        ]
        self.replicas: dict[Any, str] = {}
        """Each live actor → the node it runs on."""
        self.lost: list[str] = []
        """The nodes whose replica died during this engine's life."""
        calls = {actor.node.remote(): actor for actor in actors}
        ready, pending = ray.wait(list(calls), num_returns=len(calls), timeout=START_TIMEOUT)
        if pending:
            raise PolyriseError(
                f"{len(ready)} of {count} engine replicas ({resources} each) started on the Ray cluster within "
                f"{START_TIMEOUT:.0f} s: it lacks the resources (cluster.replicas sets the count)"
            )
        for ref in ready:
            try:
                self.replicas[calls[ref]] = ray.get(ref)
            except (RayActorError, RayTaskError) as e:
                raise PolyriseError(f"an engine replica of {model.spec!r} failed to start: {e}") from None
        self.batch_size = settings.batch_size * count
        """One generator chunk is one piece per replica."""

    @classmethod
    def from_settings(cls, settings: EngineSettings, model: ModelSettings | None = None) -> RayEngine:
        """The replicas on the cluster this machine belongs to (`address: auto`)."""
        return cls(ClusterSettings(), settings, model)

    def render(self, request: ChatRequest) -> str:
        return render_chat(self.tokenizer, request)

    def complete(self, requests: Sequence[ChatRequest], params: SamplingSettings) -> list[str]:
        requests = list(requests)
        return self._spread(len(requests), lambda actor, part: actor.complete.remote(requests[part], params))

    def loglikelihood(self, requests: Sequence[tuple[str, str]], max_tokens: int | None = None) -> list[LogLikelihood]:
        requests = list(requests)
        return self._spread(len(requests), lambda actor, part: actor.loglikelihood.remote(requests[part], max_tokens))

    def _spread(self, n: int, call: Callable[[Any, slice], Any]) -> list[T]:
        """The results of `n` requests, computed in pieces of `self.piece` by the free replicas, in request order; a
        piece whose replica died goes back to the queue for the others."""
        queue = deque(slice(start, min(start + self.piece, n)) for start in range(0, n, self.piece))
        results: dict[int, list[T]] = {}
        running: dict[Any, tuple[Any, slice]] = {}
        idle = list(self.replicas)
        while queue or running:
            while queue and idle:
                actor, part = idle.pop(0), queue.popleft()
                running[call(actor, part)] = (actor, part)
            if not running:
                raise PolyriseError(
                    f"every engine replica on the Ray cluster was lost (nodes {', '.join(self.lost)}); "
                    "the requests answered so far are in the run's cache: rerun to ask for the rest"
                )
            [done], _ = ray.wait(list(running), num_returns=1)
            actor, part = running.pop(done)
            try:
                results[part.start] = ray.get(done)
            except (RayActorError, ObjectLostError):  # the actor died, or its node with the piece's result
                self.lost.append(self.replicas.pop(actor))
                queue.appendleft(part)
                continue
            except RayTaskError as e:
                raise _cause(e) from None
            idle.append(actor)
        return [value for start in sorted(results) for value in results[start]]
