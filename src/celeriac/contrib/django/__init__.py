"""Django support: finding out that this is a Django project, and setting Django up.

Used by the app (autodiscovery, the worker's connection handling) and by
`Task.delay_on_commit()`. Nothing here imports Django unless the process is a Django
project, so apps that do not use Django never pay for the import.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from ...exceptions import ImproperlyConfigured


def is_django_project() -> bool:
    """True when DJANGO_SETTINGS_MODULE names the settings, or Django is already configured
    in this process (`settings.configure(...)`), as Celery's Django fixup decides."""
    if os.environ.get("DJANGO_SETTINGS_MODULE"):
        try:
            import django  # noqa: F401
        except ImportError:
            return False
        return True
    if "django.conf" not in sys.modules:  # never configured here, so not a Django project
        return False
    from django.conf import settings
    return bool(settings.configured)


def setup_django() -> None:
    """`django.setup()` once, so task modules may import models; a no-op when Django's apps are
    ready or being loaded right now (an AppConfig.ready() that imports the app)."""
    import django
    from django.apps import apps
    if apps.ready or apps.loading:
        return
    try:
        django.setup()
    except Exception as exc:  # a settings module that cannot be imported, a broken app, ...
        where = os.environ.get("DJANGO_SETTINGS_MODULE") or "settings.configure()"
        raise ImproperlyConfigured(f"setting up Django (settings: {where}) before importing the task "
                                   f"modules failed: {type(exc).__name__}: {exc}") from exc


def installed_apps() -> list[str]:
    """Every installed Django app's package, for `app.autodiscover_tasks()` without arguments."""
    if not is_django_project():
        return []
    setup_django()
    from django.apps import apps
    if apps.ready:
        return [config.name for config in apps.get_app_configs()]
    from django.conf import settings
    return [str(name) for name in settings.INSTALLED_APPS]


def on_commit(callback: Any, using: str | None = None) -> None:
    """Run `callback` once the current transaction commits (now, if none is open); never on rollback."""
    try:
        from django.db import transaction
    except ImportError:
        raise ImproperlyConfigured("delay_on_commit() and apply_async_on_commit() publish when a Django "
                                   "transaction commits, and Django is not installed (pip install django)") from None
    transaction.on_commit(callback, using=using)
