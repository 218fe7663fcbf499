"""The Hydra stages: config -> library calls -> artefacts (metrics, figures, W&B). `job.run_job` runs each one;
no stage imports another except `replicate`, which orchestrates them (checked by tests/test_layout.py)."""
