"""The headless loopback benchmark and its report (`run.py bench`).

It imports the agent and signaling (it runs the real server and headless WebRTC callers) and is
never imported by them. Modules: `questions` (what is asked), `results` (one measured turn, a
run), `runner` (calls against an in-process or running agent), `report` (tables, charts, files),
`standard` (the set behind BENCHMARKS.md), `soak` (one long call), `voxtral_arch` (the GPU
architecture timing).
"""
