"""Celery's `celery.utils` paths that projects import: `celeriac.utils.log`."""
