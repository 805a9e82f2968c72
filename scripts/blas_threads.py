"""Why the agent limits numpy's BLAS to one thread: whisper's features and the end-of-turn
model's are numpy, and two model steps run side by side on 2 cores (one core each, see
agent/runtime/scheduler.py); a 2-thread BLAS pool in each oversubscribes the cores.

    .venv/bin/python scripts/blas_threads.py          # numpy's default BLAS threads
    .venv/bin/python scripts/blas_threads.py --one    # limited to one, as load_models() does
"""

import sys
import threading
import time

import numpy as np

from agent.brains import whisper_asr
from agent.config import load_config
from agent.pipeline.end_of_turn import MODEL, SmartTurn
from agent.runtime.model_files import ensure_files, resolve_cache_dir

if "--one" in sys.argv:
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
config = load_config()
paths = ensure_files(whisper_asr.WHISPER_FILES + (MODEL,), resolve_cache_dir(config.models.cache_dir), progress=False)
asr = whisper_asr.WhisperTranscriber(whisper_asr.whisper_dir(paths), config.asr)
verdicts = SmartTurn(paths[MODEL.relpath])
audio = np.random.default_rng(0).normal(0, 3000, 32000).astype(np.int16)  # 2 s
asr.transcribe_blocking(audio)
verdicts.verdict_blocking(audio)


def median_ms(work, n=8) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return sorted(times)[n // 2] * 1000


alone = median_ms(lambda: asr.transcribe_blocking(audio))
stop = threading.Event()
beside = threading.Thread(target=lambda: [verdicts.verdict_blocking(audio) for _ in iter(stop.is_set, True)])
beside.start()
shared = median_ms(lambda: asr.transcribe_blocking(audio))
stop.set()
beside.join()
print(f"BLAS threads {'1' if '--one' in sys.argv else 'default'}: a 2 s transcription {alone:.0f} ms alone, "
      f"{shared:.0f} ms beside end-of-turn verdicts")
