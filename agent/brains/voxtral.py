"""The GPU brain: Mistral's Voxtral speech-LLM (audio in, answer out) through transformers.

The user's utterance goes in as an audio turn of the processor's chat template (no separate
ASR); the persona goes in the user text (the v7 tokenizer refuses a system message with audio).
The answer streams token by token: `generate` runs in a worker thread and a
`TextIteratorStreamer` hands the text to the model thread's iterator. A stopping criterion that
checks the turn's stop flag cancels generation within a token; an exception inside `generate`
ends the streamer and is re-raised to the caller instead of hanging it.

Between turns, each user turn's audio embeddings (encoder + projector output) are kept, so only
the newest utterance is encoded; the conversation is bounded by turns and by tokens.
The user's transcript for the events channel comes from Voxtral's transcription mode after the
answer has finished (off the critical path), or not at all (config).

Tools: not supported yet (`supports_tools = False`). With tools configured, `brain.kind =
voxtral` is refused at start-up, before any weights load, with a message saying how to turn
them off, and `brain.kind = auto` passes Voxtral over for the cascade (the log says why).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Callable, Iterator

import numpy as np

from agent.config import BrainConfig, Config, VoxtralConfig as VoxtralSettings
from agent.runtime.choice import cuda_available
from agent.runtime.model_thread import ModelThread

from .base import Brain, BrainKind, Conversation, ToolPrompt, ToolsUnsupported, TranscriptCallback, check_tools

log = logging.getLogger(__name__)

AUDIO_TOKENS_PER_CHUNK = 375  # 30 s of audio -> 1500 encoder frames -> 375 tokens after the 4x projector
CHUNK_SAMPLES = 30 * 16000
CPU_SECONDS_PER_TURN = 60  # Voxtral-Mini-3B on a 2-core CPU, fp32: about a minute to the first token


class VoxtralUnavailable(RuntimeError):
    """Voxtral cannot be loaded here; the message says why and how to fix it."""


def weights_reachable(model: str) -> bool:
    """A local directory with a config, or a hub id already in the local cache (no network)."""
    if Path(model).expanduser().is_dir():
        return (Path(model).expanduser() / "config.json").is_file()
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    found = try_to_load_from_cache(model, "config.json")
    return isinstance(found, str)


def tools_configured(config: Config) -> list[str]:
    return [*config.tools.builtin, *config.tools.custom]


def unavailable(config: Config) -> str | None:
    """For brain.kind = auto: why Voxtral cannot run here (None when it can)."""
    if tools_configured(config):
        return f"tools are on ({', '.join(tools_configured(config))}) and Voxtral cannot call them yet"
    if not cuda_available():
        return "no CUDA GPU: Voxtral needs one"
    if not weights_reachable(config.voxtral.model):
        return f"CUDA is there but the Voxtral weights ({config.voxtral.model}) are not on this machine"
    return None


def audio_to_wav_base64(audio: np.ndarray, rate: int = 16000) -> str:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format="WAV", subtype="PCM_16")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def audio_chunks(num_samples: int) -> int:
    """30 s chunks the processor makes of an utterance (it pads to a multiple of 30 s)."""
    return max(1, -(-num_samples // CHUNK_SAMPLES))


class StopOnFlag:
    """A generation StoppingCriteria that stops every sequence once `flag` is set."""

    def __init__(self, flag: threading.Event) -> None:
        self.flag = flag

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.flag.is_set(), dtype=torch.bool, device=input_ids.device)


@dataclass
class UserTurn:
    audio: np.ndarray  # float32, 16 kHz
    wav_base64: str
    chunks: int
    embeds: object | None = None  # torch.Tensor [chunks * 375, hidden], computed once


@dataclass
class Exchange:
    user: UserTurn
    agent: str | None = None  # what the agent actually said (None while unanswered)


class VoxtralBrain(Brain):
    name = "voxtral"
    supports_tools = False

    def __init__(self, model, processor, settings: VoxtralSettings, brain: BrainConfig, device: str, dtype) -> None:
        self.model = model
        self.processor = processor
        self.settings = settings
        self.config = brain
        self.device = device
        self.dtype = dtype
        self.thread = ModelThread("voxtral", cores=0 if device.startswith("cuda") else 1)
        self.audio_token_id = processor.audio_token_id

    @classmethod
    def load(cls, settings: VoxtralSettings, brain: BrainConfig) -> "VoxtralBrain":
        import torch
        from transformers import AutoProcessor, VoxtralForConditionalGeneration

        started = time.perf_counter()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        if device == "cpu":
            log.warning("Voxtral is running without a GPU: it works, but Voxtral-Mini-3B takes about %d s to the "
                        "first token per turn on a 2-core CPU. Use brain.kind = cascade for a CPU conversation.",
                        CPU_SECONDS_PER_TURN)
        try:
            processor = AutoProcessor.from_pretrained(settings.model)
            model = VoxtralForConditionalGeneration.from_pretrained(settings.model, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise VoxtralUnavailable(
                f"cannot load Voxtral from {settings.model!r}: {exc}. Get the weights on a machine with "
                f"network access (`huggingface-cli download {settings.model} --local-dir DIR`) and set "
                f"voxtral.model = \"DIR\", or use brain.kind = cascade."
            ) from exc
        model.to(device).eval()
        if settings.compile and device == "cuda":
            model.forward = torch.compile(model.forward, dynamic=True)
        brain_obj = cls(model, processor, settings, brain, device, dtype)
        brain_obj.load_s = time.perf_counter() - started
        log.info("Voxtral %s loaded on %s (%s) in %.1fs", settings.model, device, dtype, time.perf_counter() - started)
        return brain_obj

    def new_conversation(self, tools: ToolPrompt | None = None) -> "VoxtralConversation":
        check_tools(self, tools)
        return VoxtralConversation(self)

    async def warm_up(self, tools=None) -> None:
        started = time.perf_counter()
        conversation = self.new_conversation()
        async for _ in conversation.reply(np.zeros(16000, dtype=np.int16), lambda _t: None, max_new_tokens=2):
            pass
        log.info("Voxtral warmed up in %.2fs", time.perf_counter() - started)

    def close(self) -> None:
        self.thread.shutdown()

    # -- inputs ----------------------------------------------------------------------------
    def messages(self, exchanges: list[Exchange]) -> list[dict]:
        """The chat: earlier turns as audio + what the agent said; the newest turn carries the
        persona as its text (prefix-stable from turn to turn)."""
        messages: list[dict] = []
        for index, exchange in enumerate(exchanges):
            content: list[dict] = [{"type": "audio", "base64": exchange.user.wav_base64}]
            if index == len(exchanges) - 1 and self.config.system_prompt:
                content.append({"type": "text", "text": self.config.system_prompt})
            messages.append({"role": "user", "content": content})
            if exchange.agent is not None and index < len(exchanges) - 1:
                messages.append({"role": "assistant", "content": exchange.agent or "…"})
        return messages

    def build_inputs(self, exchanges: list[Exchange]):
        """Tokenise the chat; returns the processor's BatchFeature (input_ids, attention_mask,
        input_features with one row per 30 s chunk per audio turn)."""
        return self.processor.apply_chat_template(self.messages(exchanges), tokenize=True, return_dict=True,
                                                  return_tensors="pt")

    def embed_inputs(self, exchanges: list[Exchange], inputs) -> tuple[object, object]:
        """inputs_embeds with the audio placeholders filled, reusing each turn's cached audio
        embeddings and encoding only the turns that have none yet."""
        import torch

        features = inputs["input_features"]
        row = 0
        pieces = []
        with torch.inference_mode():
            for exchange in exchanges:
                turn = exchange.user
                if turn.embeds is None:
                    rows = features[row:row + turn.chunks].to(self.device, self.dtype)
                    turn.embeds = self.model.get_audio_features(rows).pooler_output
                pieces.append(turn.embeds)
                row += turn.chunks
            input_ids = inputs["input_ids"].to(self.device)
            embeds = self.model.get_input_embeddings()(input_ids)
            audio = torch.cat(pieces).to(embeds.dtype)
            mask = (input_ids == self.audio_token_id).unsqueeze(-1).expand_as(embeds)
            if int(mask[..., 0].sum()) != audio.shape[0]:
                raise RuntimeError(f"audio placeholders ({int(mask[..., 0].sum())}) do not match audio embeddings "
                                   f"({audio.shape[0]})")
            embeds = embeds.masked_scatter(mask, audio)
        return embeds, inputs["attention_mask"].to(self.device)

    # -- generation ------------------------------------------------------------------------
    def stream_blocking(self, exchanges: list[Exchange], stop: threading.Event,
                        max_new_tokens: int | None = None) -> Iterator[str]:
        """Generate in a worker thread; yield text pieces from the streamer here."""
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        inputs = self.build_inputs(exchanges)
        embeds, attention = self.embed_inputs(exchanges, inputs)
        streamer = TextIteratorStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True,
                                        timeout=self.settings.token_timeout_s)
        failure: list[BaseException] = []
        sampling = {"do_sample": True, "temperature": self.settings.temperature} if self.settings.temperature > 0 \
            else {"do_sample": False}

        def generate() -> None:
            import torch

            try:
                with torch.inference_mode():
                    self.model.generate(
                        inputs_embeds=embeds, attention_mask=attention, streamer=streamer,
                        max_new_tokens=max_new_tokens or self.settings.max_new_tokens,
                        stopping_criteria=StoppingCriteriaList([StopOnFlag(stop)]),
                        pad_token_id=self.processor.tokenizer.pad_token_id, **sampling,
                    )
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer below
                failure.append(exc)
                streamer.end()  # wake the consumer instead of leaving it waiting for tokens

        worker = threading.Thread(target=generate, name="voxtral-generate", daemon=True)
        worker.start()
        try:
            for text in streamer:
                if failure:
                    break
                if text:
                    yield text
        except Exception as exc:  # queue.Empty: no token within token_timeout_s
            if not failure:
                raise TimeoutError(f"Voxtral produced no token for {self.settings.token_timeout_s:.0f} s") from exc
        finally:
            stop.set()
            worker.join(timeout=self.settings.token_timeout_s)
        if failure:
            raise failure[0]

    def transcribe_blocking(self, audio: np.ndarray) -> str:
        """Voxtral's transcription mode (audio -> text), used for the user's transcript."""
        import torch

        inputs = self.processor.apply_transcription_request(
            language=self.settings.language, audio=[audio], sampling_rate=16000, format=["wav"],
            model_id=self.settings.model, return_tensors="pt",
        )
        inputs = inputs.to(self.device)
        if "input_features" in inputs:
            inputs["input_features"] = inputs["input_features"].to(self.dtype)
        with torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=self.settings.max_new_tokens, do_sample=False,
                                         pad_token_id=self.processor.tokenizer.pad_token_id)
        prompt = inputs["input_ids"].shape[1]
        return self.processor.tokenizer.decode(output[0, prompt:].tolist(), skip_special_tokens=True).strip()


@dataclass
class VoxtralConversation(Conversation):
    brain: VoxtralBrain
    exchanges: list[Exchange] = field(default_factory=list)
    _pending_transcripts: set = field(default_factory=set)

    def _bound(self) -> None:
        """Keep the newest history_turns exchanges, then drop the oldest until the prompt fits
        voxtral.max_context_tokens (audio costs 375 tokens per 30 s chunk)."""
        keep = self.brain.config.history_turns + 1  # earlier exchanges + the current one
        if len(self.exchanges) > keep:
            del self.exchanges[: len(self.exchanges) - keep]
        while len(self.exchanges) > 1 and self.prompt_tokens() > self.brain.settings.max_context_tokens:
            del self.exchanges[0]

    def prompt_tokens(self) -> int:
        return int(self.brain.build_inputs(self.exchanges)["input_ids"].shape[1])

    def reply(self, audio: np.ndarray, on_transcript: TranscriptCallback,
              max_new_tokens: int | None = None) -> AsyncIterator[str]:
        samples = audio.astype(np.float32) / 32768.0 if audio.dtype == np.int16 else audio.astype(np.float32)
        turn = UserTurn(samples, audio_to_wav_base64(samples), audio_chunks(len(samples)))
        self.exchanges.append(Exchange(turn))

        def pieces(stop: threading.Event) -> Iterator[str]:
            self._bound()  # tokenises: model-thread work
            yield from self.brain.stream_blocking(list(self.exchanges), stop, max_new_tokens)

        return self._stream_then_transcribe(pieces, samples, on_transcript)

    async def _stream_then_transcribe(self, pieces: Callable[[threading.Event], Iterator[str]],
                                      samples: np.ndarray, on_transcript: TranscriptCallback) -> AsyncIterator[str]:
        try:
            async with contextlib.aclosing(self.brain.thread.stream(pieces, max_ahead=1)) as stream:
                async for piece in stream:
                    yield piece
        finally:
            if self.brain.settings.transcribe:
                task = asyncio.ensure_future(self.brain.thread.run(self.brain.transcribe_blocking, samples))
                self._pending_transcripts.add(task)

                def done(future: asyncio.Future) -> None:
                    self._pending_transcripts.discard(future)
                    if future.cancelled():
                        return
                    if future.exception() is not None:
                        log.warning("Voxtral transcription failed: %s", future.exception())
                        return
                    on_transcript(future.result())

                task.add_done_callback(done)

    def record_agent_reply(self, spoken_text: str) -> None:
        if self.exchanges and self.exchanges[-1].agent is None:
            self.exchanges[-1].agent = spoken_text.strip()

    def rollback(self) -> None:
        if self.exchanges and self.exchanges[-1].agent is None:
            self.exchanges.pop()


def load(config: Config, _paths) -> VoxtralBrain:
    try:
        check_tools(VoxtralBrain, tools_configured(config))  # at start-up, before the weights load
    except ToolsUnsupported as exc:
        raise VoxtralUnavailable(str(exc)) from None  # Voxtral cannot run as configured
    return VoxtralBrain.load(config.voxtral, config.brain)


KIND = BrainKind(
    name="voxtral",
    model_files=lambda _config: (),  # from_pretrained: a local directory or the Hugging Face cache
    load=load,
    unavailable=unavailable,
    why="CUDA and the Voxtral weights are available",
)
