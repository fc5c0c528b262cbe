"""``tilepass-server``: an OpenAI-compatible HTTP server over the OCR pipeline (FastAPI + uvicorn, the ``server``
extra). One job per module: cli.py (options, start, SIGTERM), app.py (routes), chat.py (a chat request's JSON
into images, prompt and settings), engine.py (the generation backend: queue, slots, shared vision passes),
metrics.py (Prometheus text), errors.py (OpenAI-style error bodies)."""
