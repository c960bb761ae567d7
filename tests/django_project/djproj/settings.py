"""Settings of the test project. The database file comes from DJPROJ_DB (a test's tmp_path)."""

import os

# Empty on purpose: Django raises ImproperlyConfigured when it is read, so a worker that
# reads every setting (instead of only the CELERY_ ones) would not start.
SECRET_KEY = ""
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "notes"]
DATABASES = {
    "default": {
        # SQLite, with a connection check like a network database's (see db_backend/base.py).
        "ENGINE": "djproj.db_backend",
        "NAME": os.environ["DJPROJ_DB"],
        "CONN_MAX_AGE": None,  # persistent: the worker must keep good connections between tasks
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {"timeout": 30},
    }
}
CACHES = {"default": {"BACKEND": "djproj.cache.CountingCache"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CELERY_TASK_DEFAULT_QUEUE = os.environ.get("DJPROJ_QUEUE", "celery")
CELERY_RESULT_EXPIRES = 3600
CELERY_WORKER_DIRECT = True  # a Celery-only setting: the worker warns about it at start
