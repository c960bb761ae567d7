"""proj/celery.py of Celery's Django guide, renamed: the project's celeriac app."""

import os

from celeriac import Celeriac

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djproj.settings")

app = Celeriac("djproj")
# Only the CELERY_-prefixed Django settings are read (SECRET_KEY is empty on purpose: reading it raises).
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()  # notes.tasks, from INSTALLED_APPS
