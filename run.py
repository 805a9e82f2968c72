#!/usr/bin/env python3
"""Voice agent command line.

  python run.py [serve]          start the agent (web client + WebRTC signaling)
  python run.py models           assemble and verify the model files (add --verify to re-hash)
  python run.py bench            headless loopback turns against an in-process agent
  python run.py engine           llama.cpp's own server (continuous batching) with the project's GGUF on
                                 127.0.0.1, for brain.kind = openai (built once from the pinned sources)

Every option of config/default.toml can be set with --set section.key=value (repeatable) or an
environment variable VOICE_AGENT_<SECTION>_<KEY>; the flags below are shortcuts.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from agent.config import DEFAULT_TOML, Config, ConfigError, load_config

log = logging.getLogger("voice-agent")

ENGINE_PORT = 8081  # `run.py engine`'s default port (the agent's own is server.port, 8080)


def _config_keys_help() -> str:
    lines = []
    section = ""
    for raw in DEFAULT_TOML.read_text().splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif "=" in line and not line.startswith("#") and section:
            key, _, rest = line.partition("=")
            value, _, comment = rest.partition("#")
            lines.append(f"  {section}.{key.strip():<22} {comment.strip()} (default {value.strip()})")
    return "configuration keys (--set section.key=value, or VOICE_AGENT_SECTION_KEY):\n" + "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    # Defaults are SUPPRESS so options given before or after the subcommand both count.
    def common_options(agent_port: bool = True) -> argparse.ArgumentParser:
        common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
        common.add_argument("--config", metavar="FILE", help="a TOML file overriding config/default.toml")
        common.add_argument("--set", dest="overrides", action="append", metavar="SECTION.KEY=VALUE",
                            help="override one configuration key (repeatable)")
        common.add_argument("--host", help="bind address (server.host, default 127.0.0.1: this machine only)")
        common.add_argument("--expose", action="store_true", help="listen on every interface (server.host=0.0.0.0): "
                            "anyone who can reach this machine can call the agent; consider server.auth_token")
        if agent_port:  # `engine` has a --port of its own: the engine's
            common.add_argument("--port", type=int, help="HTTP port (server.port)")
        common.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (server.log_level)")
        common.add_argument("--ice-host", action="append", metavar="ADDR",
                            help="offer only this local address as an ICE host candidate (ice.host_addresses; "
                                 "repeatable)")
        return common

    common = common_options()

    parser = argparse.ArgumentParser(
        description="WebRTC real-time voice agent.", parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_config_keys_help(),
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", parents=[common], help="start the agent (default)",
                   formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_config_keys_help())
    models = sub.add_parser("models", parents=[common], help="assemble and verify model files")
    models.add_argument("--verify", action="store_true", help="re-hash every model file (ignore the verified stamps)")
    engine = sub.add_parser("engine", parents=[common_options(agent_port=False)],
                            help="llama.cpp's server with the project's GGUF on 127.0.0.1 (for brain.kind = openai)",
                            description="Start llama.cpp's own server (llama-server: continuous batching, one prompt "
                                        "cache per slot) with the project's GGUF on 127.0.0.1, warm every slot with "
                                        "the agent's system prompt, print the settings that point the agent at it, "
                                        "and stop it on Ctrl-C or SIGTERM. The first run builds llama-server from "
                                        "the llama.cpp sources in the pinned llama-cpp-python sdist (~7 min on 2 "
                                        "cores; needs cmake and a C++ compiler) into the model cache.")
    engine.add_argument("--port", type=int, default=argparse.SUPPRESS, help=f"the engine's port on 127.0.0.1 (default {ENGINE_PORT})")
    engine.add_argument("--parallel", "-np", type=int, default=4, metavar="N",
                        help="slots: requests decoded at once, each with its own prompt cache (default 4)")
    engine.add_argument("--context", "-c", type=int, default=8192, metavar="TOKENS",
                        help="the KV cache in tokens, shared by the slots: context / parallel each (default 8192)")
    engine.add_argument("--threads", "-t", type=int, default=1, metavar="N",
                        help="CPU threads for generation and prompt evaluation (default 1: beside an agent on 2 "
                             "cores, four callers at once waited a median 5.8 s with 1 against 7.9 s with 2, "
                             "scripts/bench-many-callers.sh; an engine with cores of its own wants them all: "
                             "alone, 10.1 tokens/s with 2 against 4.7 with 1, scripts/engine_probe.py)")
    engine.add_argument("--api-key-env", metavar="NAME", default=argparse.SUPPRESS, help="require the API key held by this environment "
                        "variable (the agent then needs openai.api_key_env = NAME)")
    engine.add_argument("--no-warm", action="store_true", help="do not warm the slots with the agent's system prompt")
    engine.add_argument("--build-only", action="store_true", help="build llama-server if the cache has none, then "
                        "exit (./dev.sh install runs this)")
    bench = sub.add_parser("bench", parents=[common], help="headless loopback latency benchmark",
                           description="Headless loopback latency benchmark: plays spoken questions to the agent "
                                       "over WebRTC on 127.0.0.1 and reports each turn's timeline.")
    bench.add_argument("--turns", type=int, default=5, help="questions to play per call (default 5)")
    bench.add_argument("--wav", action="append", default=[], help="a 16-bit WAV with a spoken question (repeatable; "
                       "default: questions the agent's own voice speaks)")
    bench.add_argument("--stub", action="store_true", help="instant scripted brain and tone voice: measure the "
                       "pipeline and transport alone")
    bench.add_argument("--concurrency", type=int, default=1, metavar="K", help="K calls at once (default 1)")
    bench.add_argument("--together", action="store_true", help="with --concurrency K: all K callers finish a question "
                       "at the same moment, --turns rounds of it: each caller's voice-to-voice, gaps inside answers, "
                       "queue waits and refused calls")
    bench.add_argument("--url", help="benchmark a running agent at this URL instead of one in-process")
    bench.add_argument("--prefetch", type=int, default=1, help="the client's receive jitter-buffer prefetch in packets "
                       "(default 1; the agent's own is ice.jitter_prefetch)")
    bench.add_argument("--out", metavar="DIR", help="where to write the JSON, Markdown and PNG (default artifacts/bench)")
    bench.add_argument("--report", action="store_true", help="run the standard set and rewrite BENCHMARKS.md")
    bench.add_argument("--soak", type=float, metavar="MINUTES", help="one long call with a question every few "
                       "seconds (stub models unless --real): outbound clock drift, lateness and memory over time "
                       "(at most 120 minutes)")
    bench.add_argument("--real", action="store_true", help="with --soak: use the real models")
    bench.add_argument("--asr-windows", action="store_true", help="whisper's encoder window against accuracy: time "
                       "and word error rate per window on questions spoken by several voices with noise")
    bench.add_argument("--end-of-turn", action="store_true", help="the end-of-turn model's accuracy on whole and "
                       "cut-off spoken questions (several voices, noise) and its time per decision")
    bench.add_argument("--backchannels", action="store_true", help="what short sounds over the agent are taken for: "
                       "backchannels forgiven and real interruptions stopping the answer, through whisper")
    bench.add_argument("--turn-taking", action="store_true", help="thinking pauses mid-question, and backchannels "
                       "and a cough over answers, over WebRTC: cut-offs, resumptions and their delays")
    bench.add_argument("--real-call", action="store_true", help="real-shaped calls, one per voice: facts, a statement "
                       "and its recall, two sentences with a pause, arithmetic, the time, a barge-in with a follow-up "
                       "question, thanks, chit-chat; voice-to-voice per kind of turn and where each slow turn's time went")
    bench.add_argument("--floor", action="store_true", help="time each stage alone on idle cores (VAD, ASR, LLM "
                       "first token and per token, each CPU voice's first PCM) at 1 and 2 threads")
    bench.add_argument("--tool-prompt", action="store_true", help="what tools cost the cascade's LLM: first-token "
                       "latency with and without the tools prompt (cached and cold), and the calculator round trip")
    bench.add_argument("--voxtral-arch", action="store_true", help="time the real-size Voxtral-Mini-3B architecture "
                       "with random weights (needs a CUDA GPU to mean anything): audio encoding, first token, "
                       "inter-token latency for 2, 5 and 10 s utterances")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    overrides: dict[str, str] = {}
    for item in getattr(args, "overrides", []):
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        overrides[key.strip()] = value
    if getattr(args, "expose", False):
        overrides["server.host"] = "0.0.0.0"
    for flag, key in (("host", "server.host"), ("port", "server.port"), ("log_level", "server.log_level")):
        if hasattr(args, flag):
            overrides[key] = str(getattr(args, flag))
    if hasattr(args, "ice_host"):
        overrides["ice.host_addresses"] = ",".join(args.ice_host)
    return load_config(getattr(args, "config", None), overrides)


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("aioice", "aiortc", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))


async def _serve(config: Config) -> None:
    from agent.models import load_models
    from signaling.server import serve_until_signalled

    models = await asyncio.to_thread(load_models, config, sys.stderr.isatty())
    try:
        await models.warm_up()
        await serve_until_signalled(config, models)
    finally:
        models.close()


def _models(config: Config, verify: bool) -> int:
    from agent.models import all_model_files
    from agent.runtime.model_files import ModelFileError, ensure_files, resolve_cache_dir, verify_files

    cache_dir = resolve_cache_dir(config.models.cache_dir)
    files = all_model_files(config)
    try:
        paths = ensure_files(files, cache_dir, progress=True)
    except ModelFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if verify:
        problems = verify_files(files, cache_dir, progress=True)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            return 1
    for relpath, path in paths.items():
        print(f"ok  {relpath:45s} {path.stat().st_size:>13,d} bytes  {path}")
    return 0


def _engine(config: Config, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import os
    import signal
    import time

    from agent.brains.llama_chat import LLM_GGUF
    from agent.runtime.llama_server import VERSION, LlamaServer, ensure_llama_server
    from agent.runtime.model_files import ensure_files, resolve_cache_dir

    if hasattr(args, "host") or getattr(args, "expose", False):
        parser.error("engine: it binds 127.0.0.1 only (a local engine for an agent on this machine); no --host/--expose")
    port = getattr(args, "port", ENGINE_PORT)
    if not 0 < port < 65536 or args.parallel < 1 or args.threads < 1 or args.context < 256 * args.parallel:
        parser.error("engine: --port 1-65535, --parallel and --threads at least 1, --context at least 256 a slot")
    api_key = ""
    if hasattr(args, "api_key_env"):
        api_key = os.environ.get(args.api_key_env, "")
        if not api_key:
            parser.error(f"engine: --api-key-env {args.api_key_env}: that environment variable is not set")

    def interrupted(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)  # SIGTERM stops the engine the way Ctrl-C does
    cache_dir = resolve_cache_dir(config.models.cache_dir)
    binary = ensure_llama_server(cache_dir, progress=True)
    if args.build_only:
        print(f"ok  llama-server {VERSION:37s} {binary.stat().st_size:>13,d} bytes  {binary}")
        return 0
    gguf = ensure_files((LLM_GGUF,), cache_dir, progress=sys.stderr.isatty())[LLM_GGUF.relpath]
    server = LlamaServer(binary, gguf, port, parallel=args.parallel, context=args.context, threads=args.threads,
                         api_key=api_key)
    try:
        started = time.perf_counter()
        server.start()
        print(f"== llama-server {VERSION} (pid {server.process.pid}) on {server.url}: {args.parallel} slots of "
              f"{args.context // args.parallel} tokens, {args.threads} threads, ready in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
        if not args.no_warm:
            from agent.local_engine import first_turn_request

            seconds = server.warm_slots(first_turn_request(config))
            print(f"== every slot holds the agent's system prompt (warmed in {max(seconds):.1f} s)", flush=True)
        settings = ["brain.kind=openai", f"openai.base_url={server.url}"]
        if api_key:
            settings.append(f"openai.api_key_env={args.api_key_env}")
        print("== point the agent at it:\n   python run.py serve " + " ".join(f"--set {s}" for s in settings)
              + "\n   or in a config file:\n     [brain]\n     kind = \"openai\"\n     [openai]\n"
              + f"     base_url = \"{server.url}\""
              + (f"\n     api_key_env = \"{args.api_key_env}\"" if api_key else "")
              + f"\n   (set server.capacity_calls to the calls it serves well: {args.parallel} slots decode at once)"
              + "\n== Ctrl-C stops it", flush=True)
        while server.running():
            time.sleep(0.5)
        print(f"error: llama-server exited by itself with status {server.process.returncode}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("== stopping llama-server", file=sys.stderr, flush=True)
        return 0
    finally:
        code = server.stop()
        if code is not None:
            print(f"== llama-server stopped (exit status {code})", file=sys.stderr, flush=True)


def _bench(config: Config, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.soak is not None:
        from bench.soak import soak

        if not 0 < args.soak <= 120:
            parser.error("--soak takes 0 < MINUTES <= 120")
        result = asyncio.run(soak(config, args.soak, stub=not args.real, out_dir=args.out))
        return 0 if result["stalls"] == 0 else 1
    if args.asr_windows:
        from bench.asr_windows import run_asr_windows

        asyncio.run(run_asr_windows(config, args.out))
        return 0
    if args.end_of_turn:
        from bench.end_of_turn import run_end_of_turn

        asyncio.run(run_end_of_turn(config, args.out))
        return 0
    if args.together:
        from bench.together import run_together

        asyncio.run(run_together(config, args.concurrency, args.turns, args.wav, args.out))
        return 0
    if args.backchannels:
        from bench.backchannels import run_backchannels

        asyncio.run(run_backchannels(config, args.out))
        return 0
    if args.turn_taking:
        from bench.turn_taking import run_turn_taking

        asyncio.run(run_turn_taking(config, args.out))
        return 0
    if args.real_call:
        from bench.real_call import run_real_calls

        asyncio.run(run_real_calls(config, args.out))
        return 0
    if args.floor:
        from bench.floor import run_floor

        run_floor(config, args.out)
        return 0
    if args.tool_prompt:
        from bench.tool_prompt import run_tool_prompt

        run_tool_prompt(config, args.out)
        return 0
    if args.voxtral_arch:
        from bench.voxtral_arch import print_architecture_timings

        return print_architecture_timings(args.out)
    if args.report:
        from bench.standard import write_benchmarks_md

        return asyncio.run(write_benchmarks_md(config, turns_override=args.turns if args.turns != 5 else None))
    from bench.runner import run_bench

    if args.turns < 1 or args.concurrency < 1:
        parser.error("--turns and --concurrency must be at least 1")
    return asyncio.run(run_bench(config, turns=args.turns, wavs=args.wav, stub=args.stub,
                                 concurrency=args.concurrency, url=args.url, out_dir=args.out,
                                 client_prefetch=args.prefetch))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        parser.error(str(exc))
    setup_logging(config.server.log_level)
    command = args.command or "serve"
    from agent.brains.base import ToolsUnsupported
    from agent.brains.voxtral import VoxtralUnavailable
    from agent.runtime.model_files import ModelFileError
    from agent.tools.schema import ToolDefinitionError

    try:
        if command == "models":
            return _models(config, args.verify)
        if command == "bench":
            return _bench(config, args, parser)
        if command == "engine":
            return _engine(config, args, parser)
        asyncio.run(_serve(config))
    except (ModelFileError, VoxtralUnavailable, ToolsUnsupported, ToolDefinitionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
