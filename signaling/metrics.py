"""Prometheus metrics for one app: sessions, turns, barge-ins, errors, stage latencies, playout.

`AgentMetrics` owns its own CollectorRegistry (several apps in one process do not clash) and is
fed by observing agents, not by calls sprinkled through the pipeline: `watch(agent)` listens to
the session's events (`timeline`, `barge_in`, `error`) and to its outbound track's per-frame
lateness. `exposition()` renders the text format served at `GET /metrics`.

| metric | type | what |
|---|---|---|
| `voice_agent_active_sessions` | gauge | sessions open now |
| `voice_agent_sessions_total` | counter | sessions opened |
| `voice_agent_turns_total{outcome}` | counter | finished turns: answered, interrupted, error, empty |
| `voice_agent_barge_ins_total` | counter | times the user spoke over the agent |
| `voice_agent_interruptions_total{outcome,reason}` | counter | sounds over the agent: `confirmed`, or `resumed` (too short, noise, backchannel) |
| `voice_agent_errors_total{kind}` | counter | turn errors by kind (timeout, exception class) |
| `voice_agent_stage_latency_seconds{stage}` | histogram | each stage of a turn after the end of the user's speech |
| `voice_agent_answer_gaps_total` | counter | silences longer than 40 ms inside an answer |
| `voice_agent_end_of_turn_verdicts_total{verdict}` | counter | the end-of-turn model's verdicts at pauses: `complete`, `incomplete` |
| `voice_agent_end_of_turn_seconds` | histogram | time the end-of-turn model took per verdict |
| `voice_agent_preemptions_total{result}` | counter | answers started at a pause: `hit` (the turn ended there, it was used), `discarded` (the user went on) |
| `voice_agent_preemption_wasted_seconds_total` | counter | time discarded preemptive answers had been working |
| `voice_agent_tool_calls_total{tool}` | counter | tool calls the model made, per tool (`(unknown)` for names no tool has) |
| `voice_agent_tool_errors_total{tool,status}` | counter | tool calls that failed: `invalid` arguments, `unknown` tool, `error` (raised), `timeout` |
| `voice_agent_tool_seconds{tool}` | histogram | how long each tool ran (cancelled calls included) |
| `voice_agent_outbound_frame_lateness_seconds` | histogram | how late each outbound 20 ms frame left |
| `voice_agent_model_load_seconds{model}` | gauge | time to load each model (and `total`) |
| `voice_agent_queue_wait_seconds` | histogram | per turn: time its model work waited behind other calls' (CPU or LLM slot) |
| `voice_agent_model_steps_total{model}` | counter | model steps run (a token, a transcription, a sentence of speech, a verdict) |
| `voice_agent_model_wait_seconds_total{model}` | counter | time those steps waited for the CPU |
| `voice_agent_model_busy_seconds_total{model}` | counter | time those steps ran |
| `voice_agent_load` | gauge | the admission load: 1.0 = full (see README, "Many calls at once") |
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from agent.events import (OUTCOMES, BargeIn, EndOfTurnVerdict, Event, Interruption, PreemptionDiscarded,
                          ToolCallFinished, TurnError, TurnFinished)
from agent.models import AgentModels
from agent.runtime.scheduler import shared_scheduler

from .attach import AttachedAgent

STAGE_BUCKETS_S = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0)
TOOL_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LATENESS_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25)


class _SchedulerCollector:
    """The process's model steps, read from the shared scheduler at each scrape."""

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        by_model = shared_scheduler().stats.by_model
        families = [CounterMetricFamily("voice_agent_model_steps", "Model steps run.", labels=["model"]),
                    CounterMetricFamily("voice_agent_model_wait_seconds", "Time model steps waited for the CPU.",
                                        labels=["model"]),
                    CounterMetricFamily("voice_agent_model_busy_seconds", "Time model steps ran.", labels=["model"])]
        for model, figures in sorted(by_model.items()):
            for family, value in zip(families, figures):
                family.add_metric([model], value)
        return families


