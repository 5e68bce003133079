"""The Django app of jetq's transactional outbox (``"jetq.django"`` in ``INSTALLED_APPS``)."""

from __future__ import annotations

from django.apps import AppConfig


class JetqConfig(AppConfig):  # type: ignore[misc]  # Django ships no type information
    """App label ``jetq``: ``python manage.py migrate jetq`` creates the outbox table."""

    name = "jetq.django"
    label = "jetq"
    verbose_name = "jetq"
    default_auto_field = "django.db.models.BigAutoField"
