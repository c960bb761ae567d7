"""The worker: a supervisor process, pool slots that each run a consumer loop."""
