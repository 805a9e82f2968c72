#!/usr/bin/env python3
"""What llama-server (`run.py engine`) costs and how fast it answers, on this machine: starts it
with the project's GGUF (-np N -c C -t T), reads its memory (RSS and PSS from
/proc/PID/smaps_rollup) before any request and after warming, then streams chat completions with
the agent's own first-turn request (the openai brain's persona, tools and specs, as
`run.py engine` warms them) plus a short question: first-token latency of one request alone and
of N at once, with every slot's prompt cached (warmed) and, first, with cold slots. Prints one
JSON object. Usage: .venv/bin/python scripts/engine_probe.py [--parallel 4] [--rounds 3]
(run it inside ./scripts/loopback.sh to keep it off the network)."""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

QUESTIONS = ["What is the capital of France?", "How far away is the moon?", "Why is the sky blue?",
             "What do bees make?", "Who wrote Hamlet?", "What is the largest ocean?", "How many legs has a spider?",
             "What is the boiling point of water?"]


def memory(pid: int) -> dict:
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name.strip()] = int(value.split()[0]) * 1024
    return {"rss_mb": round(fields["Rss"] / 1e6), "pss_mb": round(fields["Pss"] / 1e6)}


def stream(port: int, body: dict, question: str, max_tokens: int) -> dict:
    """One streamed chat completion: seconds to the first content token, tokens, seconds in all."""
    messages = [*body["messages"][:-1], {"role": "user", "content": question}]
    payload = json.dumps({**body, "messages": messages, "max_tokens": max_tokens, "stream": True})
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    connection.request("POST", "/v1/chat/completions", payload, {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200, response.read()
    first = None
    tokens = 0
    for raw in response:
        line = raw.decode().strip()
        if not line.startswith("data:") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[5:])
        for choice in chunk.get("choices", []):
            delta = choice.get("delta") or {}
            if delta.get("content") or delta.get("tool_calls"):
                tokens += 1
                if first is None:
                    first = time.perf_counter() - started
    connection.close()
    return {"first_token_ms": round(1000 * first) if first is not None else None, "tokens": tokens,
            "total_s": time.perf_counter() - started}


def at_once(port: int, body: dict, questions: list[str], max_tokens: int) -> list[dict]:
    results: list[dict] = [{}] * len(questions)
    barrier = threading.Barrier(len(questions))

    def one(i: int) -> None:
        barrier.wait()
        results[i] = stream(port, body, questions[i], max_tokens)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(questions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--context", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=40)
    args = parser.parse_args()

    from agent.brains.llama_chat import LLM_GGUF
    from agent.config import load_config
    from agent.runtime.llama_server import LlamaServer, ensure_llama_server
    from agent.runtime.model_files import ensure_files, resolve_cache_dir

    config = load_config(environ={})
    cache_dir = resolve_cache_dir(config.models.cache_dir)
    binary = ensure_llama_server(cache_dir)
    gguf = ensure_files((LLM_GGUF,), cache_dir, progress=False)[LLM_GGUF.relpath]
    from agent.local_engine import first_turn_request

    body = first_turn_request(config)
    body.pop("max_tokens")
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    n = args.parallel
    server = LlamaServer(binary, gguf, port, parallel=n, context=args.context, threads=args.threads,
                         log_path=Path("artifacts/engine-probe.log"))
    report: dict = {"parallel": n, "context": args.context, "threads": args.threads, "max_tokens": args.max_tokens}
    Path("artifacts").mkdir(exist_ok=True)
    server.start()
    try:
        time.sleep(1.0)
        report["memory_before_any_request"] = memory(server.process.pid)
        cold = at_once(port, body, QUESTIONS[:n], args.max_tokens)
        report["cold_at_once_first_token_ms"] = [r["first_token_ms"] for r in cold]
        server.warm_slots({**body, "max_tokens": 1})  # every slot: the persona, tools and an empty user turn
        report["memory_after_warming"] = memory(server.process.pid)
        alone, together, rates_alone, rates_together = [], [], [], []
        for round_ in range(args.rounds):
            question = QUESTIONS[(round_ + n) % len(QUESTIONS)]
            result = stream(port, body, question, args.max_tokens)
            alone.append(result["first_token_ms"])
            rates_alone.append(result["tokens"] / result["total_s"])
            results = at_once(port, body, [QUESTIONS[(round_ * n + i + 1) % len(QUESTIONS)] for i in range(n)],
                              args.max_tokens)
            together.append([r["first_token_ms"] for r in results])
            rates_together.append(sum(r["tokens"] for r in results) / max(r["total_s"] for r in results))
        report["one_alone_first_token_ms"] = alone
        report["one_alone_median_ms"] = statistics.median(alone)
        report["at_once_first_token_ms"] = together
        report["at_once_median_ms"] = statistics.median(x for r in together for x in r)
        report["at_once_worst_ms"] = max(x for r in together for x in r)
        report["tokens_per_s_alone"] = round(statistics.median(rates_alone), 1)
        report["tokens_per_s_at_once_total"] = round(statistics.median(rates_together), 1)
        report["memory_after"] = memory(server.process.pid)
    finally:
        server.stop()
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
