"""Integrations with other frameworks and tools (Celery's `celery.contrib` paths)."""
