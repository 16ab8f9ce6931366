"""The jobs: one plain function per job, typed configs in, typed results out. The CLI (cli/) and
the Prefect flows (flows/) both call these; neither holds any of their logic.

  data.py       corpus_job, ingest_job, augment_job, features_job, inspect_job, mel2audio_job
  train.py      train_job        (the solver: ray_actors/solver.py)
  transform.py  transform_job
  sweep.py      sweep_job        (sweep-t-init)
  nightly.py    nightly_job      (reinstrument-nightly)
  probe.py      probe_job        (warm-probe)
  metrics.py    fad_job, jd_job
  demo.py       demo_job         (make demo)

A job's sub-steps go through a `Step` runner (steps.py): inline by default, a Prefect task each
under a flow (flows/steps.py), so the job is written once and Prefect still sees its steps."""
