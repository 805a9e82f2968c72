"""The real web client in Debian's Chromium (driven by Playwright), with a fake microphone
playing a spoken question, against the real server on loopback."""

import os
import shutil
import tempfile
import wave

import numpy as np
import pytest

from .conftest import ARTIFACTS

pytestmark = [pytest.mark.models, pytest.mark.loopback]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def write_mic_wav(path, speech_48k, lead_s=2.5, tail_s=1.0):
    audio = np.concatenate([np.zeros(int(48000 * lead_s), np.int16), speech_48k, np.zeros(int(48000 * tail_s), np.int16)])
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(48000)
        wav.writeframes(audio.tobytes())


INBOUND_AUDIO_STATS = """async () => {
  const stats = await window.agentPc.getStats();
  for (const s of stats.values()) {
    if (s.type === 'inbound-rtp' && s.kind === 'audio')
      return {packets: s.packetsReceived, energy: s.totalAudioEnergy || 0, samples: s.totalSamplesReceived || 0};
  }
  return null;
}"""


async def test_browser_conversation(agent_url, spoken, tmp_path):
    if not shutil.which("chromium"):
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is not installed; ./dev.sh test installs it")
        pytest.skip("Debian's chromium is not installed (./dev.sh test installs it)")
    from playwright.async_api import async_playwright

    wav = tmp_path / "question.wav"
    write_mic_wav(wav, await spoken("What is the capital of France?"))
    ARTIFACTS.mkdir(exist_ok=True)
    args = [
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}%noloop",
        "--autoplay-policy=no-user-gesture-required", "--allow-loopback-in-peer-connection",
    ]
    async with async_playwright() as pw:
        with tempfile.TemporaryDirectory() as profile:
            context = await pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=args)
            page = context.pages[0] if context.pages else await context.new_page()
            try:
                await page.goto(agent_url)
                await page.click("#connect")
                await page.wait_for_function("document.getElementById('connection').textContent === 'connected'",
                                             timeout=20000)
                user_line = page.locator(".transcript li.user").first
                await user_line.wait_for(timeout=60000)
                assert "france" in (await user_line.text_content()).lower()
                agent_line = page.locator(".transcript li.agent").first
                await agent_line.wait_for(timeout=60000)
                await page.locator("#latency tbody tr").first.wait_for(timeout=60000)
                reply = (await agent_line.text_content()).lower()
                assert reply.strip()
                before = await page.evaluate(INBOUND_AUDIO_STATS)
                await page.wait_for_timeout(1000)
                after = await page.evaluate(INBOUND_AUDIO_STATS)
                assert after["packets"] > before["packets"] > 0  # audio keeps flowing
                assert after["energy"] > 0  # and what arrived was not silence
                await page.screenshot(path=str(ARTIFACTS / "browser.png"), full_page=True)
                assert "paris" in reply, reply
            finally:
                await page.screenshot(path=str(ARTIFACTS / "browser-final.png"), full_page=True)
                await context.close()
