"""What short sounds over the agent are taken for: `run.py bench --backchannels`.

Backchannels ("Mm-hmm.", "Uh-huh.", "Yeah."...) and short real interruptions ("Stop.", "Hold on.",
"Sorry, what was that?"...) are spoken by every offline voice with room noise (see `questions`;
the Kokoro packs are Japanese voices reading English, so their "mm-hmm" is often a word-like
sound, much as a real "mm-hmm" can be) and transcribed by the production `WhisperTranscriber`.
Reported: how many backchannels would be forgiven (the transcript is only fillers or noise, so
the answer resumes) and how many real interruptions would stop the answer, with and without
marking short low-confidence transcripts as unclear (`asr.unclear_logprob`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.brains import whisper_asr
from agent.config import Config
from agent.pipeline.transcripts import is_only_filler
from agent.runtime.model_files import ensure_files, resolve_cache_dir

from .questions import SPEAKERS, load_speakers, spoken
from .report import write_json

BACKCHANNELS = ("Mm-hmm.", "Uh-huh.", "Mhm.", "Hmm.", "Yeah.", "Right.", "Okay.", "Aha.", "Uh huh.")
INTERRUPTIONS = ("Stop.", "Wait.", "No, stop.", "Hold on.", "What?", "Go back.", "Stop talking.",
                 "Actually, never mind.", "Sorry, what was that?", "Tell me about the moon instead.")


@dataclass
class BackchannelResult:
    unclear_logprob: float  # 0: marking off
    backchannels: int = 0
    forgiven: int = 0  # backchannels taken for fillers or noise (the answer resumes)
    interruptions: int = 0
    stopped: int = 0  # real interruptions taken for words (the answer stops)
    missed: list[str] = field(default_factory=list)  # "said -> heard (speaker)" for every wrong call


async def measure_backchannels(config: Config, rounds: int = len(SPEAKERS)) -> list[BackchannelResult]:
    voices = load_speakers(config)
    clips = []
    try:
        for shift in range(rounds):  # each text by a different voice in each round
            for texts in (BACKCHANNELS, INTERRUPTIONS):
                rotated = texts[shift % len(texts):] + texts[:shift % len(texts)]
                clips += [(text in BACKCHANNELS, clip)
                          for text, clip in zip(rotated, await spoken(voices, rotated, rate=16000))]
    finally:
        for voice in voices.values():
            voice.close()
    paths = ensure_files(whisper_asr.WHISPER_FILES, resolve_cache_dir(config.models.cache_dir), progress=False)
    results = []
    for threshold in (0.0, config.asr.unclear_logprob):
        asr = config.replace(**{"asr.unclear_logprob": threshold}).asr
        transcriber = whisper_asr.WhisperTranscriber(whisper_asr.whisper_dir(paths), asr)
        result = BackchannelResult(threshold)
        for is_backchannel, clip in clips:
            heard = transcriber.transcribe_blocking(clip.speech)
            taken_for_filler = is_only_filler(heard, config.turns.fillers)
            if is_backchannel:
                result.backchannels += 1
                result.forgiven += taken_for_filler
            else:
                result.interruptions += 1
                result.stopped += not taken_for_filler
            if taken_for_filler != is_backchannel:
                result.missed.append(f"{clip.label} -> {heard} ({clip.speaker})")
        transcriber.thread.shutdown()
        results.append(result)
    return results


def backchannels_markdown(results: list[BackchannelResult]) -> str:
    lines = ["| short low-confidence transcripts | backchannels forgiven | real interruptions that stop the answer |",
             "|---|---:|---:|"]
    for r in results:
        label = "kept as words" if r.unclear_logprob >= 0 else f"unclear below {r.unclear_logprob:g} (default)"
        lines.append(f"| {label} | {r.forgiven} of {r.backchannels} | {r.stopped} of {r.interruptions} |")
    if results:
        lines += ["", "Wrong calls with the default: " + ("; ".join(results[-1].missed) or "none")]
    return "\n".join(lines)


async def run_backchannels(config: Config, out_dir: str | None = None) -> list[BackchannelResult]:
    results = await measure_backchannels(config)
    print(backchannels_markdown(results))
    write_json("backchannels.json", results, out_dir)
    return results
