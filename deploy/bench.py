"""`validibot bench`: latency and throughput of the real pipeline on a fresh local stack, as one JSON line.

All figures come from one run on one machine, so ratios are meaningful even when the machine is noisy:
- floor: upload → notification → push → a no-op function that records when the event arrived (one hop), p50;
- end to end: upload of a small valid JSON document → terminal run status, p50/p95, and its ratio to one floor hop
  (one hop plus the chained work) and to three; the same with the inline chain off;
- burst: N concurrent uploads, runs reaching a terminal status per second, chained and unchained;
- Firestore reads and writes of one single-step inline run, all stages included, counted through the client;
- EnergyPlus: the example model (60 timesteps an hour, a year) through the pipeline as a local job, upload →
  verdict, against the same prepared model run directly with the `energyplus` binary, alternating, p50 each;
- fairness: six 7 MB documents with 450,000 violations each, then one 70-byte document: seconds from the small
  one's upload to its verdict, how long the large ones took, and whether each ended counting all its violations.
Times are taken from the clocks of the functions themselves (same machine), so polling adds no error; each latency
sample starts after a random pause (see PHASE_SECONDS).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import statistics
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.api_core import exceptions as gexc

from bootstrap import Services
from deploy.bench_family import family_figures
from deploy.bench_floor import FLOOR_COLLECTION, FLOOR_PREFIX, floor_doc_id
from deploy.provision import DEMO_ORG, push_endpoint
from deploy.stack import LocalStack, Ports
from jobs.validators.energyplus import (
    EnergyPlusConfig,
    bundled_weather,
    energyplus_argv,
    energyplus_binary,
    prepare_model,
)
from schemas.changes import Write, workflow_path
from schemas.documents import RunDoc, StepSpec, WorkflowDoc
from schemas.enums import AttemptState, RunStatus
from schemas.paths import inbox_object, run_id_for
from schemas.settings import Settings
from store.objects import finalized_event

WARMUP = 3
# The Pub/Sub emulator pushes in rounds about 100 ms apart, so a hop takes 20-120 ms by when in a round its message
# lands. A sample started the moment the previous one was seen locks onto one phase of those rounds (a floor of 85 ms
# in one run, 40 ms in another): each sample starts after a random pause, so every figure averages over the phases.
PHASE_SECONDS = 0.25
# Polling only decides when to look; the times measured come from the functions, so it can be gentle.
POLL_SECONDS = 0.02
# A simulation competes for the same two cores as the emulators that answer the polls: look rarely.
SIMULATION_POLL_SECONDS = 1.0
WAIT_SECONDS = 120.0
BURST_UPLOADERS = 16
BURST_WAIT_SECONDS = 600.0
# After the push subscription is pointed at other functions, deliveries already in flight finish first.
SWITCH_SETTLE_SECONDS = 3.0
QUIET_SECONDS = 3.0
ENERGYPLUS_MODEL = Path(__file__).resolve().parent.parent / "examples" / "small-office.idf"
ENERGYPLUS_WORKFLOW = "energyplus-bench"
ENERGYPLUS_CONFIG = EnergyPlusConfig(weather_file="USA_CO_Golden-NREL.724666_TMY3.epw", timesteps_per_hour=60)
FAIRNESS_WORKFLOW = "fairness-bench"
FAIRNESS_LARGE = 6
FAIRNESS_VIOLATIONS = 450_000
FAIRNESS_WAIT_SECONDS = 1800.0
FAIRNESS_SCHEMA = {"type": "array", "items": {"type": "object", "properties": {"value": {"type": "integer"}}}}
# Every item breaks the schema once: 16 bytes each, about 7 MB in all.
LARGE_DOCUMENT = json.dumps([{"value": "abc"}] * FAIRNESS_VIOLATIONS, separators=(",", ":")).encode()
SMALL_DOCUMENT = json.dumps([{"value": n} for n in range(6)]).encode()
DOCUMENT = json.dumps({"building_id": "B-0001", "name": "Bench", "floor_area_m2": 100.0, "climate_zone": "4A"}).encode()


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def random_phase() -> None:
    time.sleep(random.uniform(0, PHASE_SECONDS))


def _wait_for(check, what: str, poll_seconds: float = POLL_SECONDS, wait_seconds: float = WAIT_SECONDS):
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        found = check()
        if found is not None:
            return found
        time.sleep(poll_seconds)
    raise TimeoutError(f"no {what} after {wait_seconds:.0f}s")


class Bench:
    def __init__(self, stack: LocalStack) -> None:
        services = stack.services
        self.settings = services.settings
        # The floor's objects go where the pipeline ignores them; submissions go to the inbox, as users' do.
        self.pipeline_bucket = services.storage_client.bucket(self.settings.bucket)
        self.inbox = services.storage_client.bucket(self.settings.inbox_bucket)
        self.db = services.firestore_client
        self.reads = services.run_reads
        self.store = services.run_store

    def upload(self, name: str, data: bytes = DOCUMENT, content_type: str = "application/json") -> tuple[float, int]:
        started = time.time()
        blob = (self.inbox if name.startswith("inbox/") else self.pipeline_bucket).blob(name)
        blob.upload_from_string(data, content_type=content_type)
        return started, int(blob.generation)

    def floor_hop_ms(self) -> float:
        name = f"{FLOOR_PREFIX}{uuid.uuid4().hex}.json"
        random_phase()
        started, _ = self.upload(name)
        ref = self.db.collection(FLOOR_COLLECTION).document(floor_doc_id(name))
        arrived = _wait_for(lambda: (ref.get().to_dict() or {}).get("arrived"), "floor record")
        return (arrived - started) * 1000

    def verdict(self, run_id: str, poll_seconds: float = POLL_SECONDS, wait_seconds: float = WAIT_SECONDS) -> RunDoc:
        def ended() -> RunDoc | None:
            found = self.reads.run(run_id)
            return found if found is not None and RunStatus(found.status).is_terminal else None

        return _wait_for(ended, f"verdict for run {run_id}", poll_seconds, wait_seconds)

    def run_end(self, run_id: str, poll_seconds: float = POLL_SECONDS) -> float:
        found = self.verdict(run_id, poll_seconds)
        if found.status != RunStatus.SUCCEEDED or found.ended_at is None:
            raise RuntimeError(f"benchmark run {run_id} ended {found.status}: {found.error}")
        return found.ended_at.timestamp()

    def submit(self, workflow: str = "json-basic", data: bytes = DOCUMENT) -> tuple[float, str]:
        name = inbox_object(DEMO_ORG, workflow, f"bench-{uuid.uuid4().hex}.json")
        started, generation = self.upload(name, data)
        return started, run_id_for(self.settings.inbox_bucket, name, generation)

    def fairness(self) -> tuple[float, float, bool]:
        """(small document's upload → verdict s, first large upload → last large verdict s, all large counted)."""
        step = StepSpec(
            key="values", name="Integer values", validator="json-schema", config={"schema": FAIRNESS_SCHEMA}
        )
        workflow = WorkflowDoc(org=DEMO_ORG, slug=FAIRNESS_WORKFLOW, name="Fairness benchmark", steps=[step])
        self.store.commit([Write(workflow_path(DEMO_ORG, FAIRNESS_WORKFLOW), workflow, "upsert")])
        with ThreadPoolExecutor(max_workers=FAIRNESS_LARGE) as pool:
            large = list(pool.map(lambda _: self.submit(FAIRNESS_WORKFLOW, LARGE_DOCUMENT), range(FAIRNESS_LARGE)))
        started, small = self.submit(FAIRNESS_WORKFLOW, SMALL_DOCUMENT)
        small_end = self.run_end(small)
        ends = [self.verdict(run_id, SIMULATION_POLL_SECONDS, FAIRNESS_WAIT_SECONDS) for _, run_id in large]
        counted = all(end.counts.ERROR == FAIRNESS_VIOLATIONS for end in ends)
        last = max(end.ended_at.timestamp() for end in ends if end.ended_at is not None)
        return small_end - started, last - min(s for s, _ in large), counted

    def end_to_end_ms(self) -> float:
        random_phase()
        started, run_id = self.submit()
        return (self.run_end(run_id) - started) * 1000

    def latency_and_burst(self, samples: int, burst: int) -> tuple[list[float], Burst]:
        for _ in range(WARMUP):
            self.end_to_end_ms()
        return [self.end_to_end_ms() for _ in range(samples)], self.burst(burst)

    def add_energyplus_workflow(self) -> None:
        step = StepSpec(
            key="simulate",
            name="EnergyPlus, 60 timesteps an hour",
            validator="energyplus",
            config=ENERGYPLUS_CONFIG.model_dump(exclude_none=True),
        )
        workflow = WorkflowDoc(org=DEMO_ORG, slug=ENERGYPLUS_WORKFLOW, name="EnergyPlus benchmark", steps=[step])
        self.store.commit([Write(workflow_path(DEMO_ORG, ENERGYPLUS_WORKFLOW), workflow, "upsert")])

    def pipeline_ms(self, workflow: str, filename: str, data: bytes) -> float:
        """Upload → verdict of one submission to `workflow`, whatever the verdict."""
        name = inbox_object(DEMO_ORG, workflow, f"{uuid.uuid4().hex[:8]}-{filename}")
        started, generation = self.upload(name, data, "application/octet-stream")
        found = self.verdict(run_id_for(self.settings.inbox_bucket, name, generation), SIMULATION_POLL_SECONDS)
        if found.ended_at is None or found.status not in (RunStatus.SUCCEEDED, RunStatus.FAILED):
            raise RuntimeError(f"the {workflow} bench run ended {found.status}: {found.error}")
        return (found.ended_at.timestamp() - started) * 1000

    def energyplus_pipeline_ms(self) -> float:
        name = inbox_object(DEMO_ORG, ENERGYPLUS_WORKFLOW, f"bench-{uuid.uuid4().hex}.idf")
        started, generation = self.upload(name, ENERGYPLUS_MODEL.read_bytes(), "text/plain")
        run_id = run_id_for(self.settings.inbox_bucket, name, generation)
        return (self.run_end(run_id, SIMULATION_POLL_SECONDS) - started) * 1000

    def burst(self, count: int) -> Burst:
        with ThreadPoolExecutor(max_workers=BURST_UPLOADERS) as pool:
            submitted = list(pool.map(lambda _: self.submit(), range(count)))
        ends = [self.verdict(run_id, wait_seconds=BURST_WAIT_SECONDS) for _, run_id in submitted]
        finished = [end.ended_at.timestamp() for end in ends if end.ended_at is not None]
        first_upload = min(started for started, _ in submitted)
        latencies = [(end - started) * 1000 for (started, _), end in zip(submitted, finished, strict=False)]
        # One run per upload: its id is derived from the upload, so a second would need a second document.
        sources = Counter(end.source for end in ends)
        runs = {run_id for _, run_id in submitted}
        return Burst(
            runs_per_s=count / (max(finished) - first_upload),
            latencies_ms=latencies,
            all_terminal=all(RunStatus(end.status).is_terminal for end in ends) and len(runs) == count,
            duplicate_runs=sum(n - 1 for n in sources.values()),
        )


@dataclass(frozen=True)
class Burst:
    runs_per_s: float
    latencies_ms: list[float]
    all_terminal: bool
    duplicate_runs: int


class _Counted:
    """A Firestore object whose calls are counted as Firestore bills them: a document in a get() or get_all() is a
    read, a write in a batch is a write. Anything else passes through."""

    def __init__(self, target: Any, counts: Counter[str]) -> None:
        self._target, self._counts = target, counts

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


class _CountedDocument(_Counted):
    def get(self, *args: Any, **kwargs: Any) -> Any:
        self._counts["reads"] += 1
        return self._target.get(*args, **kwargs)


class _CountedBatch(_Counted):
    def _write(self, method: str, ref: Any, *args: Any, **kwargs: Any) -> Any:
        self._counts["writes"] += 1
        return getattr(self._target, method)(getattr(ref, "_target", ref), *args, **kwargs)

    def create(self, ref: Any, *args: Any, **kwargs: Any) -> Any:
        return self._write("create", ref, *args, **kwargs)

    def set(self, ref: Any, *args: Any, **kwargs: Any) -> Any:
        return self._write("set", ref, *args, **kwargs)

    def update(self, ref: Any, *args: Any, **kwargs: Any) -> Any:
        return self._write("update", ref, *args, **kwargs)


class CountingFirestore(_Counted):
    """The pipeline's own Firestore client, wrapped so that every read and write it makes is counted."""

    def __init__(self, client: Any) -> None:
        super().__init__(client, Counter())

    def document(self, *path: str) -> _CountedDocument:
        return _CountedDocument(self._target.document(*path), self._counts)

    def batch(self) -> _CountedBatch:
        return _CountedBatch(self._target.batch(), self._counts)

    def get_all(self, references: list[Any], *args: Any, **kwargs: Any) -> Any:
        # One round trip, but billed as one read per document.
        self._counts["reads"] += len(references)
        return self._target.get_all([getattr(ref, "_target", ref) for ref in references], *args, **kwargs)

    @property
    def counts(self) -> Counter[str]:
        return self._counts


def firestore_ops_per_run(stack: LocalStack) -> tuple[int, int]:
    """(reads, writes) of one single-step inline run that passes, all stages included: the chained call and the
    two late finalize events. Run by a pipeline in this process, on buckets the stack's functions ignore, through
    a counting wrapper around the Firestore client the pipeline uses."""
    settings = stack.settings.model_copy(
        update={"bucket": "validibot-bench-ops", "inbox_bucket": "validibot-bench-ops-inbox", "inline_chain": True}
    )
    services = Services(settings)
    counting = CountingFirestore(services.firestore_client)
    services.firestore_client = counting  # type: ignore[misc]  # before anything is built on the client
    for bucket in (settings.bucket, settings.inbox_bucket):
        with contextlib.suppress(gexc.Conflict):
            services.storage_client.create_bucket(bucket)
    inbox = services.storage_client.bucket(settings.inbox_bucket)
    blob = inbox.blob(inbox_object(DEMO_ORG, "json-basic", f"ops-{uuid.uuid4().hex}.json"))
    blob.upload_from_string(DOCUMENT, content_type="application/json")
    upload = finalized_event(blob)
    run_id = run_id_for(upload.bucket, upload.name, upload.generation)
    pipeline = services.pipeline
    pipeline.handle(upload)
    measured = Counter(counting.counts)
    attempt = services.run_store.attempt(run_id, "01-1")
    if attempt is None or attempt.doc.state != AttemptState.COMPLETED:
        raise RuntimeError(f"the counted run {run_id} did not complete in its intake call")
    pipeline_bucket = services.storage_client.bucket(settings.bucket)
    late = [
        pipeline_bucket.get_blob(uri.split("/", 3)[3])
        for uri in (attempt.doc.input_uri, attempt.doc.expected_output_uri)
    ]
    before_late = Counter(counting.counts)
    for blob in late:
        pipeline.handle(finalized_event(blob))
    measured.update(counting.counts - before_late)
    return measured["reads"], measured["writes"]


def energyplus_direct_ms() -> float:
    """The same prepared model and command line the validator uses, run by hand: the floor for the pipeline."""
    binary = energyplus_binary()
    with tempfile.TemporaryDirectory(prefix="validibot-eplus-") as scratch:
        model, refusals, expand = prepare_model(ENERGYPLUS_MODEL, Path(scratch), ENERGYPLUS_CONFIG.run_settings())
        assert model is not None, refusals
        output = Path(scratch) / "output"
        output.mkdir()
        weather = bundled_weather(binary, ENERGYPLUS_CONFIG.weather_file or "")
        argv = energyplus_argv(binary, model, output, weather, design_days_only=False, expand=expand)
        started = time.perf_counter()
        subprocess.run(argv, cwd=output, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        return (time.perf_counter() - started) * 1000


def run_benchmark(samples: int, burst: int, energyplus_samples: int, log_dir: Path) -> str:
    # Six concurrent jobs, so that the fairness run measures sharing the machine, not the busy launcher's retries.
    settings = Settings(
        bucket="validibot-bench",
        inbox_bucket="validibot-bench-inbox",
        local_max_concurrent_jobs=FAIRNESS_LARGE,
        signing_secret=secrets.token_urlsafe(32),
    )
    stack = LocalStack(Ports.free(), settings, log_dir)
    floor_port, unchained_port = Ports.free().functions, Ports.free().functions
    try:
        stack.start(web=False)
        stack.start_function_server("bench-floor", Path(__file__).with_name("bench_floor.py"), "record", floor_port)
        # The same functions with the chain off, for the comparison; the push subscription says which one is fed.
        stack.start_functions(
            "functions-unchained", unchained_port, settings.model_copy(update={"inline_chain": False})
        )
        subscriber = stack.services.subscriber_client
        floor_subscription = subscriber.subscription_path(settings.project, "bench-floor")
        subscriber.create_subscription(
            request={
                "name": floor_subscription,
                "topic": f"projects/{settings.project}/topics/{settings.notifications_topic}",
                "push_config": {"push_endpoint": push_endpoint(f"http://127.0.0.1:{floor_port}", settings)},
            }
        )
        bench = Bench(stack)

        for _ in range(WARMUP):
            bench.floor_hop_ms()
        floor_ms = [bench.floor_hop_ms() for _ in range(samples)]
        # The floor's subscription would otherwise add a push per pipeline object to what is measured next.
        subscriber.delete_subscription(subscription=floor_subscription)
        reads_per_run, writes_per_run = firestore_ops_per_run(stack)
        chained_e2e_ms, chained_burst = bench.latency_and_burst(samples, burst)
        pipeline_subscription = subscriber.subscription_path(settings.project, settings.pipeline_subscription)
        # The chained runs' own finalize events are still being delivered: the comparison starts after them.
        quiet(stack.log_dir / "functions.log")
        feed(subscriber, pipeline_subscription, push_endpoint(f"http://127.0.0.1:{unchained_port}", settings))
        unchained_e2e_ms, unchained_burst = bench.latency_and_burst(samples, burst)
        quiet(stack.log_dir / "functions-unchained.log")
        feed(subscriber, pipeline_subscription, push_endpoint(stack.functions_url, settings))
        # Before the fairness run, whose aftermath (emulators still catching up) would slow the simulations.
        bench.add_energyplus_workflow()
        direct_ms, pipeline_ms = [], []
        for _ in range(energyplus_samples):
            direct_ms.append(energyplus_direct_ms())
            pipeline_ms.append(bench.energyplus_pipeline_ms())
        family = family_figures(stack.services.workflows.apply, bench.pipeline_ms)
        small_verdict_s, large_span_s, large_counted = bench.fairness()
    finally:
        stack.stop()

    floor_p50 = statistics.median(floor_ms)
    e2e_p50 = statistics.median(chained_e2e_ms)
    return json.dumps(
        {
            "samples": samples,
            "floor_hop_p50_ms": round(floor_p50, 1),
            "e2e_p50_ms": round(e2e_p50, 1),
            "e2e_p95_ms": round(_percentile(chained_e2e_ms, 0.95), 1),
            "e2e_p50_over_3_floor_hops": round(e2e_p50 / (3 * floor_p50), 2),
            "e2e_p50_over_floor_hop": round(e2e_p50 / floor_p50, 2),
            "unchained_e2e_p50_ms": round(statistics.median(unchained_e2e_ms), 1),
            "burst_runs": burst,
            "burst_runs_per_s": round(chained_burst.runs_per_s, 1),
            "burst_latency_p50_ms": round(statistics.median(chained_burst.latencies_ms), 1),
            "burst_latency_p95_ms": round(_percentile(chained_burst.latencies_ms, 0.95), 1),
            "burst_all_terminal": chained_burst.all_terminal and unchained_burst.all_terminal,
            "burst_duplicate_runs": chained_burst.duplicate_runs + unchained_burst.duplicate_runs,
            "unchained_burst_runs_per_s": round(unchained_burst.runs_per_s, 1),
            "burst_speedup_over_unchained": round(chained_burst.runs_per_s / unchained_burst.runs_per_s, 2),
            "firestore_reads_per_run": reads_per_run,
            "firestore_writes_per_run": writes_per_run,
            "energyplus_samples": energyplus_samples,
            "energyplus_direct_p50_ms": round(statistics.median(direct_ms), 1),
            "energyplus_pipeline_p50_ms": round(statistics.median(pipeline_ms), 1),
            "energyplus_overhead_ms": round(statistics.median(pipeline_ms) - statistics.median(direct_ms), 1),
            "energyplus_overhead_ratio": round(statistics.median(pipeline_ms) / statistics.median(direct_ms), 3),
            **family,
            "fairness_large_documents": FAIRNESS_LARGE,
            "fairness_large_mb": round(len(LARGE_DOCUMENT) / 1e6, 1),
            "fairness_small_verdict_s": round(small_verdict_s, 2),
            "fairness_large_span_s": round(large_span_s, 1),
            "fairness_large_all_violations_counted": large_counted,
            "cpus": os.cpu_count(),
        }
    )


def feed(subscriber: Any, subscription: str, endpoint: str) -> None:
    """Point the pipeline's push subscription at another functions server, then let what is in flight drain."""
    subscriber.modify_push_config(request={"subscription": subscription, "push_config": {"push_endpoint": endpoint}})
    time.sleep(SWITCH_SETTLE_SECONDS)


def quiet(log_path: Path) -> float:
    """Wait until a functions server has logged nothing for QUIET_SECONDS (its deliveries are done); seconds waited."""
    started = last_change = time.monotonic()
    size = log_path.stat().st_size
    while time.monotonic() - last_change < QUIET_SECONDS and time.monotonic() - started < WAIT_SECONDS * 5:
        time.sleep(0.5)
        if (now := log_path.stat().st_size) != size:
            size, last_change = now, time.monotonic()
    return time.monotonic() - started


if __name__ == "__main__":
    print(run_benchmark(60, 1000, 5, Path(tempfile.mkdtemp(prefix="validibot-bench-"))))
