// Browser client: microphone -> WebRTC -> agent; agent audio + events back.
"use strict";

const $ = (id) => document.getElementById(id);
const ui = {
  connect: $("connect"), hangup: $("hangup"), connection: $("connection"), state: $("state"),
  message: $("message"), transcript: $("transcript"), latency: $("latency").querySelector("tbody"),
  audio: $("agent-audio"), micLevel: $("mic-level"), token: $("token"), hearing: $("hearing"), models: $("models"),
};

let pc = null;
let micStream = null;
let meterContext = null;
let agentLine = null;       // <li> of the agent's current answer
const STAGES = ["turn_end", "transcript", "first_token", "first_phrase", "first_pcm", "first_frame"];

function showMessage(text) {
  ui.message.textContent = text;
  ui.message.hidden = !text;
}

function setConnection(text) { ui.connection.textContent = text; }

function setState(state) {
  ui.state.textContent = state;
  ui.state.dataset.state = state;
}

function addLine(role, text) {
  const li = document.createElement("li");
  li.className = role;
  li.textContent = text;
  ui.transcript.appendChild(li);
  li.scrollIntoView({ block: "nearest" });
  return li;
}

function addTimeline(event) {
  const row = document.createElement("tr");
  const cells = [event.turn, event.outcome, ...STAGES.map((s) => (s in event.ms ? Math.round(event.ms[s]) : "–"))];
  for (const value of cells) {
    const td = document.createElement("td");
    td.textContent = value;
    row.appendChild(td);
  }
  ui.latency.prepend(row);
}

// One case per event type of agent/events.py (tests/test_architecture.py checks none is missing).
function onEvent(event) {
  switch (event.type) {
    case "hello":
      ui.models.textContent = `brain: ${event.brain}, voice: ${event.voice}`;
      break;
    case "speech_start":
      ui.hearing.textContent = "speaking";
      break;
    case "preemption_discarded":  // an answer started at your pause was dropped: you went on
      ui.hearing.textContent = "speaking";
      break;
    case "end_of_turn":
      ui.hearing.textContent = event.complete ? "done, it seems" : "waiting for the rest…";
      break;
    case "speech_discarded":
      ui.hearing.textContent = `ignored a ${event.voiced_ms} ms sound`;
      break;
    case "state":
      setState(event.state);
      if (event.state === "listening") agentLine = null;
      break;
    case "transcript":
      ui.hearing.textContent = "–";
      if (event.text) addLine("user", event.text);
      agentLine = null;
      break;
    case "agent_text":
      if (!agentLine) agentLine = addLine("agent", event.text);
      else agentLine.textContent += " " + event.text;
      break;
    case "tool_call":  // the model called a tool; what it said before is being spoken
      addLine("tool", `${event.name}(${typeof event.arguments === "string" ? event.arguments : JSON.stringify(event.arguments)})`);
      agentLine = null;
      break;
    case "tool_result":
      addLine(event.status === "ok" ? "tool" : "tool error", `${event.name} ${event.status === "ok" ? "→" : event.status + ":"} ${event.result} (${Math.round(event.ms)} ms)`);
      agentLine = null;
      break;
    case "interruption":  // you spoke over the agent: it paused, then stopped or went on
      ui.hearing.textContent = event.outcome === "confirmed" ? "interrupting" : `ignored (${event.reason})`;
      break;
    case "barge_in":
      if (agentLine) agentLine.classList.add("interrupted");
      agentLine = null;
      break;
    case "timeline":
      addTimeline(event);
      break;
    case "error":
      addLine("error", `The agent hit an error (${event.kind}): ${event.message}`);
      break;
  }
}

