"""A tiny random Voxtral, built offline from configs, saved with save_pretrained and loaded back by
the unchanged production code (`VoxtralBrain.load`).

The tokenizer is a real Tekken tokenizer cut down from the vocabulary that mistral-common ships
(its first 1000 byte-level ranks), with the special tokens at Voxtral's ids and Voxtral's audio
settings; the model has Voxtral's real input geometry (128 mel bins, 1500 source positions, so
375 audio tokens per 30 s chunk) and tiny layers.
"""

from __future__ import annotations

import json
from pathlib import Path

INNER_VOCAB = 1000
NUM_SPECIAL = 1000
VOXTRAL_SPECIALS = {
    0: "<unk>", 1: "<s>", 2: "</s>", 3: "[INST]", 4: "[/INST]", 5: "[AVAILABLE_TOOLS]", 6: "[/AVAILABLE_TOOLS]",
    7: "[TOOL_RESULTS]", 8: "[/TOOL_RESULTS]", 9: "[TOOL_CALLS]", 10: "[IMG]", 11: "<pad>", 12: "[IMG_BREAK]",
    13: "[IMG_END]", 14: "[PREFIX]", 15: "[MIDDLE]", 16: "[SUFFIX]", 17: "[SYSTEM_PROMPT]", 18: "[/SYSTEM_PROMPT]",
    19: "[TOOL_CONTENT]", 20: "[ARGS]", 21: "[CALL_ID]", 24: "[AUDIO]", 25: "[BEGIN_AUDIO]", 34: "[TRANSCRIBE]",
}


def write_tiny_tekken(path: Path) -> Path:
    import mistral_common

    source = Path(mistral_common.__file__).parent / "data" / "tekken_240911.json"
    full = json.loads(source.read_text())
    specials = [{"rank": r, "token_str": VOXTRAL_SPECIALS.get(r, f"<SPECIAL_{r}>"), "is_control": True}
                for r in range(max(VOXTRAL_SPECIALS) + 1)]
    tiny = {
        "config": {**full["config"], "num_vocab_tokens": INNER_VOCAB, "default_vocab_size": INNER_VOCAB + NUM_SPECIAL,
                   "default_num_special_tokens": NUM_SPECIAL, "version": "v7"},
        "vocab": full["vocab"][:INNER_VOCAB],
        "special_tokens": specials,
        "audio": {"sampling_rate": 16000, "frame_rate": 12.5, "chunk_length_s": 30.0,
                  "audio_encoding_config": {"num_mel_bins": 128, "hop_length": 160, "window_size": 400}},
    }
    path.write_text(json.dumps(tiny))
    return path


def build_tiny_voxtral(directory: Path, seed: int = 0) -> Path:
    """Save a tiny random Voxtral (model + processor) into `directory`; return it."""
    import torch
    from transformers import (MistralCommonBackend, VoxtralConfig, VoxtralForConditionalGeneration,
                              VoxtralProcessor, WhisperFeatureExtractor)

    directory.mkdir(parents=True, exist_ok=True)
    write_tiny_tekken(directory / "tekken.json")
    tokenizer = MistralCommonBackend.from_pretrained(str(directory))
    features = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=30,
                                       n_fft=400, padding_value=0.0)
    VoxtralProcessor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(str(directory))
    config = VoxtralConfig(
        audio_config={"hidden_size": 32, "intermediate_size": 128, "num_hidden_layers": 1,
                      "num_attention_heads": 2, "num_mel_bins": 128, "max_source_positions": 1500},
        text_config={"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
                     "vocab_size": INNER_VOCAB + NUM_SPECIAL, "max_position_embeddings": 4096,
                     "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 11},
        audio_token_id=24,
    )
    torch.manual_seed(seed)
    model = VoxtralForConditionalGeneration(config)
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 11
    model.save_pretrained(str(directory))
    return directory
