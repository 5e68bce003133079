"""jetq for Django: enqueue a task **in** the view's database transaction (the outbox), or
**after** it commits.

Optional: needs Django (``pip install 'jetq-client[django]'``); ``import jetq`` does not.

- :func:`enqueue` writes the task into the outbox table in the current transaction: it commits
  or rolls back with the view's writes, and ``jetq-relay`` publishes it after the commit — at
  least once, deduplicated by ``Nats-Msg-Id``. Nothing is lost if the process dies after the
  commit or NATS is down. Needs PostgreSQL, this app in ``INSTALLED_APPS`` and its migration::

      INSTALLED_APPS = [..., "jetq.django"]   # python manage.py migrate jetq

- :func:`enqueue_on_commit` publishes with a normal enqueue from ``transaction.on_commit``:
  nothing for a rolled-back transaction, but the task is **lost** if the process dies (or NATS
  does not answer) between the commit and the publish. No table, no relay, any database.
"""

from .enqueue import close_default_producer, default_producer, enqueue, enqueue_on_commit

__all__ = ["enqueue", "enqueue_on_commit", "default_producer", "close_default_producer"]
