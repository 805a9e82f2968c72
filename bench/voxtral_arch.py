"""Time the real Voxtral-Mini-3B architecture without its weights.

A model with random weights has the same compute as the trained one, so building the real-size
architecture on a GPU (bf16) times audio encoding, time to first token and inter-token latency
exactly as the real model would run, without the 9 GB download. Utterances of 2, 5 and 10 s all
cost one 30 s audio chunk (375 tokens): the processor pads audio to a multiple of 30 s.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass

from .report import write_json

# Voxtral-Mini-3B-2507's architecture: a Whisper-large-v3 encoder and a 3B Llama-style decoder.
MINI_3B = {
    "audio_config": {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
                     "num_attention_heads": 20, "num_mel_bins": 128, "max_source_positions": 1500},
    "text_config": {"model_type": "llama", "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 30,
                    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 131072,
                    "max_position_embeddings": 131072, "rope_theta": 100000000.0, "rms_norm_eps": 1e-5},
}
TINY = {
    "audio_config": {"hidden_size": 32, "intermediate_size": 128, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "num_mel_bins": 128, "max_source_positions": 1500},
    "text_config": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                    "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16, "vocab_size": 2000,
                    "max_position_embeddings": 4096},
}
AUDIO_TOKEN, BOS, INST, END_INST, BEGIN_AUDIO = 24, 1, 3, 4, 25


@dataclass
class ArchTiming:
    seconds: float
    audio_tokens: int
    encode_ms: list[float]
    first_token_ms: list[float]
    inter_token_ms: list[float]

    def summary(self) -> dict:
        def q(values, p):
            ordered = sorted(values)
            return round(ordered[min(len(ordered) - 1, int(round(p * (len(ordered) - 1))))], 2)

        return {
            "utterance_s": self.seconds, "audio_tokens": self.audio_tokens,
            "encode_ms_median": round(statistics.median(self.encode_ms), 2),
            "first_token_ms_median": round(statistics.median(self.first_token_ms), 2),
            "inter_token_ms_median": round(statistics.median(self.inter_token_ms), 2),
            "inter_token_ms_p90": q(self.inter_token_ms, 0.9),
        }


class _TokenClock:
    """A generate() streamer that only records when each new token arrives."""

    def __init__(self, sync) -> None:
        self.times: list[float] = []
        self._sync = sync
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self._sync()
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def build_model(size: str = "mini-3b", device: str | None = None):
    import torch
    from transformers import VoxtralConfig, VoxtralForConditionalGeneration

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    config = VoxtralConfig(**(MINI_3B if size == "mini-3b" else TINY), audio_token_id=AUDIO_TOKEN)
    with torch.device(device):
        model = VoxtralForConditionalGeneration(config).to(dtype).eval()
    return model, device, dtype


def time_architecture(size: str = "mini-3b", utterances=(2.0, 5.0, 10.0), repeats: int = 5,
                      new_tokens: int = 64) -> list[dict]:
    import torch

    model, device, dtype = build_model(size)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    results = []
    for seconds in utterances:
        chunks = max(1, -(-int(seconds * 16000) // (30 * 16000)))
        audio_tokens = 375 * chunks
        ids = torch.tensor([[BOS, INST, BEGIN_AUDIO] + [AUDIO_TOKEN] * audio_tokens + [END_INST]], device=device)
        features = torch.randn(chunks, 128, 3000, device=device, dtype=dtype)
        timing = ArchTiming(seconds, audio_tokens, [], [], [])
        with torch.inference_mode():
            for attempt in range(repeats + 1):  # the first round warms up kernels and is not counted
                sync()
                started = time.perf_counter()
                model.get_audio_features(features)
                sync()
                encoded = time.perf_counter()
                clock = _TokenClock(sync)
                model.generate(input_ids=ids, input_features=features, attention_mask=torch.ones_like(ids),
                               max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                               streamer=clock, pad_token_id=11)
                if attempt == 0:
                    continue
                timing.encode_ms.append((encoded - started) * 1000)
                first = clock.times[0] - encoded
                timing.first_token_ms.append(first * 1000)
                timing.inter_token_ms += [(b - a) * 1000 for a, b in zip(clock.times, clock.times[1:])]
        results.append(timing.summary())
    return results


def print_architecture_timings(out_dir: str | None) -> int:
    """`run.py bench --voxtral-arch`: time the real-size architecture, print a table, write JSON."""
    import torch

    if not torch.cuda.is_available():
        print("note: no CUDA GPU here; the real-size model runs on the CPU in fp32 and takes minutes per turn. "
              "These figures are not the GPU figures.", file=sys.stderr)
    results = time_architecture("mini-3b")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    print(f"Voxtral-Mini-3B architecture, random weights, on {device}:")
    print(f"{'utterance':>10} {'audio tok':>9} {'encode ms':>10} {'1st tok ms':>10} {'inter ms':>9} {'inter p90':>9}")
    for r in results:
        print(f"{r['utterance_s']:>9.0f}s {r['audio_tokens']:>9} {r['encode_ms_median']:>10.1f} "
              f"{r['first_token_ms_median']:>10.1f} {r['inter_token_ms_median']:>9.1f} {r['inter_token_ms_p90']:>9.1f}")
    write_json("voxtral-arch.json", {"device": device, "results": results}, out_dir)
    return 0
