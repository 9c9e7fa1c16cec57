"""Second-tier diagnosis: a reasoning vision-language model (or, without weights, rules).

The screen role turns an anomalous verdict into an `EscalationRequest`
(`scorers.vlm.request.make_request`); the diagnose role hands it to a `Diagnoser`
(`scorers.vlm.diagnoser`), which runs the configured tasks through one backend
(`transformers`, `openai` or `rules`) and returns a `Diagnosis`. Both messages have
`to_json` / `from_json` (scorers/vlm/types.py). Nothing here knows Kafka or the judge.
"""