class AgentMetrics:
    """The app's metrics and the observer that feeds them (see the module docstring)."""

    def __init__(self, active_sessions: Callable[[], int] | None = None,
                 registry: CollectorRegistry | None = None, load: Callable[[], float] | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.active_sessions = Gauge("voice_agent_active_sessions", "Sessions open now.", registry=r)
        if active_sessions is not None:
            self.active_sessions.set_function(active_sessions)
        self.sessions = Counter("voice_agent_sessions", "Sessions opened.", registry=r)
        self.turns = Counter("voice_agent_turns", "Finished turns by outcome.", ["outcome"], registry=r)
        self.barge_ins = Counter("voice_agent_barge_ins", "Times the user spoke over the agent.", registry=r)
        self.errors = Counter("voice_agent_errors", "Turn errors by kind.", ["kind"], registry=r)
        self.stage_latency = Histogram(
            "voice_agent_stage_latency_seconds",
            "When each stage of a turn first produced something, after the end of the user's speech.",
            ["stage"], buckets=STAGE_BUCKETS_S, registry=r)
        self.answer_gaps = Counter("voice_agent_answer_gaps", "Silences longer than 40 ms inside an answer.",
                                   registry=r)
        self.interruptions = Counter("voice_agent_interruptions", "Sounds over the agent by outcome and reason.",
                                     ["outcome", "reason"], registry=r)
        self.verdicts = Counter("voice_agent_end_of_turn_verdicts", "End-of-turn model verdicts at pauses.", ["verdict"],
                                registry=r)
        self.verdict_latency = Histogram("voice_agent_end_of_turn_seconds", "Time the end-of-turn model took per verdict.",
                                         buckets=(0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5), registry=r)
        self.preemptions = Counter("voice_agent_preemptions", "Answers started at a pause, by result (hit, discarded).",
                                   ["result"], registry=r)
        self.preemption_wasted = Counter("voice_agent_preemption_wasted_seconds",
                                         "Time discarded preemptive answers had been working.", registry=r)
        self.tool_calls = Counter("voice_agent_tool_calls", "Tool calls the model made, per tool.", ["tool"], registry=r)
        self.tool_errors = Counter("voice_agent_tool_errors", "Tool calls that failed, per tool and status.",
                                   ["tool", "status"], registry=r)
        self.tool_seconds = Histogram("voice_agent_tool_seconds", "How long each tool ran.", ["tool"],
                                      buckets=TOOL_BUCKETS_S, registry=r)
        self.frame_lateness = Histogram(
            "voice_agent_outbound_frame_lateness_seconds", "How late each outbound audio frame was handed to the sender.",
            buckets=LATENESS_BUCKETS_S, registry=r)
        self.model_load = Gauge("voice_agent_model_load_seconds", "Seconds to load each model.", ["model"], registry=r)
        self.queue_wait = Histogram("voice_agent_queue_wait_seconds",
                                    "Per turn: time its model work waited behind other calls' work.",
                                    buckets=STAGE_BUCKETS_S, registry=r)
        r.register(_SchedulerCollector())
        self.load = Gauge("voice_agent_load", "Admission load: 1.0 = no room for another call.", registry=r)
        if load is not None:
            self.load.set_function(load)
        for outcome in OUTCOMES:
            self.turns.labels(outcome=outcome)  # present (at 0) before the first turn
        for result in ("hit", "discarded"):
            self.preemptions.labels(result=result)

    # -- feeding ---------------------------------------------------------------------------
    def record_models(self, models: AgentModels) -> None:
        for model, seconds in models.load_times().items():
            self.model_load.labels(model=model).set(seconds)

    def watch(self, agent: AttachedAgent) -> None:
        """Observe one agent for its whole life: its events and its outbound frames."""
        self.sessions.inc()
        agent.add_event_listener(self.record_event)
        lateness = self.frame_lateness
        agent.outbound.frame_listeners.append(lambda lateness_s, _filled, _samples: lateness.observe(lateness_s))

    def record_event(self, event: Event) -> None:
        """Count one session event (others are ignored)."""
        if isinstance(event, TurnFinished):
            self.turns.labels(outcome=event.outcome).inc()
            for stage, ms in event.ms.items():
                if stage != "speech_end":  # the origin: always 0
                    self.stage_latency.labels(stage=stage).observe(max(0.0, ms / 1000.0))
            gaps = event.playout.get("gaps", 0)
            if gaps:
                self.answer_gaps.inc(gaps)
            if event.preemptive:
                self.preemptions.labels(result="hit").inc()
            self.queue_wait.observe(event.queue_wait_ms / 1000.0)
        elif isinstance(event, Interruption):
            self.interruptions.labels(outcome=event.outcome, reason=event.reason).inc()
        elif isinstance(event, EndOfTurnVerdict):
            self.verdicts.labels(verdict="complete" if event.complete else "incomplete").inc()
            self.verdict_latency.observe(event.ms / 1000.0)
        elif isinstance(event, PreemptionDiscarded):
            self.preemptions.labels(result="discarded").inc()
            self.preemption_wasted.inc(event.ran_ms / 1000.0)
        elif isinstance(event, BargeIn):
            self.barge_ins.inc()
        elif isinstance(event, TurnError):
            self.errors.labels(kind=event.kind).inc()
        elif isinstance(event, ToolCallFinished):
            tool = "(unknown)" if event.status == "unknown" else event.name  # model-made names: bounded labels
            self.tool_calls.labels(tool=tool).inc()
            if event.status not in ("ok", "cancelled"):
                self.tool_errors.labels(tool=tool, status=event.status).inc()
            if event.status not in ("invalid", "unknown"):  # those never ran
                self.tool_seconds.labels(tool=tool).observe(event.ms / 1000.0)

    # -- reading ---------------------------------------------------------------------------
    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text format and its Content-Type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
