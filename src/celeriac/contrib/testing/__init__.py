"""Celery's `celery.contrib.testing` paths: `worker.start_worker` and `tasks.ping`."""