function micErrorMessage(err) {
  if (err.name === "NotAllowedError" || err.name === "SecurityError")
    return "Microphone access was denied. Allow the microphone for this page (the icon in the address bar) and connect again.";
  if (err.name === "NotFoundError" || err.name === "OverconstrainedError")
    return "No microphone was found. Plug one in and connect again.";
  if (err.name === "NotReadableError")
    return "The microphone is in use by another program.";
  if (!navigator.mediaDevices)
    return "This page needs a secure context (https or localhost) to use the microphone.";
  return `Could not open the microphone: ${err.message || err.name}`;
}

function startMeter(stream) {
  try {
    meterContext = new AudioContext();
    const analyser = meterContext.createAnalyser();
    analyser.fftSize = 512;
    meterContext.createMediaStreamSource(stream).connect(analyser);
    const data = new Float32Array(analyser.fftSize);
    const draw = () => {
      if (!meterContext) return;
      analyser.getFloatTimeDomainData(data);
      let sum = 0;
      for (const x of data) sum += x * x;
      const db = 10 * Math.log10(sum / data.length + 1e-12);
      ui.micLevel.style.width = `${Math.max(0, Math.min(100, (db + 60) * 100 / 60))}%`;
      requestAnimationFrame(draw);
    };
    draw();
  } catch (err) {
    console.warn("level meter unavailable", err);
  }
}

function waitForIceGathering(peer, timeoutMs = 3000) {
  if (peer.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { peer.removeEventListener("icegatheringstatechange", check); resolve(); };
    const check = () => { if (peer.iceGatheringState === "complete") done(); };
    peer.addEventListener("icegatheringstatechange", check);
    setTimeout(done, timeoutMs);
  });
}

async function connect() {
  showMessage("");
  ui.connect.disabled = true;
  setConnection("opening microphone…");
  try {
    micStream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    });
  } catch (err) {
    showMessage(micErrorMessage(err));
    setConnection("idle");
    ui.connect.disabled = false;
    return;
  }
  startMeter(micStream);
  try {
    const clientConfig = await (await fetch("/client-config")).json();
    const headers = { "Content-Type": "application/json" };
    if (clientConfig.authRequired) {
      ui.token.hidden = false;
      if (!ui.token.value) throw new Error("this agent needs an access token: enter it and connect again");
      headers.Authorization = `Bearer ${ui.token.value}`;
    }
    pc = new RTCPeerConnection({ iceServers: clientConfig.iceServers || [] });
    window.agentPc = pc;  // for tests and debugging: getStats() of the call
    pc.addTransceiver(micStream.getAudioTracks()[0], { direction: "sendrecv", streams: [micStream] });
    const events = pc.createDataChannel("events");
    events.onmessage = (msg) => onEvent(JSON.parse(msg.data));
    pc.ontrack = (ev) => { ui.audio.srcObject = ev.streams[0] || new MediaStream([ev.track]); };
    pc.onconnectionstatechange = () => {
      setConnection(pc.connectionState);
      if (pc.connectionState === "failed") {
        showMessage("The connection to the agent failed (no network path for the call). Check that the server is running and reachable, then connect again.");
        hangup(false);
      } else if (pc.connectionState === "disconnected") {
        showMessage("The connection to the agent was interrupted.");
      }
    };
    setConnection("connecting…");
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIceGathering(pc);
    const response = await fetch("/offer", {
      method: "POST",
      headers,
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type }),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(answer.error || `the server answered ${response.status}`);
    await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
    ui.hangup.disabled = false;
  } catch (err) {
    showMessage(`Could not connect to the agent: ${err.message}`);
    hangup(false);
  }
}

function hangup(clearMessage = true) {
  if (clearMessage) showMessage("");
  if (pc) { pc.close(); pc = null; }
  if (micStream) { micStream.getTracks().forEach((t) => t.stop()); micStream = null; }
  if (meterContext) { meterContext.close(); meterContext = null; }
  ui.micLevel.style.width = "0";
  setConnection("idle");
  setState("idle");
  ui.connect.disabled = false;
  ui.hangup.disabled = true;
}

ui.connect.addEventListener("click", connect);
ui.hangup.addEventListener("click", () => hangup(true));
